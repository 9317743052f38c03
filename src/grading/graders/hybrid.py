"""Lanke et al.'s hybrid score (Eq. 2): ``final = alpha * S_KG + (1 - alpha) * S_other``.

``S_other`` is the ``fraction`` of another grader (``llm`` in the paper; ``semantic`` or ``similarity``
here too). The combined fraction is scaled to the question's points, rounded to its granularity and
clamped to [0, max] by :func:`grading.scoring.to_points`. Matched and missing concepts come from the KG part.
"""

from __future__ import annotations

from grading.embed import Embedder
from grading.graders import build_grader
from grading.graders.base import Grader, GradeResult
from grading.rubric import Answer, Question
from grading.scoring import to_points
from inkbase.errors import ConfigError, check_range


def hybrid_fraction(alpha: float, s_kg: float, s_other: float) -> float:
    """Lanke et al., Eq. 2 on fractions in [0, 1]."""
    return alpha * s_kg + (1.0 - alpha) * s_other


class HybridGrader(Grader):
    def __init__(self, kg: dict, other: dict, alpha: float, embedder: Embedder | None = None, name: str = "hybrid"):
        self.alpha = check_range("grader.alpha", alpha, 0.0, 1.0)
        self.kg = build_grader(kg, embedder)
        self.other = build_grader(other, embedder)
        if not hasattr(self.kg, "concept_similarities"):
            raise ConfigError("grader.kg", f"{kg.get('_target_')} is not a knowledge-graph grader")
        if hasattr(self.other, "usage_summary"):  # requests, tokens and cost of a paid endpoint
            self.usage_summary = self.other.usage_summary
        self.name = name

    def grade(self, question: Question, answers: list[Answer]) -> list[GradeResult]:
        kg_results = self.kg.grade(question, answers)
        other_results = self.other.grade(question, answers)
        results = []
        for kg, other in zip(kg_results, other_results, strict=True):
            s_kg, s_other = kg.details["fraction"], other.details["fraction"]
            fraction = hybrid_fraction(self.alpha, s_kg, s_other)
            details = {
                "fraction": round(fraction, 6), "alpha": self.alpha, "s_kg": s_kg, "s_other": s_other,
                "other": self.other.name,
                **{k: v for k, v in kg.details.items() if k not in ("fraction", "s_kg")},
                "other_details": {k: v for k, v in other.details.items() if k != "fraction"},
            }
            results.append(GradeResult(points=to_points(fraction, question.max_points, question.granularity),
                                       max_points=question.max_points, matched=kg.matched, missing=kg.missing,
                                       details=details))
        return results
