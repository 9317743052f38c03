"""Keyword baseline: content lemmas, phrase overlap, weighted score, grade.py end to end."""

from __future__ import annotations

import json

import pytest

from grading.graders import build_grader
from grading.graders.concepts import content_lemmas, load_nlp
from grading.graders.keyword import phrase_overlap
from grading.rubric import Answer, Question
from inkbase.cli import compose
from inkbase.errors import ConfigError

QUESTION = Question.model_validate({
    "id": "Q4", "text": "A frost destroys coffee plants. Explain the effect on the coffee market.", "max_points": 4,
    "granularity": 0.5, "reference_answer": "Supply shifts left, the price rises and the quantity falls.",
    "concepts": [
        {"id": "supply_left", "label": "supply curve shifts left", "weight": 2, "synonyms": ["supply decreases"]},
        {"id": "price_up", "label": "equilibrium price rises", "weight": 1, "synonyms": ["the price goes up"]},
        {"id": "quantity_down", "label": "equilibrium quantity falls", "weight": 1},
    ],
    "edges": [],
})


def keyword_config(cache_dir, **overrides):
    return compose("grade", ["grader=keyword", "rubric=x", "answers=y", f"paths.cache_dir={cache_dir}",
                             *[f"grader.{k}={v}" for k, v in overrides.items()]]).grader


def test_content_lemmas_drop_stop_words_and_punctuation():
    assert content_lemmas(load_nlp()("The prices are rising, and the supply decreased!")) == [
        "price", "rise", "supply", "decrease"]


def test_phrase_overlap():
    assert phrase_overlap(["supply", "curve", "shift", "left"], {"supply", "shift", "left", "price"}) == 0.75
    assert phrase_overlap(["price"], set()) == 0.0
    assert phrase_overlap([], {"price"}) == 0.0


def test_keyword_score_is_weight_of_found_concepts(tmp_path):
    grader = build_grader(keyword_config(tmp_path))
    answers = [Answer(answer_id="a", question_id="Q4", text="Supply decreased, so the prices went up."),
               Answer(answer_id="b", question_id="Q4", text="Coffee is grown in Brazil."),
               Answer(answer_id="c", question_id="Q4", text="")]
    a, b, c = grader.grade(QUESTION, answers)
    # "supply decreases" and "the price goes up" are found through their lemmas; nothing names the quantity.
    assert a.matched == ["supply_left", "price_up"] and a.missing == ["quantity_down"]
    assert a.details["fraction"] == pytest.approx(3 / 4) and a.points == 3.0
    assert a.details["overlaps"]["supply_left"] == 1.0
    assert b.matched == [] and b.points == 0 and c.points == 0


def test_min_overlap_decides_partial_phrases(tmp_path):
    text = [Answer(answer_id="a", question_id="Q4", text="The curve shifts.")]  # 2 of 4 label lemmas
    assert build_grader(keyword_config(tmp_path, min_overlap=0.5)).grade(QUESTION, text)[0].matched == ["supply_left"]
    assert build_grader(keyword_config(tmp_path, min_overlap=1.0)).grade(QUESTION, text)[0].matched == []
    with pytest.raises(ConfigError, match="min_overlap"):
        build_grader(keyword_config(tmp_path, min_overlap=0))


def test_grade_entry_point_with_keyword_grader(tmp_path, grade_overrides):
    from grading import grade

    grade.run(compose("grade", [*grade_overrides(QUESTION, ["Supply decreases."]), "grader=keyword"]))
    (row,) = [json.loads(line) for line in (tmp_path / "run" / "scores.jsonl").read_text().splitlines()]
    assert row["grader"] == "keyword" and row["matched"] == ["supply_left"] and row["points"] == 2.0
    assert {"fraction", "s_keyword", "overlaps", "missing", "max_points"} <= set(row)
