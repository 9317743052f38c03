"""Transcribe a page (or an answer region): preprocess, segment into lines, recognise each line.

``python scripts/transcribe.py image=<png> out_dir=<dir>`` writes ``transcription.json``:
``{"image", "recognizer", "model_dir", "angle", "scale", "inverted", "lines": [{"box": {x, y, width,
height}, "text"}], "text"}``. Boxes are in the pixels of the preprocessed page (deskewed by ``angle``
degrees and scaled by ``scale``); ``text`` joins the lines with newlines; ``inverted`` says the page was
light-on-dark and was turned into dark ink on light paper before anything else. A page on which no line
is found is warned about by name.

``python scripts/eval_pages.py paths.data_dir=<data> out_dir=<dir>`` transcribes the paragraph pages of
``<data>/handwriting_lines`` (real handwriting, evaluation only) and scores them: line-count accuracy
(pages whose number of lines found equals the reference's) and whole-page CER/WER (the page's lines
joined by spaces). Writes ``pages.jsonl`` (one row per page, as it is done, so a rerun resumes) and
``metrics.json``.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from inkbase.errors import InputError
from inkbase.jsonio import JsonlAppender, read_jsonl, write_json
from inkbase.runs import start_run


def read_page(path: str | Path) -> np.ndarray:
    """The page as uint8 pixels; ``InputError`` naming the file when it is missing, empty or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "image", "file not found")
    if path.stat().st_size == 0:
        raise InputError(path, "image", "empty file (0 bytes)")
    page = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if page is None or page.size == 0:
        raise InputError(path, "image", "unreadable or empty image")
    if page.dtype != "uint8":
        page = cv2.convertScaleAbs(page, alpha=255.0 / max(1, int(page.max())))
    return page


def transcribe_page(page: np.ndarray, cfg: DictConfig, recognizer, name: str) -> dict[str, Any]:
    """Lines found on ``page`` and their texts (``name`` identifies the page in the warning)."""
    from htr.preprocess import PreprocessConfig, preprocess
    from htr.segment import SegmenterConfig, segment_lines

    info: dict = {}
    prepared, _ = preprocess(page, PreprocessConfig.from_dict(cfg.preprocess), info)
    boxes = segment_lines(prepared, SegmenterConfig.from_dict(cfg.segmenter))
    if not boxes:
        print(f"warning: {name}: no text line found on the page", file=sys.stderr)
    crops = [Image.fromarray(box.crop(prepared)) for box in boxes]
    texts = recognizer.recognize(crops) if crops else []
    return {
        "image": name, "recognizer": cfg.recognizer.name,
        "model_dir": getattr(recognizer, "model_dir", None), "angle": info.get("angle", 0.0),
        "scale": info.get("scale", 1.0), "inverted": info.get("inverted", False),
        "lines": [{"box": box.as_dict(), "text": text} for box, text in zip(boxes, texts, strict=True)],
        "text": "\n".join(texts),
    }


def run(cfg: DictConfig) -> dict:
    from htr.recognize import build_recognizer

    page = read_page(cfg.image)
    folder = start_run(cfg.out_dir, cfg)
    result = transcribe_page(page, cfg, build_recognizer(cfg.recognizer), str(cfg.image))
    write_json(folder.file("transcription.json"), result)
    folder.finish({"lines": len(result["lines"]), "chars": sum(len(line["text"]) for line in result["lines"])})
    print(f"{len(result['lines'])} lines -> {folder.file('transcription.json')}")
    return result


def paragraph_pages(data_dir: str | Path) -> list[tuple[Path, str]]:
    """(image, reference text with its line breaks) for the ``paragraph`` rows of handwriting_lines."""
    table = Path(data_dir) / "handwriting_lines" / "transcriptions.csv"
    if not table.is_file():
        raise InputError(table, "(file)", "not found; point paths.data_dir at the external data folder")
    with table.open(encoding="utf-8", newline="") as fh:
        return [(table.parent / r["file"], r["text"]) for r in csv.DictReader(fh) if r["level"] == "paragraph"]


def evaluate_pages(cfg: DictConfig) -> dict[str, Any]:
    """Transcribe every paragraph page and score its line count and its text."""
    from htr.evaluate import error_rates
    from htr.recognize import build_recognizer

    pages = paragraph_pages(cfg.data_dir)
    if not pages:
        raise InputError(Path(cfg.data_dir) / "handwriting_lines" / "transcriptions.csv", "level",
                         "no paragraph rows")
    folder = start_run(cfg.out_dir, cfg)
    done = {r["image"]: r for r in read_jsonl(folder.file("pages.jsonl"))}
    skipped = {r["image"]: r for r in read_jsonl(folder.file("skipped.jsonl"))}
    recognizer = None
    with JsonlAppender(folder.file("pages.jsonl")) as out, JsonlAppender(folder.file("skipped.jsonl")) as skips:
        for path, reference in tqdm(pages, desc="pages", unit="page"):
            if str(path) in done or str(path) in skipped:
                continue
            try:
                page = read_page(path)
            except InputError as err:  # a missing, empty or unreadable page is named and skipped
                print(f"warning: skipped {err}", file=sys.stderr)
                skips.write({"image": str(path), "reason": err.problem})
                skipped[str(path)] = err.problem
                continue
            recognizer = recognizer or build_recognizer(cfg.recognizer)
            result = transcribe_page(page, cfg, recognizer, str(path))
            row = {"image": str(path), "reference_lines": len(reference.splitlines()),
                   "found_lines": len(result["lines"]), "inverted": result["inverted"],
                   "reference": reference, "prediction": result["text"]}
            out.write(row)
            done[row["image"]] = row
    rows = [done[str(p)] for p, _ in pages if str(p) in done]
    if not rows:
        raise InputError(Path(cfg.data_dir) / "handwriting_lines", "paragraphs", "no readable page")
    rates = error_rates([" ".join(r["reference"].split("\n")) for r in rows],
                        [" ".join(r["prediction"].split("\n")) for r in rows])
    metrics = {"pages": len(rows), "pages_skipped": len(skipped), "line_count_exact": sum(r["found_lines"] == r["reference_lines"] for r in rows),
               "reference_lines": sum(r["reference_lines"] for r in rows),
               "found_lines": sum(r["found_lines"] for r in rows),
               "line_count_abs_error": sum(abs(r["found_lines"] - r["reference_lines"]) for r in rows),
               "inverted_pages": sum(r["inverted"] for r in rows), **rates, "recognizer": cfg.recognizer.name}
    metrics["line_count_accuracy"] = metrics["line_count_exact"] / len(rows)
    folder.finish(metrics)
    print(f"{metrics['line_count_exact']}/{len(rows)} pages with the right number of lines; page CER "
          f"{metrics['cer']:.4f}  WER {metrics['wer']:.4f} -> {folder.path}")
    return metrics
