"""Turning a score in [0, 1] into points on a question's scale."""

from __future__ import annotations

import math


def to_points(fraction: float, max_points: float, granularity: float) -> float:
    """Scale ``fraction`` (clamped to [0, 1]) to ``max_points`` and round half-up to ``granularity``."""
    fraction = min(max(float(fraction), 0.0), 1.0)
    steps = math.floor(fraction * max_points / granularity + 0.5 + 1e-9)
    points = min(max(steps * granularity, 0.0), max_points)
    return round(points, 6)


def round_points(points: float, max_points: float, granularity: float) -> float:
    """Round raw points to ``granularity`` and clamp them to [0, max_points]."""
    return to_points(points / max_points, max_points, granularity)


def list_share(coverage: float, n_concepts: int, for_full_marks: int | None) -> float:
    """Share of full marks for a rubric that lists alternatives and gives full marks for any ``for_full_marks``
    of its ``n_concepts`` concepts: ``min(1, coverage * n / k)``, i.e. matched weight over k concepts of
    average weight (with equal weights, matched count / k). ``for_full_marks`` unset: ``coverage``."""
    if not for_full_marks or n_concepts <= 0:
        return coverage
    return min(1.0, coverage * n_concepts / for_full_marks)
