"""The real handwritten lines of ``<data_dir>/handwriting_lines`` -> an evaluation manifest.

python data_prep/handwriting_lines/prepare.py --data-dir ../shared/data --out outputs/data/handwriting_lines

EVALUATION ONLY (IAM / Bentham terms): never train, tune or select checkpoints on these lines. The
manifest points at the images where they are (paths relative to the manifest); nothing is copied.
Writes ``<out>/lines.jsonl`` with ``{"image", "text", "source"}`` for the rows of level ``line`` (41).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from htr.data import open_image, write_manifest
from inkbase.errors import InputError

FOLDER = "handwriting_lines"


def prepare(data_dir: str | Path, out_dir: str | Path, level: str = "line") -> int:
    root = Path(data_dir) / FOLDER
    table = root / "transcriptions.csv"
    if not table.is_file():
        raise InputError(table, "(file)", "not found; point --data-dir at the external data folder")
    rows = []
    with table.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"file", "text", "level"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(table, "(header)", f"missing column(s) {', '.join(sorted(missing))}")
        for row in reader:
            if row["level"] != level:
                continue
            image = root / row["file"]
            _, reason = open_image(image)
            if reason:
                print(f"warning: skipped {image}: {reason}", file=sys.stderr)
                continue
            rows.append({"image": image, "text": row["text"], "source": row.get("writing_origin", "")})
    if not rows:
        raise InputError(table, "level", f"no readable rows of level {level!r}")
    return write_manifest(Path(out_dir) / f"{level}s.jsonl", rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="the external data folder (paths.data_dir)")
    parser.add_argument("--out", required=True, help="output folder (not in git, e.g. outputs/data/...)")
    parser.add_argument("--level", default="line", choices=("line", "word", "paragraph"))
    args = parser.parse_args(argv)
    try:
        n = prepare(args.data_dir, args.out, args.level)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{n} {args.level}s -> {Path(args.out) / (args.level + 's.jsonl')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
