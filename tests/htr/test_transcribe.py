"""Page transcription plumbing: preprocess -> segment -> recognise -> transcription.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from htr import recognize, transcribe
from inkbase.cli import compose
from inkbase.errors import InputError
from inkbase.jsonio import read_jsonl


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


class EchoRecognizer(recognize.Recognizer):
    """Reads line i of a page as the text :func:`page_with_lines` wrote there."""

    name = "echo"

    def __init__(self, **_):
        pass

    def recognize(self, images):
        return [f"answer line number {i}" for i in range(len(images))]


def test_a_light_on_dark_page_is_inverted_and_read(tmp_path, monkeypatch):
    monkeypatch.setitem(recognize.RECOGNIZERS, "counting", CountingRecognizer)
    Image.fromarray(255 - page_with_lines(3)).save(tmp_path / "negative.png")
    cfg = compose("transcribe", [f"image={tmp_path / 'negative.png'}", f"out_dir={tmp_path / 'run'}",
                                 "recognizer.name=counting"])
    result = transcribe.run(cfg)
    assert result["inverted"] is True and len(result["lines"]) == 3


def test_a_page_without_lines_is_named_in_a_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(recognize.RECOGNIZERS, "counting", CountingRecognizer)
    Image.fromarray(np.full((300, 400), 250, np.uint8)).save(tmp_path / "blank.png")
    cfg = compose("transcribe", [f"image={tmp_path / 'blank.png'}", f"out_dir={tmp_path / 'run'}",
                                 "recognizer.name=counting"])
    assert transcribe.run(cfg)["lines"] == []
    assert "blank.png: no text line found" in capsys.readouterr().err


def test_an_empty_image_file_is_an_input_error_naming_it(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    cfg = compose("transcribe", [f"image={tmp_path / 'empty.png'}", f"out_dir={tmp_path / 'run'}"])
    with pytest.raises(InputError, match="empty.png.*0 bytes"):
        transcribe.run(cfg)


def test_eval_pages_scores_line_counts_and_page_text_and_skips_bad_pages(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(recognize.RECOGNIZERS, "echo", EchoRecognizer)
    folder = tmp_path / "data" / "handwriting_lines"
    (folder / "paragraphs").mkdir(parents=True)
    rows = ["file,text,level"]
    for n in (2, 3):
        Image.fromarray(255 - page_with_lines(n)).save(folder / "paragraphs" / f"p{n}.png")
        text = "\n".join(f"answer line number {i}" for i in range(n))
        rows.append(f'paragraphs/p{n}.png,"{text}",paragraph')
    rows.append("images/x.png,not a page,line")
    (folder / "paragraphs" / "empty.png").write_bytes(b"")
    (folder / "paragraphs" / "broken.png").write_bytes(b"not a png")
    rows += ["paragraphs/empty.png,a line,paragraph", "paragraphs/broken.png,a line,paragraph"]
    (folder / "transcriptions.csv").write_text("\n".join(rows) + "\n")
    cfg = compose("eval_pages", [f"paths.data_dir={tmp_path / 'data'}", f"out_dir={tmp_path / 'run'}",
                                 "recognizer.name=echo"])
    metrics = transcribe.evaluate_pages(cfg)
    err = capsys.readouterr().err
    assert "empty.png: image: empty file (0 bytes)" in err and "broken.png: image: unreadable" in err
    assert [r["image"].rsplit("/", 1)[-1] for r in read_jsonl(tmp_path / "run" / "skipped.jsonl")] == [
        "empty.png", "broken.png"]
    assert metrics["pages"] == 2 and metrics["pages_skipped"] == 2
    assert metrics["line_count_exact"] == 2 and metrics["inverted_pages"] == 2
    assert metrics["reference_lines"] == metrics["found_lines"] == 5
    assert metrics["cer"] == 0.0 and metrics["line_count_accuracy"] == 1.0


def test_a_missing_tesseract_is_one_error_line_from_the_script(tmp_path):
    """Without the tesseract binary on PATH, ``recognizer=tesseract`` ends with one line naming it and exit
    status 2, not a traceback."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    Image.fromarray(page_with_lines(1)).save(tmp_path / "page.png")
    env = {**os.environ, "PATH": str(tmp_path / "bin")}  # a PATH with no tesseract (nor anything else)
    res = subprocess.run([sys.executable, str(repo / "scripts" / "transcribe.py"), f"image={tmp_path / 'page.png'}",
                          f"out_dir={tmp_path / 'run'}", "recognizer=tesseract"],
                         capture_output=True, text=True, timeout=300, cwd=repo, env=env)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert lines[0] == ("error: config: recognizer.name: tesseract is not installed (Debian: apt-get install "
                        "tesseract-ocr tesseract-ocr-eng)")
