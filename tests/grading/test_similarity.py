"""Wong's similarity grader: mapping of cosine to points, minimum similarity, empty answers, grade.py."""

from __future__ import annotations

import json

import pytest

from grading.graders.similarity import SimilarityGrader
from grading.rubric import Answer, Question
from inkbase.cli import compose
from inkbase.errors import ConfigError

QUESTION = Question.model_validate({
    "id": "Q2", "text": "What does a plant release during photosynthesis?", "max_points": 2, "granularity": 0.25,
    "reference_answer": "The plant releases oxygen into the air as a by-product of photosynthesis.",
})


def test_fraction_mappings():
    rescaled = SimilarityGrader(embedder=None, min_similarity=0.4, mapping="rescaled")
    proportional = SimilarityGrader(embedder=None, min_similarity=0.4, mapping="proportional")
    assert rescaled.fraction(0.39) == 0.0 and proportional.fraction(0.39) == 0.0
    assert rescaled.fraction(0.7) == pytest.approx(0.5)
    assert proportional.fraction(0.7) == pytest.approx(0.7)
    assert rescaled.fraction(1.0) == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs,key", [({"min_similarity": 1.2}, "min_similarity"), ({"mapping": "log"}, "mapping")])
def test_bad_knobs_are_refused(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        SimilarityGrader(embedder=None, **kwargs)


def test_close_answer_beats_unrelated_answer_and_empty_scores_zero(embedder):
    grader = SimilarityGrader(embedder, min_similarity=0.3, mapping="rescaled")
    close, unrelated, empty = grader.grade(QUESTION, [
        Answer(answer_id="a", question_id="Q2", text="Oxygen is released by the plant into the air."),
        Answer(answer_id="b", question_id="Q2", text="My favourite football team won on Saturday."),
        Answer(answer_id="c", question_id="Q2", text="   "),
    ])
    assert close.details["similarity"] > 0.7 and close.points >= 1.25
    assert unrelated.details["similarity"] < 0.3 and unrelated.points == 0.0 and unrelated.details["fraction"] == 0
    assert empty.details["similarity"] == 0.0 and empty.points == 0.0
    assert (close.points / 0.25).is_integer()


def test_grade_entry_point_with_similarity_grader(tmp_path, grade_overrides):
    from grading import grade

    grade.run(compose("grade", [*grade_overrides(QUESTION, ["It gives off oxygen."]), "grader=similarity"]))
    (row,) = [json.loads(line) for line in (tmp_path / "run" / "scores.jsonl").read_text().splitlines()]
    assert row["grader"] == "similarity" and 0 < row["points"] <= 2
    assert {"similarity", "fraction", "matched", "missing"} <= set(row)
