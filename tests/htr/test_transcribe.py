"""Page transcription plumbing: preprocess -> segment -> recognise -> transcription.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from htr import recognize, transcribe
from inkbase.cli import compose
from inkbase.errors import InputError


class CountingRecognizer(recognize.Recognizer):
    name = "counting"

    def __init__(self, **_):
        pass

    def recognize(self, images):
        return [f"line {i} ({im.height}px)" for i, im in enumerate(images)]


def page_with_lines(n: int) -> np.ndarray:
    from htr.synth.fonts import list_fonts
    from htr.synth.lines import render_line

    font = list_fonts("train")[0]
    page = np.full((90 * n + 60, 900), 255, np.uint8)
    rng = np.random.default_rng(0)
    for i in range(n):
        line = np.asarray(render_line(f"answer line number {i}", font, rng))
        page[40 + 90 * i:40 + 90 * i + line.shape[0], 40:40 + line.shape[1]] = line
    return page


def test_transcribe_writes_boxes_and_texts(tmp_path, monkeypatch):
    monkeypatch.setitem(recognize.RECOGNIZERS, "counting", CountingRecognizer)
    Image.fromarray(page_with_lines(3)).save(tmp_path / "page.png")
    cfg = compose("transcribe", [f"image={tmp_path / 'page.png'}", f"out_dir={tmp_path / 'run'}",
                                 "recognizer.name=counting"])
    result = transcribe.run(cfg)
    saved = json.loads((tmp_path / "run" / "transcription.json").read_text())
    assert saved == result
    assert len(saved["lines"]) == 3
    boxes = [line["box"] for line in saved["lines"]]
    assert all(a["y"] + a["height"] <= b["y"] + 8 for a, b in zip(boxes, boxes[1:], strict=False))  # top to bottom
    assert saved["text"].splitlines()[0].startswith("line 0")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["lines"] == 3


def test_transcribe_reports_an_unreadable_image(tmp_path):
    (tmp_path / "page.png").write_bytes(b"garbage")
    cfg = compose("transcribe", [f"image={tmp_path / 'page.png'}", f"out_dir={tmp_path / 'run'}"])
    with pytest.raises(InputError, match="page.png"):
        transcribe.run(cfg)
