"""Lanke et al.'s hybrid score (Eq. 2): ``final = alpha * S_KG + (1 - alpha) * S_other``.

``S_other`` is the ``fraction`` of another grader (``llm`` in the paper; ``semantic`` or ``similarity``
here too). The combined fraction is scaled to the question's points, rounded to its granularity and
clamped to [0, max] by :func:`grading.scoring.to_points`. Matched and missing concepts come from the KG part.

The weight follows a data-independent rule (:func:`effective_alpha`) from the rubric's structure: ``alpha``
where an instructor listed the question's concepts, 0 where there are none, where they were cut out of the
reference answer (``Question.concepts_from == "reference"``) or where they are the lines of a score level's
description (``"score_levels"``). Concepts cut from the reference re-read the reference answer that the
partner already compares with, only more coarsely, so they add noise and no information: on Mohler, SemEval
and ASAP the KG on them is below the partner on every split. A score level's description ("A 2-point
response ... uses results from the experiment", an example table) says what a whole answer at that level
looks like; its lines are not separable pieces of content whose share is a grade. A list of alternatives
with a count for full marks (``concepts_for_full_marks``) enters through the KG's own score
(:func:`grading.scoring.list_share`). With a few graded examples of a question, :func:`calibrate_alpha`
picks the weight from them instead.
"""

from __future__ import annotations

import numpy as np

from grading.benchmarks.metrics import pearson
from grading.embed import Embedder
from grading.graders import build_grader
from grading.graders.base import Grader, GradeResult
from grading.rubric import Answer, Question
from grading.scoring import to_points
from inkbase.errors import ConfigError, check_range


def hybrid_fraction(alpha: float, s_kg: float, s_other: float) -> float:
    """Lanke et al., Eq. 2 on fractions in [0, 1]."""
    return alpha * s_kg + (1.0 - alpha) * s_other


# Weights tried by calibrate_alpha, smallest first: a tie goes to the partner.
ALPHA_GRID = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def effective_alpha(alpha: float, question: Question) -> float:
    """``alpha`` for an instructor's concept list, 0 for none, concepts made from the reference answer, or the
    lines of a score level's description."""
    return alpha if question.has_concept_rubric else 0.0


def calibrate_alpha(s_kg, s_other, gold, grid: tuple[float, ...] = ALPHA_GRID) -> float:
    """The weight in ``grid`` whose hybrid score correlates best (Pearson) with ``gold`` on graded examples
    of one question; 0 when no weight gives a defined correlation (e.g. all examples got the same grade)."""
    s_kg, s_other = np.asarray(s_kg, float), np.asarray(s_other, float)
    rs = [pearson(hybrid_fraction(a, s_kg, s_other), gold) for a in grid]
    rs = [r if r == r else -np.inf for r in rs]
    return float(grid[int(np.argmax(rs))]) if max(rs) > -np.inf else 0.0


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
            alpha = effective_alpha(self.alpha, question)
            fraction = hybrid_fraction(alpha, s_kg, s_other)
            details = {
                "fraction": round(fraction, 6), "alpha": alpha, "s_kg": s_kg, "s_other": s_other,
                "other": self.other.name,
                **{k: v for k, v in kg.details.items() if k not in ("fraction", "s_kg")},
                "other_details": {k: v for k, v in other.details.items() if k != "fraction"},
            }
            results.append(GradeResult(points=to_points(fraction, question.max_points, question.granularity),
                                       max_points=question.max_points, matched=kg.matched, missing=kg.missing,
                                       details=details))
        return results
