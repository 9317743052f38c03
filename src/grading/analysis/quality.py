"""Quality of AI points against human points (Cvengros & Kortemeyer, sections 3.4 and 3.5.1).

Everything works on (students x items) point matrices and an optional boolean ``accepted`` mask of
the same shape (the confidence filters of section 3.5 choose which cells the AI grades alone).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from grading.agreement import summary_agreement

# Points are compared as classes after rounding away float noise (0.1 + 0.2 is the class 0.3).
CLASS_DECIMALS = 6
# Comparisons of points and fractions tolerate float noise of this size.
EPS = 1e-9
# "Under > 0.25 Pts" of Cvengros & Kortemeyer Table 2: under-credit by more than one usual grading notch.
UNDER_MARGIN = 0.25
ALL = "all"


def _nan_to_none(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def total_agreement(ai: np.ndarray, human: np.ndarray, accepted: np.ndarray | None = None) -> dict:
    """Pearson r, MAE, RMSE and the regression AI total = slope * human total + offset, per student.

    With a mask, a student's totals are summed over their accepted items only, and students with no
    accepted item are left out (they would add a meaningless (0, 0) point).
    """
    mask = np.ones_like(ai, bool) if accepted is None else accepted
    keep = mask.any(axis=1)
    a = np.where(mask, ai, 0.0).sum(axis=1)[keep]
    h = np.where(mask, human, 0.0).sum(axis=1)[keep]
    if a.size < 2:
        return {"n": int(a.size), "pearson_r": None, "mae": None, "rmse": None, "slope": None, "offset": None,
                "r2": None}
    return _nan_to_none(summary_agreement(a, h))


def item_agreement(ai: np.ndarray, human: np.ndarray, accepted: np.ndarray | None = None) -> dict:
    """MAE and bias = mean(AI - human) in points over the (accepted) student x item cells."""
    mask = np.ones_like(ai, bool) if accepted is None else accepted
    diff = (ai - human)[mask]
    if diff.size == 0:
        return {"n": 0, "mae": None, "bias": None}
    return {"n": int(diff.size), "mae": float(np.abs(diff).mean()), "bias": float(diff.mean())}


def classification(ai_points: Sequence[float], human_points: Sequence[float]) -> dict:
    """Exact-match quality with every distinct point value (of AI or human) as a class.

    Accuracy is exact-match accuracy; precision, recall and F1 are macro averages over the classes
    (sklearn; a class never predicted or never true scores 0); normed F1 = (F1 - 1/n) / (1 - 1/n)
    (Cvengros & Kortemeyer, Eq. 1), undefined for a single class.
    """
    a = np.round(np.asarray(ai_points, float), CLASS_DECIMALS)
    h = np.round(np.asarray(human_points, float), CLASS_DECIMALS)
    if a.size == 0:
        return {"n_samples": 0, "n_classes": 0, "accuracy": None, "precision": None, "recall": None, "f1": None,
                "normed_f1": None}
    classes = np.unique(np.concatenate([a, h]))
    # Integer codes: sklearn refuses fractional labels as "continuous".
    a_code, h_code = np.searchsorted(classes, a), np.searchsorted(classes, h)
    n = len(classes)
    precision, recall, f1, _ = precision_recall_fscore_support(h_code, a_code, labels=np.arange(n),
                                                               average="macro", zero_division=0)
    return {"n_samples": int(a.size), "n_classes": int(n), "accuracy": float(accuracy_score(h_code, a_code)),
            "precision": float(precision), "recall": float(recall), "f1": float(f1),
            "normed_f1": float((f1 - 1 / n) / (1 - 1 / n)) if n > 1 else None}


def by_problem_type(ai: np.ndarray, human: np.ndarray, problem_type: Sequence[str | None],
                    accepted: np.ndarray | None = None) -> dict[str, dict]:
    """Table 1's rows: classification quality per problem type and for ``all`` items."""
    mask = np.ones_like(ai, bool) if accepted is None else accepted
    types = np.asarray([t if t is not None else "" for t in problem_type], dtype=object)
    groups = {t: types == t for t in sorted(set(types) - {""})}
    groups[ALL] = np.ones(len(types), bool)
    out = {}
    for name, items in groups.items():
        cells = mask & items[None, :]
        out[name] = {"n_parts": int(cells.any(axis=0).sum()), **classification(ai[cells], human[cells])}
    return out


def sweep_values(step: float) -> list[float]:
    """0, step, 2 step, ..., 1 (rounded, so 0.30000000000000004 reads 0.3)."""
    n = int(round(1 / step))
    return [round(i * step, 10) for i in range(n + 1)]


def threshold_mask(ai: np.ndarray, max_points: np.ndarray, t: float) -> np.ndarray:
    """Accept a cell when the AI fraction points / max >= t; t = 0 accepts everything (even negative points)."""
    if t <= 0:
        return np.ones_like(ai, bool)
    return ai / max_points[None, :] >= t - EPS


def threshold_row(ai: np.ndarray, human: np.ndarray, accepted: np.ndarray) -> dict:
    """Table 2's columns for one acceptance mask: shares are fractions of the accepted cells."""
    diff = (ai - human)[accepted]
    out = {"accepted": float(accepted.mean())}
    if diff.size == 0:
        return {**out, "mae": None, "under": None, "under_gt_0.25": None, "over": None, "bias": None}
    return {**out, "mae": float(np.abs(diff).mean()), "under": float((diff < -EPS).mean()),
            "under_gt_0.25": float((-diff > UNDER_MARGIN + EPS).mean()), "over": float((diff > EPS).mean()),
            "bias": float(diff.mean())}


def threshold_sweep(ai: np.ndarray, human: np.ndarray, max_points: np.ndarray, step: float) -> list[dict]:
    """Cvengros & Kortemeyer Table 2: for t = 0, step, ..., 1, what accepting cells with AI fraction >= t gives."""
    return [{"threshold": t, **threshold_row(ai, human, threshold_mask(ai, max_points, t))}
            for t in sweep_values(step)]


def normalise_type(name: str | None) -> str:
    """'Graphing', 'graphing' and ' graphing ' name the same type; 'Long Answer' and 'long_answer' too."""
    return "" if name is None else "_".join(name.strip().lower().replace("-", " ").split())


def type_mask(shape: tuple[int, int], problem_type: Sequence[str | None], excluded: Sequence[str]) -> np.ndarray:
    """Accept every cell of an item whose problem type is not in ``excluded``."""
    drop = {normalise_type(t) for t in excluded}
    keep = np.array([normalise_type(t) not in drop for t in problem_type])
    return np.broadcast_to(keep[None, :], shape).copy()
