"""Inter-run reliability of AI points (Cvengros & Kortemeyer, section 3.3): the runs are treated as raters.

``ratings`` below is always a (targets x runs) matrix: targets are students (totals) or
student x item cells.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
import pingouin as pg

RC_FACTOR = 1.96 * math.sqrt(2.0)


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _long(ratings: np.ndarray) -> pd.DataFrame:
    n, k = ratings.shape
    return pd.DataFrame({"target": np.repeat(np.arange(n), k), "run": np.tile(np.arange(k), n),
                         "score": ratings.reshape(-1)})


def icc_absolute(ratings: np.ndarray) -> tuple[float | None, float | None]:
    """ICC(A,1) and ICC(A,k): two-way random effects, absolute agreement (McGraw & Wong 1996), via pingouin."""
    ratings = np.asarray(ratings, float)
    if ratings.shape[0] < 2 or ratings.shape[1] < 2:
        return None, None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        icc = pg.intraclass_corr(_long(ratings), targets="target", raters="run", ratings="score").set_index("Type")
    return _finite(icc.at["ICC(A,1)", "ICC"]), _finite(icc.at["ICC(A,k)", "ICC"])


def within_target_sd(ratings: np.ndarray) -> float:
    """S_w = sqrt(MS within targets) = sqrt(SS within targets / (n (k - 1))); a one-line ANOVA identity."""
    ratings = np.asarray(ratings, float)
    n, k = ratings.shape
    ss_within = float(((ratings - ratings.mean(axis=1, keepdims=True)) ** 2).sum())
    return math.sqrt(ss_within / (n * (k - 1)))


def kendall_w(ratings: np.ndarray) -> float | None:
    """Kendall's W with tie correction; each run ranks the targets (pingouin's Friedman test reports it).

    W = (12 sum_j R_j^2 - 3 m^2 n (n+1)^2) / (m^2 n (n^2 - 1) - m sum_i T_i), m runs, n targets,
    R_j the rank sum of target j, T_i = sum (t^3 - t) over the tie groups of run i. Undefined (None)
    when every run ties all targets.
    """
    ratings = np.asarray(ratings, float)
    if ratings.shape[0] < 2 or ratings.shape[1] < 2:
        return None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        res = pg.friedman(data=_long(ratings), dv="score", within="target", subject="run")
    return _finite(res["W"].iloc[0])


def lin_ccc(x: np.ndarray, y: np.ndarray) -> float | None:
    """Lin's concordance correlation coefficient (Lin 1989), with population (1/n) moments as in the paper.

    rho_c = 2 s_xy / (s_x^2 + s_y^2 + (mean_x - mean_y)^2). Hand-written: scipy, statsmodels and
    pingouin have no CCC. None for fewer than 2 pairs or when both series are constant and equal (0/0).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 2:
        return None
    sxy = float(np.mean((x - x.mean()) * (y - y.mean())))
    denom = float(x.var() + y.var() + (x.mean() - y.mean()) ** 2)
    return 2 * sxy / denom if denom > 0 else None


def _median_iqr(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return float(med), float(q3 - q1)


def reliability_level(ratings: np.ndarray) -> dict[str, float | None]:
    """ICC(A,1), ICC(A,k), S_w and RC = 1.96 sqrt(2) S_w for one level (totals or cells)."""
    icc1, icck = icc_absolute(ratings)
    s_w = within_target_sd(ratings)
    return {"icc_a1": icc1, "icc_ak": icck, "s_w": s_w, "rc": RC_FACTOR * s_w}


def reliability(runs: list[np.ndarray]) -> dict[str, dict] | None:
    """Section 3.3 on a list of (students x items) point matrices, one per run; None with fewer than 2 runs."""
    k = len(runs)
    if k < 2:
        return None
    totals = np.stack([r.sum(axis=1) for r in runs], axis=1)  # students x runs
    cells = np.stack([r.reshape(-1) for r in runs], axis=1)  # (student, item) cells x runs
    ccc = [lin_ccc(totals[:, i], totals[:, j]) for i, j in itertools.combinations(range(k), 2)]
    sd = list(totals.std(axis=1, ddof=1))
    ccc_med, ccc_iqr = _median_iqr(ccc)
    sd_med, sd_iqr = _median_iqr(sd)
    total = {"k": k, **reliability_level(totals), "kendall_w": kendall_w(totals),
             "lin_ccc_median": ccc_med, "lin_ccc_iqr": ccc_iqr, "sd_median": sd_med, "sd_iqr": sd_iqr}
    return {"total": total, "item": reliability_level(cells)}
