"""Consistency of the bundled sample exam and the held-out concept test set.

Each check collects the problems it finds, so the same functions are run on the shipped data (no problems
expected) and on deliberately broken copies (problems expected), which shows the checks can fail.
"""

from __future__ import annotations

import copy
import csv
from collections import Counter
from pathlib import Path

import pytest

import grading
from grading.rubric import Answer, Rubric, load_answers, load_rubric

PACKAGE_DIR = Path(grading.__file__).parent
SAMPLE_DIR = PACKAGE_DIR / "sample_exam"
TESTSET_DIR = PACKAGE_DIR / "concept_testset"

CATEGORIES = ("full", "partial", "wrong", "off_topic", "empty")
SAMPLE_MIN_COUNTS = {"full": 4, "partial": 6, "wrong": 3, "off_topic": 2, "empty": 2}
# 15 answers per question cannot meet the sample exam's minimums; the test set needs every category once.
TESTSET_MIN_COUNTS = {"full": 3, "partial": 5, "wrong": 1, "off_topic": 1, "empty": 1}
MAX_WORDS = 50  # what fits a handwritten answer box


def load(folder: Path) -> tuple[Rubric, list[Answer]]:
    rubric = load_rubric(folder / "rubric.json")
    return rubric, load_answers(folder / "answers.jsonl", rubric)


def category_problems(rubric: Rubric, answers: list[Answer], minimum: dict[str, int]) -> list[str]:
    problems = []
    for answer in answers:
        if answer.extra.get("category") not in CATEGORIES:
            problems.append(f"{answer.answer_id}: category {answer.extra.get('category')!r}")
    for question in rubric.questions:
        counts = Counter(a.extra.get("category") for a in answers if a.question_id == question.id)
        problems += [
            f"{question.id}: {counts[c]} {c} answers, need >= {n}"
            for c, n in minimum.items()
            if counts[c] < n
        ]
    return problems


def point_problems(rubric: Rubric, answers: list[Answer]) -> list[str]:
    problems = []
    for answer in answers:
        question = rubric.question(answer.question_id)
        points = answer.extra.get("reference_points")
        if not isinstance(points, (int, float)) or not 0 <= points <= question.max_points:
            problems.append(
                f"{answer.answer_id}: reference_points {points!r} outside [0, {question.max_points}]"
            )
            continue
        steps = points / question.granularity
        if abs(steps - round(steps)) > 1e-9:
            problems.append(f"{answer.answer_id}: {points} not on granularity {question.granularity}")
    return problems


def concept_problems(rubric: Rubric, answers: list[Answer]) -> list[str]:
    problems = []
    for answer in answers:
        known = {c.id for c in rubric.question(answer.question_id).concepts}
        concepts = answer.extra.get("concepts")
        if not isinstance(concepts, list):
            problems.append(f"{answer.answer_id}: concepts is not a list")
            continue
        problems += [f"{answer.answer_id}: unknown concept {c!r}" for c in concepts if c not in known]
        if len(set(concepts)) != len(concepts):
            problems.append(f"{answer.answer_id}: repeated concept")
    return problems


def blank_answer_problems(answers: list[Answer]) -> list[str]:
    """Empty answers (and only they) have blank text; they and off-topic answers earn nothing."""
    problems = []
    for answer in answers:
        category = answer.extra.get("category")
        if (category == "empty") != (answer.text.strip() == ""):
            problems.append(f"{answer.answer_id}: category {category!r} with text {answer.text!r}")
        if category in ("empty", "off_topic") and (
            answer.extra.get("reference_points") != 0 or answer.extra.get("concepts")
        ):
            problems.append(f"{answer.answer_id}: {category} answer with points or concepts")
    return problems


def student_problems(rubric: Rubric, answers: list[Answer]) -> list[str]:
    """Every student answers every question exactly once, under the id '<student>-<question>'."""
    problems = []
    pairs = Counter((a.extra.get("student_id"), a.question_id) for a in answers)
    students = sorted({s for s, _ in pairs}, key=str)
    for student in students:
        for question in rubric.questions:
            if pairs[(student, question.id)] != 1:
                problems.append(f"{student} answers {question.id} {pairs[(student, question.id)]} times")
    problems += [
        f"{a.answer_id}: id does not match student and question"
        for a in answers
        if a.answer_id != f"{a.extra.get('student_id')}-{a.question_id}"
    ]
    return problems


@pytest.fixture(scope="module")
def sample():
    return load(SAMPLE_DIR)


@pytest.fixture(scope="module")
def testset():
    return load(TESTSET_DIR)


