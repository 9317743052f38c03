"""How doubtful an AI grade is, in [0, 1], and a sentence saying why (the review queue's order).

Two sources, the larger wins and both are named in the reason:

- the grader's own uncertainty: a concept whose best similarity lies within ``band`` of the matching
  threshold (one word more or less flips it), a fraction within a tenth of a step of a rounding
  boundary, and partial credit itself (an answer between none and all of the rubric is where graders
  and humans disagree most);
- with at least ``irt_min_students`` fully graded students, Cvengros & Kortemeyer's IRT risk: a 2PL fitted to the
  AI's normalised points (:mod:`grading.analysis.irt`), ``Risk_ij = |s_ij - p_ij|``, how far the
  AI's grade lies from what the student's ability and the question's difficulty predict.

The recogniser gives no confidence, so recognition doubt is not part of the risk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from grading.analysis.irt import IrtPrior, fit_2pl, risk_matrix


@dataclass(frozen=True)
class RiskOptions:
    band: float = 0.05  # concept similarity this close to the threshold counts as undecided
    concept_weight: float = 0.6  # risk of a concept exactly on the threshold
    partial_weight: float = 0.4  # risk of a fraction of exactly one half
    rounding_weight: float = 0.3  # risk of a fraction exactly on a rounding boundary
    irt_min_students: int = 10


def grader_uncertainty(details: dict[str, Any], max_points: float, granularity: float,
                       opts: RiskOptions) -> tuple[float, str]:
    """(risk, reason) from one graded item's details (``fraction``, concept similarities, threshold)."""
    f = float(details.get("fraction", 0.0))
    parts: list[tuple[float, str]] = []
    threshold = details.get("threshold")
    if threshold is not None:
        for c in details.get("matched", []) + details.get("missing", []):
            sim = c.get("similarity")
            if sim is None:
                continue
            gap = abs(float(sim) - float(threshold))
            if gap < opts.band:
                state = "matched" if sim >= threshold else "missed"
                parts.append((opts.concept_weight * (1 - gap / opts.band),
                              f"concept '{c.get('label') or c['id']}' {state} at similarity {sim:.2f} "
                              f"(threshold {threshold:.2f})"))
    partial = opts.partial_weight * (1 - abs(2 * f - 1))
    if partial > 0:
        parts.append((partial, f"partial credit ({f:.2f} of the rubric)"))
    steps = f * max_points / granularity
    to_boundary = abs(steps - np.floor(steps) - 0.5)
    if to_boundary < 0.1 and 0 < f < 1:
        parts.append((opts.rounding_weight * (1 - to_boundary / 0.1),
                      f"{f * max_points:.2f} points lie on a rounding boundary (granularity {granularity:g})"))
    if details.get("needs_review"):
        parts.append((1.0, "the grader asked for review"))
    if not parts:
        return 0.0, "grader: clear-cut"
    parts.sort(key=lambda p: -p[0])
    return float(min(1.0, parts[0][0])), "grader: " + "; ".join(text for _, text in parts[:3])


def irt_risks(scores: dict[tuple[str, str], float], students: list[str], questions: list[str], prior: IrtPrior,
              min_students: int) -> tuple[dict[tuple[str, str], tuple[float, float]], str]:
    """``(student, question) -> (risk, expected fraction)`` for students with every question graded;
    empty (with the reason) when fewer than ``min_students`` are."""
    complete = [s for s in students if all((s, q) in scores for q in questions)]
    if len(complete) < min_students:
        return {}, f"IRT needs {min_students} fully graded students, {len(complete)} so far"
    matrix = np.array([[scores[(s, q)] for q in questions] for s in complete])
    fit = fit_2pl(matrix, prior)
    risk, expected = risk_matrix(matrix, fit), fit.expected()
    out = {(s, q): (float(risk[i, j]), float(expected[i, j])) for i, s in enumerate(complete)
           for j, q in enumerate(questions)}
    return out, f"IRT 2PL on {len(complete)} students"


def combine(grader: tuple[float, str], irt: tuple[float, float] | None, fraction: float) -> tuple[float, str]:
    """The larger of the two risks, with both reasons, the deciding one first."""
    g_risk, g_reason = grader
    if irt is None:
        return round(g_risk, 4), g_reason
    i_risk, expected = irt
    i_reason = (f"IRT: AI gave {fraction:.2f} of the points, the student's ability and the question's "
                f"difficulty predict {expected:.2f} (|s - p| = {i_risk:.2f})")
    if i_risk >= g_risk:
        return round(min(1.0, i_risk), 4), f"{i_reason}; {g_reason}"
    return round(g_risk, 4), f"{g_reason}; {i_reason}"
