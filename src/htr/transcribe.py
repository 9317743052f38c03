"""Transcribe a page (or an answer region): preprocess, segment into lines, recognise each line.

``python scripts/transcribe.py image=<png> out_dir=<dir>`` writes ``transcription.json``:
``{"image", "recognizer", "model_dir", "angle", "scale", "lines": [{"box": {x, y, width, height}, "text"}],
"text"}``. Boxes are in the pixels of the preprocessed page (deskewed by ``angle`` degrees and scaled by
``scale``); ``text`` joins the lines with newlines.
"""

from __future__ import annotations

from pathlib import Path

import cv2
from omegaconf import DictConfig
from PIL import Image

from inkbase.errors import InputError
from inkbase.jsonio import write_json
from inkbase.runs import start_run


def run(cfg: DictConfig) -> dict:
    from htr.preprocess import PreprocessConfig, preprocess
    from htr.recognize import build_recognizer
    from htr.segment import SegmenterConfig, segment_lines

    path = Path(cfg.image)
    if not path.is_file():
        raise InputError(path, "image", "file not found")
    page = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if page is None or page.size == 0:
        raise InputError(path, "image", "unreadable or empty image")
    if page.dtype != "uint8":
        page = cv2.convertScaleAbs(page, alpha=255.0 / max(1, int(page.max())))
    folder = start_run(cfg.out_dir, cfg)
    info: dict = {}
    prepared, _ = preprocess(page, PreprocessConfig.from_dict(cfg.preprocess), info)
    boxes = segment_lines(prepared, SegmenterConfig.from_dict(cfg.segmenter))
    crops = [Image.fromarray(box.crop(prepared)) for box in boxes]
    recognizer = build_recognizer(cfg.recognizer)
    texts = recognizer.recognize(crops) if crops else []
    result = {
        "image": str(path), "recognizer": cfg.recognizer.name,
        "model_dir": getattr(recognizer, "model_dir", None), "angle": info.get("angle", 0.0),
        "scale": info.get("scale", 1.0),
        "lines": [{"box": box.as_dict(), "text": text} for box, text in zip(boxes, texts, strict=True)],
        "text": "\n".join(texts),
    }
    write_json(folder.file("transcription.json"), result)
    folder.finish({"lines": len(boxes), "chars": sum(len(t) for t in texts)})
    print(f"{len(boxes)} lines -> {folder.file('transcription.json')}")
    return result
