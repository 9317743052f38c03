"""Rubric concepts with nothing to match and answers the tokenizer cannot read: one clear error naming file and field."""

from __future__ import annotations

import json

import pytest

from grading.embed import unknown_token_share
from grading.rubric import load_rubric
from inkbase.cli import compose
from inkbase.errors import InputError

from .test_hybrid import QUESTION


def write_rubric(tmp_path, concept: dict):
    question = {**QUESTION.model_dump(), "concepts": [concept], "edges": []}
    path = tmp_path / "rubric.json"
    path.write_text(json.dumps({"exam_id": "t", "questions": [question]}))
    return path


@pytest.mark.parametrize(("concept", "field", "problem"), [
    ({"id": "c", "label": "", "weight": 1}, "questions[0].concepts[0].label", "at least 1 character"),
    ({"id": "c", "label": " ... ", "weight": 1}, "questions[0].concepts[0].label", "no text to match"),
    ({"id": "c", "label": "mass cancels", "weight": 1, "synonyms": ["m cancels", "  "]},
     "questions[0].concepts[0].synonyms", "synonyms[1] has no text to match"),
])
def test_concept_without_text_names_file_and_field(tmp_path, concept, field, problem):
    path = write_rubric(tmp_path, concept)
    with pytest.raises(InputError) as err:
        load_rubric(path)
    assert err.value.field == field and problem in err.value.problem
    assert str(path) in str(err.value)


def test_unknown_token_share_by_script():
    shares = unknown_token_share(["the mass cancels", "\u1230\u120b\u121d \u1290\u12cd", "", "Die Masse k\u00fcrzt sich"],
                                 "sentence-transformers/all-MiniLM-L6-v2")
    assert shares == [0.0, 1.0, 0.0, 0.0]


def test_grade_refuses_an_answer_the_tokenizer_cannot_read(tmp_path, grade_overrides):
    from grading import grade

    texts = ["The mass cancels out.", "\u1230\u120b\u121d \u1290\u12cd \u12ed\u1205 \u1218\u120d\u1235"]
    cfg = compose("grade", [*grade_overrides(QUESTION, texts), "grader=similarity"])
    with pytest.raises(InputError) as err:
        grade.run(cfg)
    assert err.value.field == "answer 'a1': text" and "unknown to the tokenizer" in err.value.problem
    assert str(cfg.answers) in str(err.value)
    assert not (tmp_path / "run" / "scores.jsonl").exists()  # refused before anything is graded
