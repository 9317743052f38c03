"""Two-parameter logistic IRT on AI scores and the risk filter (Cvengros & Kortemeyer, section 3.5.2).

Production only has the AI's points, normalised to s_ij = points / max in [0, 1] and often fractional,
so the model is a continuous-response 2PL:

    p_ij = 1 / (1 + exp(-a_j (theta_i - b_j)))

with the Bernoulli (quasi-binomial) likelihood prod_j p^s (1 - p)^(1 - s), which for binary s is the
ordinary 2PL. Girth and the other IRT packages take only binary or ordinal responses, hence this
hand-written fit. Item parameters are marginal maximum likelihood estimates (theta ~ N(0, 1)
integrated out by Gauss-Hermite quadrature, as girth's ``twopl_mml`` does for binary data), with weak
priors log a ~ N(0, sd_log_a), b ~ N(0, sd_b) and box bounds, because with a few dozen students an item
everybody solves drives b to -infinity. Abilities are EAP estimates (posterior means). scipy L-BFGS-B
with an analytic gradient starts from a fixed point (a = 1, b = -logit(item mean)), so the fit is
deterministic. The fit sees s clipped to [0, 1] (outside it the likelihood has no maximum); the risk
Risk_ij = |s_ij - p_ij| uses the raw s, so out-of-range AI points show as risk > 1 (Cvengros & Kortemeyer Fig. 13).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from scipy import optimize, special, stats


@dataclass(frozen=True)
class IrtPrior:
    """Priors, bounds and solver limits of the fit; values come from configs/analyze_grades.yaml ``irt``."""

    sd_log_a: float
    sd_b: float
    a_min: float
    a_max: float
    b_max: float
    quadrature_points: int
    max_iter: int


@dataclass
class IrtFit:
    theta: np.ndarray  # (n_students,)
    a: np.ndarray  # (n_items,)
    b: np.ndarray  # (n_items,)
    converged: bool
    message: str
    marginal_log_likelihood: float

    def expected(self) -> np.ndarray:
        """p_ij, the model's expected normalised score of student i on item j."""
        return special.expit(self.a[None, :] * (self.theta[:, None] - self.b[None, :]))


def _posterior(s: np.ndarray, a: np.ndarray, b: np.ndarray, nodes: np.ndarray, log_w: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-student log marginal likelihood, posterior weights over the nodes (n x Q) and p (Q x m)."""
    eta = a[None, :] * (nodes[:, None] - b[None, :])  # Q x m
    log_f = s @ eta.T - np.logaddexp(0.0, eta).sum(axis=1)[None, :] + log_w[None, :]  # n x Q
    log_l = special.logsumexp(log_f, axis=1)
    return log_l, np.exp(log_f - log_l[:, None]), special.expit(eta)


def fit_2pl(scores: np.ndarray, prior: IrtPrior) -> IrtFit:
    """Fit a 2PL to a (students x items) matrix of scores in [0, 1] (binary or fractional)."""
    s = np.clip(np.asarray(scores, float), 0.0, 1.0)
    m = s.shape[1]
    nodes, weights = hermegauss(prior.quadrature_points)  # probabilists' Hermite: weight exp(-x^2 / 2)
    log_w = np.log(weights / weights.sum())

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        log_a, b = x[:m], x[m:]
        a = np.exp(log_a)
        log_l, post, p = _posterior(s, a, b, nodes, log_w)
        # d log L_i / d eta_qj = post_iq (s_ij - p_qj), summed over students:
        resid = post.T @ s - post.sum(axis=0)[:, None] * p  # Q x m
        g_a = np.sum(resid * (nodes[:, None] - b[None, :]), axis=0)
        g_b = -a * resid.sum(axis=0)
        nll = -float(log_l.sum()) + 0.5 * float(np.sum(log_a ** 2) / prior.sd_log_a ** 2
                                                + np.sum(b ** 2) / prior.sd_b ** 2)
        grad = np.concatenate([-a * g_a + log_a / prior.sd_log_a ** 2, -g_b + b / prior.sd_b ** 2])
        return nll, grad

    b0 = np.clip(-special.logit(np.clip(s.mean(axis=0), 0.05, 0.95)), -prior.b_max, prior.b_max)
    bounds = [(math.log(prior.a_min), math.log(prior.a_max))] * m + [(-prior.b_max, prior.b_max)] * m
    res = optimize.minimize(objective, np.concatenate([np.zeros(m), b0]), jac=True, method="L-BFGS-B",
                            bounds=bounds, options={"maxiter": prior.max_iter})
    a, b = np.exp(res.x[:m]), res.x[m:]
    log_l, post, _ = _posterior(s, a, b, nodes, log_w)
    return IrtFit(theta=post @ nodes, a=a, b=b, converged=bool(res.success), message=str(res.message),
                  marginal_log_likelihood=float(log_l.sum()))


def risk_matrix(scores: np.ndarray, fit: IrtFit) -> np.ndarray:
    """Risk_ij = |s_ij - p_ij| with the raw (unclipped) normalised AI scores (Cvengros & Kortemeyer, Eq. 2)."""
    return np.abs(np.asarray(scores, float) - fit.expected())


def compare_with_girth(scores: np.ndarray, fit: IrtFit) -> dict[str, float | int | None]:
    """Cross-check: girth's marginal-ML 2PL on the scores binarised at 0.5, against our fit.

    Items every student passes or fails carry no information for girth and are left out; the
    Spearman correlations of the item parameters say whether both fits order the items alike.
    """
    import girth

    binary = (np.asarray(scores, float) >= 0.5).astype(int).T  # girth wants items x students
    informative = (binary.min(axis=1) == 0) & (binary.max(axis=1) == 1)
    out: dict[str, float | int | None] = {"n_items": int(informative.sum()), "spearman_a": None, "spearman_b": None}
    if informative.sum() < 3 or binary.shape[1] < 3:
        return out
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        est = girth.twopl_mml(binary[informative])
    for name, ours, theirs in (("a", fit.a[informative], est["Discrimination"]),
                               ("b", fit.b[informative], est["Difficulty"])):
        if np.all(np.isfinite(theirs)) and np.ptp(ours) > 0 and np.ptp(theirs) > 0:
            out[f"spearman_{name}"] = float(stats.spearmanr(ours, theirs).statistic)
    return out
