"""Rubric and answer files: schema, loading and validation.

Rubric JSON::

    {"exam_id": str,
     "questions": [{"id", "text", "max_points", "granularity", "problem_type", "reference_answer",
                    "concepts": [{"id", "label", "weight", "synonyms"?}],
                    "edges": [{"source", "relation", "target"}],
                    "concepts_from"?: "rubric" | "reference" | "score_levels",
                    "concepts_for_full_marks"?: int}]}

``concepts_from`` says where the concepts come from: an instructor's list ("rubric", the default), a program
that cut them out of the reference answer ("reference"), or the lines of a score level's description
("score_levels": they describe a whole answer at that level, not separable content); the hybrid grader gives
weight only to the first. ``concepts_for_full_marks``: the rubric lists alternatives (acceptable responses, key
elements) and any that many of them earn full marks (:func:`grading.scoring.list_share`); unset, all of them.

Answers JSONL, one object a line: ``{"answer_id", "question_id", "text"}``; other keys are kept in
``Answer.extra`` and otherwise ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from inkbase.errors import InputError
from inkbase.jsonio import iter_jsonl_objects, read_json

RELATIONS = ("causes", "depends_on", "produces", "part_of", "is_a", "requires", "implies", "contrasts_with",
             "equals", "uses", "related_to")


class Concept(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    label: str = Field(min_length=1)
    weight: float = Field(ge=0)
    synonyms: list[str] = Field(default_factory=list)

    @field_validator("label")
    @classmethod
    def _label_has_text(cls, value: str) -> str:
        if not any(ch.isalnum() for ch in value):
            raise ValueError(f"no text to match (a concept label needs a letter or digit, got {value!r})")
        return value

    @field_validator("synonyms")
    @classmethod
    def _synonyms_have_text(cls, value: list[str]) -> list[str]:
        for k, synonym in enumerate(value):
            if not any(ch.isalnum() for ch in synonym):
                raise ValueError(f"synonyms[{k}] has no text to match (got {synonym!r})")
        return value

    @property
    def phrases(self) -> list[str]:
        """The label followed by its synonyms: every phrase a student span is compared with."""
        return [self.label, *self.synonyms]


class Edge(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    relation: str
    target: str

    @field_validator("relation")
    @classmethod
    def _known_relation(cls, value: str) -> str:
        if value not in RELATIONS:
            raise ValueError(f"unknown relation {value!r}; expected one of {', '.join(RELATIONS)}")
        return value


class Question(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    text: str
    max_points: float = Field(gt=0)
    granularity: float = Field(gt=0)
    problem_type: str = "short_answer"
    reference_answer: str
    concepts: list[Concept] = Field(default_factory=list)
    edges: list[Edge] = Field(default_factory=list)
    subject: str | None = None
    concepts_from: Literal["rubric", "reference", "score_levels"] = "rubric"
    concepts_for_full_marks: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> Question:
        ids = [c.id for c in self.concepts]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate concept id(s) {dupes}")
        known = set(ids)
        for k, edge in enumerate(self.edges):
            for end in ("source", "target"):
                if getattr(edge, end) not in known:
                    raise _FieldError(f"edges[{k}].{end}", f"unknown concept {getattr(edge, end)!r}")
        if self.concepts and sum(c.weight for c in self.concepts) <= 0:
            raise _FieldError("concepts", "weights sum to 0")
        if self.concepts_for_full_marks is not None and self.concepts_for_full_marks > len(self.concepts):
            raise _FieldError("concepts_for_full_marks",
                              f"{self.concepts_for_full_marks} is more than the {len(self.concepts)} concept(s) listed")
        steps = self.max_points / self.granularity
        if abs(steps - round(steps)) > 1e-6:
            raise _FieldError("granularity", f"{self.granularity} does not divide max_points {self.max_points}")
        return self

    def concept(self, concept_id: str) -> Concept:
        return next(c for c in self.concepts if c.id == concept_id)

    @property
    def has_concept_rubric(self) -> bool:
        """Whether an instructor listed concepts (not none, not cut out of the reference answer, not the lines of
        a score level's description)."""
        return bool(self.concepts) and self.concepts_from == "rubric"


class Rubric(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exam_id: str
    questions: list[Question] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> Rubric:
        ids = [q.id for q in self.questions]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate question id(s) {dupes}")
        return self

    def question(self, question_id: str) -> Question:
        for q in self.questions:
            if q.id == question_id:
                return q
        raise KeyError(question_id)

    @property
    def by_id(self) -> dict[str, Question]:
        return {q.id: q for q in self.questions}


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow")

    answer_id: str = Field(min_length=1)
    question_id: str = Field(min_length=1)
    text: str

    @field_validator("answer_id", "question_id", mode="before")
    @classmethod
    def _ids_as_text(cls, value: Any) -> Any:
        # Ids are often numeric in exported spreadsheets; keep them as strings.
        return str(value) if isinstance(value, int) else value

    @property
    def extra(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class _FieldError(ValueError):
    """Raised inside validators to point at a sub-field (e.g. ``edges[3].target``)."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _raise_validation(path: Path, err: ValidationError, prefix: str = "") -> None:
    first = err.errors()[0]
    field = _loc(tuple(first["loc"]))
    problem = first["msg"]
    ctx_err = (first.get("ctx") or {}).get("error")
    if isinstance(ctx_err, _FieldError):
        field = f"{field}.{ctx_err.field}" if first["loc"] else ctx_err.field
        problem = ctx_err.problem
    elif problem.startswith("Value error, "):
        problem = problem[len("Value error, "):]
    if first["type"] == "missing":
        problem = "missing"
    raise InputError(path, prefix + field, problem) from None


def load_rubric(path: str | Path) -> Rubric:
    """Load and validate a rubric JSON file; raise :class:`InputError` naming the field on any problem."""
    path = Path(path)
    data = read_json(path)
    try:
        return Rubric.model_validate(data)
    except ValidationError as err:
        _raise_validation(path, err)


def load_answers(path: str | Path, rubric: Rubric | None = None) -> list[Answer]:
    """Load an answers JSONL file. With a rubric, unknown question ids are an error."""
    path = Path(path)
    known = set(rubric.by_id) if rubric is not None else None
    answers: list[Answer] = []
    seen: set[str] = set()
    for lineno, obj in iter_jsonl_objects(path):
        try:
            answer = Answer.model_validate(obj)
        except ValidationError as err:
            _raise_validation(path, err, prefix=f"line {lineno}: ")
        if known is not None and answer.question_id not in known:
            raise InputError(path, f"line {lineno}: question_id",
                             f"unknown question id {answer.question_id!r} (rubric has {sorted(known)})")
        if answer.answer_id in seen:
            raise InputError(path, f"line {lineno}: answer_id", f"duplicate answer id {answer.answer_id!r}")
        seen.add(answer.answer_id)
        answers.append(answer)
    if not answers:
        raise InputError(path, "(file)", "no answers")
    return answers
