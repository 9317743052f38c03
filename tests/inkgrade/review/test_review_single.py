"""The single-answer page: an uploaded handwritten answer is segmented into lines, read and graded."""

from __future__ import annotations

import io
import json
from pathlib import Path

import jiwer
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from grading.graders import build_grader
from htr.synth.fonts import list_fonts
from inkbase.cli import compose
from inkgrade.review.app import create_app
from inkgrade.review.benchmark import render_answer
from inkgrade.review.single import SingleAnswerEngine, justification
from inkgrade.store import ExamStore

SAMPLE = Path(__file__).resolve().parents[3] / "src" / "grading" / "sample_exam"
TEXT = ("Plants take in carbon dioxide and water and use sunlight absorbed by chlorophyll to make glucose. "
        "Oxygen is released into the air.")


class WrittenText:
    """Stands in for the recogniser: returns the text that was written on each line it is given."""

    name = "written"

    def __init__(self, lines: list[str]):
        self.lines = lines

    def recognize(self, images):
        assert len(images) == len(self.lines), f"segmented {len(images)} lines, wrote {len(self.lines)}"
        return list(self.lines)


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def upload(client, image: Image.Image, question_id="Q2"):
    return client.post("/api/grade", data={"question_id": question_id}, files={
        "image": ("answer.png", png(image), "image/png"),
        "rubric": ("rubric.json", (SAMPLE / "rubric.json").read_bytes(), "application/json")})


@pytest.fixture
def font():
    return next(f for f in list_fonts("heldout") if not f.uppercase_only)


def test_upload_is_segmented_read_and_graded(tmp_path, font):
    import textwrap

    cfg = compose("review", ["exam_dir=x", "grader=keyword", f"paths.cache_dir={tmp_path / 'cache'}"])
    engine = SingleAnswerEngine(cfg)
    engine._recognizer = WrittenText(textwrap.wrap(TEXT, 52))
    engine._grader = build_grader(cfg.grader)
    client = TestClient(create_app(ExamStore.open(tmp_path / "exam", create=True), engine=engine),
                        base_url="http://127.0.0.1")
    res = upload(client, render_answer(TEXT, font, np.random.default_rng(1)))
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["transcription"] == TEXT and len(body["lines"]) == 3
    assert {c["id"] for c in body["matched"]} >= {"co2_water_in", "glucose_made", "oxygen_released"}
    assert {c["label"] for c in body["missing"]} | {c["label"] for c in body["matched"]} == {
        c["label"] for c in json.loads((SAMPLE / "rubric.json").read_text())["questions"][1]["concepts"]}
    assert 0 < body["points"] <= body["max_points"] == 4 and body["grader"] == "keyword"
    assert body["justification"]

    engine._recognizer = WrittenText([])
    blank = upload(client, Image.new("L", (600, 200), 255)).json()
    assert (blank["points"], blank["transcription"], blank["justification"]) == (0.0, "", "empty answer")


def test_justification_from_the_grader_or_its_scores():
    assert justification({"justification": "covers two of three ideas"}) == "covers two of three ideas"
    line = justification({"s_kg": 0.5, "matches": [{"id": "a"}], "closest_missing": [{"id": "b"}], "threshold": 0.7,
                          "s_other": 0.25, "other": "semantic", "alpha": 0.6, "fraction": 0.4}, 4)
    assert line == ("rubric concepts covered 0.50 (1 of 2 matched at similarity >= 0.70); semantic score 0.25; "
                    "combined 0.6 x concepts + 0.4 x semantic = 0.40; of 4 points")


@pytest.mark.slow
def test_default_recogniser_and_grader_read_a_handwritten_answer(tmp_path, font):
    cfg = compose("review", ["exam_dir=x", f"paths.cache_dir={tmp_path / 'cache'}"])
    client = TestClient(create_app(ExamStore.open(tmp_path / "exam", create=True), engine=SingleAnswerEngine(cfg)),
                        base_url="http://127.0.0.1")
    body = upload(client, render_answer(TEXT, font, np.random.default_rng(1))).json()
    assert jiwer.cer(TEXT, body["transcription"]) < 0.15, body["transcription"]
    assert body["grader"] == "hybrid" and body["points"] >= 2
    assert {"co2_water_in", "glucose_made"} <= {c["id"] for c in body["matched"]}
