"""The concept development set: size, subjects, recorded split, disjoint clause pools, reproducible build."""

from __future__ import annotations

import importlib.util
import json

from grading.rubric import load_answers, load_rubric
from inkbase.runs import REPO_ROOT

DEVSET = REPO_ROOT / "src" / "grading" / "devset"
BUILD = REPO_ROOT / "data_prep" / "concept_devset" / "build.py"


def build_module():
    spec = importlib.util.spec_from_file_location("concept_devset_build", BUILD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_devset_has_eight_subjects_and_two_recorded_parts():
    rubric = load_rubric(DEVSET / "rubric.json")
    assert len({q.subject for q in rubric.questions}) == len(rubric.questions) >= 8
    parts = {part: load_answers(DEVSET / f"answers_{part}.jsonl", rubric) for part in ("dev", "heldout")}
    assert sum(len(a) for a in parts.values()) >= 200
    for part, answers in parts.items():
        assert {a.extra["split"] for a in answers} == {part}
        for a in answers:
            assert set(a.extra["concepts"]) <= {c.id for c in rubric.question(a.question_id).concepts}
    categories = [a.extra["category"] for a in parts["heldout"]]
    assert categories.count("negated") >= 30 and categories.count("paraphrase") >= 30


def test_heldout_clauses_never_appear_in_the_dev_part():
    questions = json.loads((BUILD.parent / "clauses.json").read_text())["questions"]
    dev_text = " ".join(json.loads(line)["text"].lower() for line in (DEVSET / "answers_dev.jsonl").open())
    for q in questions:
        for cid, clauses in q["pos"].items():
            for clause in clauses[1::2]:
                assert clause.lower() not in dev_text, (q["id"], cid, clause)
        for clauses in q["neg"].values():
            assert clauses[1].lower() not in dev_text


def test_build_reproduces_the_files():
    module = build_module()
    questions = json.loads((BUILD.parent / "clauses.json").read_text())["questions"]
    for part in ("dev", "heldout"):
        rows = [a for q in questions for a in module.compose(q, part, 14, 0)]
        assert rows == [json.loads(line) for line in (DEVSET / f"answers_{part}.jsonl").open()]
    assert module.rubric(questions) == json.loads((DEVSET / "rubric.json").read_text())


def test_second_heldout_part_has_new_subjects_and_rebuilds():
    module = build_module()
    v1 = load_rubric(DEVSET / "rubric.json")
    v2 = load_rubric(DEVSET / "rubric_v2.json")
    assert len(v2.questions) >= 3 and not {q.subject for q in v2.questions} & {q.subject for q in v1.questions}
    answers = load_answers(DEVSET / "answers_heldout_v2.jsonl", v2)
    assert len(answers) >= 80 and {a.extra["split"] for a in answers} == {"heldout_v2"}
    categories = [a.extra["category"] for a in answers]
    assert categories.count("negated") >= 30 and categories.count("paraphrase") >= 30
    questions = json.loads((BUILD.parent / "clauses_v2.json").read_text())["questions"]
    rows = [a for q in questions for a in module.compose(q, "heldout_v2", 22, 0)]
    assert rows == [json.loads(line) for line in (DEVSET / "answers_heldout_v2.jsonl").open()]
    assert module.rubric(questions, "concept-devset-v2") == json.loads((DEVSET / "rubric_v2.json").read_text())
