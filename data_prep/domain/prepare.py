"""Domain answer lines (cropped answer lines with transcriptions) -> train/val JSONL manifests.

Two sources:

* scanned lines: a folder of line images and a CSV (columns ``file``/``image`` and ``text``) or JSONL
  (``{"image"|"file", "text"}``) of their transcriptions:
  ``python data_prep/domain/prepare.py folder --images <dir> --texts <csv|jsonl> --out <dir>``
* rendered answers: the bundled sample exam's answers, chopped into lines and rendered as synthetic
  handwriting (``htr.synth``) in the training fonts (or ``--fonts heldout`` for a test set):
  ``python data_prep/domain/prepare.py render --out <dir> [--fonts train] [--copies 3]``

Writes ``<out>/train.jsonl`` and ``<out>/val.jsonl`` (``--val-fraction`` of the lines; rendered answers
are split by answer, so no answer has lines on both sides). Unreadable images are reported and skipped.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from htr.data import open_image, write_manifest
from inkbase.errors import ConfigError, InputError


def read_texts(path: str | Path) -> list[dict[str, str]]:
    """``[{"image": <name>, "text": ...}]`` from a CSV or JSONL transcription file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "(file)", "not found")
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            key = "file" if "file" in (reader.fieldnames or []) else "image"
            if key not in (reader.fieldnames or []) or "text" not in (reader.fieldnames or []):
                raise InputError(path, "(header)", "needs columns file (or image) and text")
            return [{"image": row[key], "text": row["text"]} for row in reader]
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(path, f"line {i}", "invalid JSON") from None
        name = row.get("image", row.get("file"))
        if not isinstance(name, str) or not isinstance(row.get("text"), str):
            raise InputError(path, f"line {i}", "needs string fields image (or file) and text")
        rows.append({"image": name, "text": row["text"]})
    return rows


def split_rows(rows: list[dict], groups: list, val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Split by group (all rows of a group on one side), about ``val_fraction`` of the groups to val."""
    unique = list(dict.fromkeys(groups))
    rng = np.random.default_rng(seed)
    n_val = int(round(val_fraction * len(unique))) if len(unique) > 1 else 0
    val_groups = {unique[i] for i in rng.permutation(len(unique))[:n_val]}
    train = [r for r, g in zip(rows, groups, strict=True) if g not in val_groups]
    val = [r for r, g in zip(rows, groups, strict=True) if g in val_groups]
    return train, val


def from_folder(images: str | Path, texts: str | Path, out_dir: str | Path, val_fraction: float, seed: int,
                ) -> dict[str, int]:
    images = Path(images)
    rows = []
    for row in read_texts(texts):
        path = images / row["image"]
        _, reason = open_image(path)
        if reason:
            print(f"warning: skipped {path}: {reason}", file=sys.stderr)
            continue
        rows.append({"image": path, "text": row["text"]})
    if not rows:
        raise InputError(texts, "image", "no readable line image")
    train, val = split_rows(rows, [str(r["image"]) for r in rows], val_fraction, seed)
    return _write(out_dir, train, val)


def rendered(out_dir: str | Path, sample_exam_dir: str | Path, fonts: str, copies: int, max_chars: int,
             val_fraction: float, seed: int) -> dict[str, int]:
    from grading.rubric import load_answers
    from htr.synth.fonts import list_fonts
    from htr.synth.lines import AugmentConfig, render_line
    from htr.synth.text import chop, to_charset

    answers = load_answers(Path(sample_exam_dir) / "answers.jsonl")
    font_list = list_fonts(fonts)
    if not font_list:
        raise ConfigError("--fonts", f"no {fonts} fonts installed")
    rng = np.random.default_rng(seed)
    folder = Path(out_dir) / "images"
    folder.mkdir(parents=True, exist_ok=True)
    rows, groups = [], []
    augment = AugmentConfig()
    for answer in tqdm(answers, desc="rendering answers", unit="answer"):
        for copy in range(copies):
            font = font_list[int(rng.integers(0, len(font_list)))]
            for j, line in enumerate(chop(to_charset(answer.text), max_chars, rng, max(1, max_chars // 2))):
                label = line.upper() if font.uppercase_only else line
                if font.missing(label):
                    continue
                path = folder / f"{answer.answer_id}-{copy}-{j:02d}.png"
                render_line(label, font, rng, augment).save(path)
                rows.append({"image": path, "text": label, "font": font.name, "answer_id": answer.answer_id})
                groups.append(answer.answer_id)
    train, val = split_rows(rows, groups, val_fraction, seed)
    return _write(out_dir, train, val)


def _write(out_dir: str | Path, train: list[dict], val: list[dict]) -> dict[str, int]:
    out_dir = Path(out_dir)
    return {"train": write_manifest(out_dir / "train.jsonl", train), "val": write_manifest(out_dir / "val.jsonl", val)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="source", required=True)
    folder = sub.add_parser("folder", help="scanned line images + transcriptions")
    folder.add_argument("--images", required=True)
    folder.add_argument("--texts", required=True, help="CSV (file,text) or JSONL ({image,text})")
    render = sub.add_parser("render", help="sample-exam answers rendered as synthetic handwriting")
    render.add_argument("--sample-exam-dir", default=str(Path(__file__).resolve().parents[2] / "src" / "grading" / "sample_exam"))
    render.add_argument("--fonts", default="train", choices=("train", "heldout"))
    render.add_argument("--copies", type=int, default=3, help="renderings of each answer (different fonts)")
    render.add_argument("--max-chars", type=int, default=60)
    for p in (folder, render):
        p.add_argument("--out", required=True)
        p.add_argument("--val-fraction", type=float, default=0.1)
        p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if not 0.0 <= args.val_fraction < 1.0:
            raise ConfigError("--val-fraction", f"{args.val_fraction} is outside [0, 1)")
        if args.source == "folder":
            counts = from_folder(args.images, args.texts, args.out, args.val_fraction, args.seed)
        else:
            counts = rendered(args.out, args.sample_exam_dir, args.fonts, args.copies, args.max_chars,
                              args.val_fraction, args.seed)
    except (InputError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"train: {counts['train']} lines, val: {counts['val']} lines -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
