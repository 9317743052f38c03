"""Headline agreement between machine and reference points (Pearson r, MAE, RMSE, regression line)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def summary_agreement(predicted: Sequence[float], reference: Sequence[float]) -> dict[str, float]:
    """Pearson r (scipy), MAE, RMSE and the least-squares line predicted = slope * reference + offset."""
    p = np.asarray(predicted, dtype=float)
    r = np.asarray(reference, dtype=float)
    if p.shape != r.shape or p.size < 2:
        raise ValueError("need two equally long sequences of at least 2 values")
    out = {"n": int(p.size), "mae": float(np.mean(np.abs(p - r))), "rmse": float(np.sqrt(np.mean((p - r) ** 2)))}
    if np.std(p) == 0 or np.std(r) == 0:
        out.update(pearson_r=float("nan"), slope=float("nan"), offset=float("nan"), r2=float("nan"))
    else:
        fit = stats.linregress(r, p)
        out.update(pearson_r=float(stats.pearsonr(p, r).statistic), slope=float(fit.slope),
                   offset=float(fit.intercept), r2=float(fit.rvalue**2))
    return {k: round(v, 6) for k, v in out.items()}
