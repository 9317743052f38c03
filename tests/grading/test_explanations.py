"""Explanations quote the answer: every matched or closest-missing span in a KG result is the answer's own text."""

from __future__ import annotations

import pytest

from grading.graders import build_grader
from grading.graders.concepts import locate
from grading.rubric import Answer
from inkbase.cli import compose

from .test_kg import QUESTION


@pytest.mark.parametrize(("span", "expected"), [
    ("the mass cancels out", "the mass, which appears on both sides, Cancels out"),  # nested clause left out
    ("cancels out", "Cancels out"),
    ("it's fine", "It\u2019s fine"),
    ("mass", "mass"),  # the word, not the start of "massive"
])
def test_locate_quotes_the_answer(span, expected):
    text = "A massive object: the mass, which appears on both sides, Cancels out. It\u2019s fine"
    start, end = locate(text, span)
    assert text[start:end] == expected


def test_locate_returns_none_for_text_not_in_the_answer():
    assert locate("the mass cancels", "gravity pulls") is None
    assert locate("the mass cancels", "") is None


@pytest.mark.parametrize("grader", ["kg", "kg_transfer"])
def test_kg_spans_are_in_the_answer(embedder, tmp_path, grader):
    cfg = compose("grade", [f"grader={grader}", "rubric=x", "answers=y", f"paths.cache_dir={tmp_path}"]).grader
    kg = build_grader(cfg, embedder)
    texts = ["Both balls land together. The  Mass cancels out, so both accelerate at g.",
             "Gravity pulls harder on the heavier ball!  But it also has   more inertia.",
             "I don't know."]
    results = kg.grade(QUESTION, [Answer(answer_id=str(i), question_id="Q1", text=t) for i, t in enumerate(texts)])
    for text, res in zip(texts, results, strict=True):
        entries = res.details["matches"] + res.details["closest_missing"]
        assert [e["id"] for e in res.details["matches"]] == res.matched
        assert {e["id"] for e in entries} == {c.id for c in QUESTION.concepts}
        for e in entries:
            assert e["span"] in text
            assert text[e["start"]:e["end"]] == e["span"]
            assert 0.0 <= e["similarity"] <= 1.0
            # A matched concept's reported cosine reaches its threshold; a missing one's does not.
            threshold = e.get("threshold", res.details["threshold"])
            assert (e["similarity"] >= threshold) == (e["id"] in res.matched)
    assert "cancels" in results[0].matched
    assert "Mass" in next(e["span"] for e in results[0].details["matches"] if e["id"] == "cancels")
