"""What every grader is: answers of one question in, one :class:`GradeResult` per answer out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from grading.rubric import Answer, Question


@dataclass
class GradeResult:
    """One graded answer. ``details`` holds the grader's explanation and, by convention, ``fraction``:
    the unrounded score in [0, 1] that hybrid graders and ablations combine."""

    points: float
    max_points: float
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def record(self, answer: Answer, grader: str) -> dict[str, Any]:
        """The ``scores.jsonl`` line for this result."""
        return {
            "answer_id": answer.answer_id,
            "question_id": answer.question_id,
            "points": self.points,
            "max_points": self.max_points,
            "matched": list(self.matched),
            "missing": list(self.missing),
            "grader": grader,
            **self.details,
        }


class Grader(ABC):
    """Grades the answers to one question at a time (so embeddings and requests can be batched)."""

    name: str = "grader"

    @abstractmethod
    def grade(self, question: Question, answers: list[Answer]) -> list[GradeResult]:
        """Return one result per answer, in order. Points lie in [0, max_points] on the granularity."""