def test_sample_exam_shape(sample):
    rubric, answers = sample
    assert rubric.exam_id == "sample-exam-v1"
    assert [q.id for q in rubric.questions] == ["Q1", "Q2", "Q3", "Q4", "Q5"]
    assert len({q.subject for q in rubric.questions}) == 5
    assert "graphing" in {q.problem_type for q in rubric.questions}
    assert len(answers) == 100
    assert len({a.extra["student_id"] for a in answers}) == 20


def test_concept_testset_shape(sample, testset):
    rubric, answers = testset
    assert rubric.exam_id == "concept-testset-v1"
    assert len(rubric.questions) == 3
    assert len(answers) == 45
    assert Counter(a.question_id for a in answers) == {"T1": 15, "T2": 15, "T3": 15}
    # Held out: no subject or answer text shared with the sample exam.
    sample_rubric, sample_answers = sample
    assert not {q.subject for q in rubric.questions} & {q.subject for q in sample_rubric.questions}
    assert not {a.text for a in answers if a.text} & {a.text for a in sample_answers if a.text}


@pytest.mark.parametrize("folder", [SAMPLE_DIR, TESTSET_DIR], ids=["sample_exam", "concept_testset"])
def test_rubric_quality(folder):
    rubric, _ = load(folder)
    for q in rubric.questions:
        assert 2 <= q.max_points <= 6, q.id
        assert q.granularity in (0.25, 0.5), q.id
        assert 3 <= len(q.concepts) <= 6, q.id
        assert 2 <= len(q.edges) <= 5, q.id
        assert q.subject and q.reference_answer.strip(), q.id
        assert all(2 <= len(c.synonyms) <= 5 for c in q.concepts), q.id


@pytest.mark.parametrize(
    ("folder", "minimum"),
    [(SAMPLE_DIR, SAMPLE_MIN_COUNTS), (TESTSET_DIR, TESTSET_MIN_COUNTS)],
    ids=["sample_exam", "concept_testset"],
)
def test_answer_annotations(folder, minimum):
    rubric, answers = load(folder)
    assert category_problems(rubric, answers, minimum) == []
    assert point_problems(rubric, answers) == []
    assert concept_problems(rubric, answers) == []
    assert blank_answer_problems(answers) == []
    assert student_problems(rubric, answers) == []
    assert max(len(a.text.split()) for a in answers) <= MAX_WORDS


@pytest.mark.parametrize("folder", [SAMPLE_DIR, TESTSET_DIR], ids=["sample_exam", "concept_testset"])
def test_points_follow_categories(folder):
    """Full answers outscore partial ones, which outscore wrong ones, on every question."""
    rubric, answers = load(folder)
    for q in rubric.questions:
        points = {
            c: [
                a.extra["reference_points"]
                for a in answers
                if a.question_id == q.id and a.extra["category"] == c
            ]
            for c in CATEGORIES
        }
        assert min(points["full"]) > max(points["wrong"]), q.id
        assert sum(points["full"]) / len(points["full"]) > sum(points["partial"]) / len(points["partial"]), (
            q.id
        )
        assert min(points["partial"]) > 0, q.id


def test_roster_covers_students(sample):
    _, answers = sample
    with (SAMPLE_DIR / "roster.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and set(rows[0]) == {"student_id", "name", "class"}
    roster_ids = [r["student_id"] for r in rows]
    assert len(roster_ids) == len(set(roster_ids))
    assert set(roster_ids) == {a.extra["student_id"] for a in answers}
    assert all(r["name"].strip() and r["class"].strip() for r in rows)


def _broken(answers: list[Answer], answer_id: str, **changes) -> list[Answer]:
    out = copy.deepcopy(answers)
    for answer in out:
        if answer.answer_id == answer_id:
            for key, value in changes.items():
                setattr(answer, key, value)
    return out


def test_checks_catch_broken_data(sample):
    rubric, answers = sample
    empty_id = next(a.answer_id for a in answers if a.extra["category"] == "empty")
    full_id = next(a.answer_id for a in answers if a.extra["category"] == "full" and a.question_id == "Q3")
    assert point_problems(rubric, _broken(answers, full_id, reference_points=2.6))  # off the 0.25 grid
    assert point_problems(rubric, _broken(answers, full_id, reference_points=9.0))  # above max
    assert concept_problems(rubric, _broken(answers, full_id, concepts=["photosynthesis"]))
    assert blank_answer_problems(_broken(answers, empty_id, concepts=["hash_to_index"]))
    assert blank_answer_problems(_broken(answers, empty_id, reference_points=0.5))
    assert blank_answer_problems(_broken(answers, full_id, text=" "))
    relabelled = _broken(answers, full_id, category="partial")
    assert category_problems(rubric, relabelled, SAMPLE_MIN_COUNTS) == ["Q3: 3 full answers, need >= 4"]
    assert student_problems(rubric, [a for a in answers if a.answer_id != full_id])
    assert student_problems(rubric, _broken(answers, full_id, student_id="S01"))
