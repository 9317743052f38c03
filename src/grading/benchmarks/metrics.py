"""Benchmark metrics (library implementations) and the maps from a grader's fraction to a dataset's scale."""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score


def regression_metrics(pred, gold) -> dict[str, float]:
    """Pearson r (scipy), MAE and RMSE on the gold scale."""
    p, g = np.asarray(pred, float), np.asarray(gold, float)
    r = float(stats.pearsonr(p, g).statistic) if np.std(p) > 0 and np.std(g) > 0 else float("nan")
    return {"pearson_r": r, "mae": float(np.mean(np.abs(p - g))), "rmse": float(np.sqrt(np.mean((p - g) ** 2)))}


def pearson(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    return float(stats.pearsonr(x, y).statistic) if np.std(x) > 0 and np.std(y) > 0 else float("nan")


def classification_metrics(pred, gold) -> dict[str, float]:
    """Accuracy and macro-F1 (scikit-learn)."""
    return {"accuracy": float(accuracy_score(gold, pred)),
            "macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0))}


def qwk(pred, gold) -> float:
    """Quadratic weighted kappa (scikit-learn's cohen_kappa_score, weights="quadratic")."""
    return float(cohen_kappa_score(np.asarray(gold, int), np.asarray(pred, int), weights="quadratic"))


def fit_linear(fraction, gold) -> tuple[float, float]:
    """Least-squares line gold ~ slope * fraction + offset (a constant fraction maps to the mean gold)."""
    f, g = np.asarray(fraction, float), np.asarray(gold, float)
    if np.std(f) == 0:
        return 0.0, float(g.mean())
    fit = stats.linregress(f, g)
    return float(fit.slope), float(fit.intercept)


def best_threshold(scores, labels) -> float:
    """The cut (predict 1 when score >= cut) with the best macro-F1 on the given (training) data."""
    s, y = np.asarray(scores, float), np.asarray(labels, int)
    candidates = np.unique(np.quantile(s, np.linspace(0.01, 0.99, 99)))
    f1s = [f1_score(y, (s >= c).astype(int), average="macro", zero_division=0) for c in candidates]
    return float(candidates[int(np.argmax(f1s))])


def quantile_map(train_score, train_gold, test_score) -> np.ndarray:
    """Each test score to the grade at the same rank among the graded examples: a score above a share p of
    the examples' scores gets the examples' gold p-quantile. Monotone, and it keeps the examples' spread of
    grades however narrow the scores' range is (a fitted line on a few examples shrinks to the mean grade)."""
    s, g = np.sort(np.asarray(train_score, float)), np.asarray(train_gold, float)
    t = np.asarray(test_score, float)
    rank = (np.searchsorted(s, t, side="left") + np.searchsorted(s, t, side="right")) / 2
    return np.quantile(g, np.clip(rank / len(s), 0.0, 1.0), method="inverted_cdf")
