"""Every number of the analysis against a published example, a hand calculation or an independent computation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from grading.analysis import quality
from grading.analysis.irt import IrtFit, IrtPrior, compare_with_girth, fit_2pl, risk_matrix
from grading.analysis.reliability import (
    RC_FACTOR,
    icc_absolute,
    kendall_w,
    lin_ccc,
    reliability,
    within_target_sd,
)

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges.
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)

PRIOR = IrtPrior(sd_log_a=1.0, sd_b=3.0, a_min=0.1, a_max=8.0, b_max=8.0, quadrature_points=61, max_iter=2000)


def mean_squares(x: np.ndarray) -> tuple[float, float, float, float]:
    """Two-way ANOVA mean squares written out: between targets, within targets, between raters, residual."""
    n, k = x.shape
    grand = x.mean()
    ss_rows = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(axis=0) - grand) ** 2).sum()
    ss_total = ((x - grand) ** 2).sum()
    ss_err = ss_total - ss_rows - ss_cols
    return (ss_rows / (n - 1), (ss_total - ss_rows) / (n * (k - 1)), ss_cols / (k - 1),
            ss_err / ((n - 1) * (k - 1)))


def mcgraw_wong_a(x: np.ndarray) -> tuple[float, float]:
    """ICC(A,1) and ICC(A,k) from McGraw & Wong (1996), Table 4, case 2A."""
    n, k = x.shape
    msr, _, msc, mse = mean_squares(x)
    single = (msr - mse) / (msr + (k - 1) * mse + k / n * (msc - mse))
    average = (msr - mse) / (msr + (msc - mse) / n)
    return single, average


def test_icc_matches_shrout_fleiss_published_values():
    single, average = icc_absolute(SHROUT_FLEISS)
    assert single == pytest.approx(0.29, abs=0.005)  # ICC(2,1) in Shrout & Fleiss
    assert average == pytest.approx(0.62, abs=0.005)  # ICC(2,4)


def test_icc_matches_mean_squares_on_random_data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(25, 1)) * 3 + rng.normal(size=(1, 4)) + rng.normal(size=(25, 4))
    assert icc_absolute(x) == pytest.approx(mcgraw_wong_a(x), abs=1e-10)


def test_within_target_sd_and_repeatability_coefficient():
    # Shrout & Fleiss report the one-way within-target mean square WMS = 6.26 for their data.
    assert within_target_sd(SHROUT_FLEISS) ** 2 == pytest.approx(6.26, abs=0.005)
    # Pooled per-target sample variance is the same quantity, computed another way.
    assert within_target_sd(SHROUT_FLEISS) ** 2 == pytest.approx(SHROUT_FLEISS.var(axis=1, ddof=1).mean())
    # Cvengros & Kortemeyer, section 4.1: S_w = 1.92 points gives RC = 5.33 points.
    assert RC_FACTOR * 1.92 == pytest.approx(5.33, abs=0.01)


# Four students' totals in three runs (students x runs) with ties in runs 2 and 3. By hand: rank sums
# 11.5, 9, 6, 3.5 (mean 7.5), S = 36.5; tie terms 12 (run 2) + 6 (run 3) = 18;
# W = 12 S / (m^2 (n^3 - n) - m sum T) = 438 / (9 * 60 - 3 * 18) = 73 / 81.
TIED = np.array([[10, 9, 10], [8, 9, 7], [6, 5, 7], [2, 5, 1]], float)


def test_kendall_w_with_ties_hand_calculation():
    assert kendall_w(TIED) == pytest.approx(73 / 81, abs=1e-12)
    assert 73 / 81 != pytest.approx(438 / 540)  # the uncorrected value differs, so the correction is tested


def test_kendall_w_matches_r_irr_published_output():
    # 12 items ranked by 5 raters (rater 2 ties items 3 and 11); R irr::kendall(x, correct = TRUE)
    # prints Wt = 0.735 and Chisq(11) = 40.5 for this scorecard.
    x = np.array([[4, 1, 1, 2, 1], [3, 2, 2, 3, 6], [1, 6, 6, 5, 2], [5, 3, 3, 6, 5], [6, 5, 4, 7, 3],
                  [9, 4, 5, 1, 8], [8, 8, 8, 4, 4], [2, 9, 7, 10, 9], [7, 10, 10, 8, 7], [11, 11, 9, 9, 10],
                  [10, 6, 11, 11, 11], [12, 12, 12, 12, 12]], float)
    w = kendall_w(x)
    assert w == pytest.approx(0.735, abs=0.0005)
    assert w * 5 * 11 == pytest.approx(40.5, abs=0.05)


def test_kendall_w_equals_scipy_friedman_statistic():
    rng = np.random.default_rng(5)
    x = np.round(rng.normal(size=(12, 1)) * 2 + rng.normal(size=(12, 5)))  # rounding makes ties
    n, m = x.shape
    chi2 = stats.friedmanchisquare(*x).statistic  # students are the treatments, runs the blocks
    assert kendall_w(x) == pytest.approx(chi2 / (m * (n - 1)), rel=1e-10)


def test_kendall_w_extremes():
    assert kendall_w(np.array([[1, 1, 1], [2, 2, 2], [3, 3, 3.0]])) == pytest.approx(1.0)
    assert kendall_w(np.array([[1, 2], [2, 1.0]])) == pytest.approx(0.0)
    assert kendall_w(np.ones((4, 3))) is None  # every run ties every student: undefined


def test_lin_ccc_hand_values_and_decomposition():
    x = np.array([1, 2, 3, 4, 5], float)
    # y = x + 1: covariance 2, variances 2 and 2, squared mean shift 1 -> 2 * 2 / (2 + 2 + 1).
    assert lin_ccc(x, x + 1) == pytest.approx(0.8)
    assert lin_ccc(x, x) == pytest.approx(1.0)
    assert lin_ccc(x, 6 - x) == pytest.approx(-1.0)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=40), rng.normal(size=40) * 1.5 + 0.3
    # Lin (1989): rho_c = r * C_b, C_b = 2 / (v + 1/v + u^2), v = s_a / s_b, u = (mean_a - mean_b) / sqrt(s_a s_b).
    v = a.std() / b.std()
    u = (a.mean() - b.mean()) / math.sqrt(a.std() * b.std())
    assert lin_ccc(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1] * 2 / (v + 1 / v + u ** 2))
    assert lin_ccc(np.ones(3), np.ones(3)) is None


def test_reliability_report_levels():
    rng = np.random.default_rng(2)
    base = rng.integers(0, 5, size=(10, 3)).astype(float)
    runs = [base + rng.choice([-0.5, 0, 0, 0.5], size=base.shape) for _ in range(3)]
    rel = reliability(runs)
    totals = np.stack([r.sum(axis=1) for r in runs], axis=1)
    cells = np.stack([r.reshape(-1) for r in runs], axis=1)
    assert rel["total"]["k"] == 3
    assert (rel["total"]["icc_a1"], rel["total"]["icc_ak"]) == pytest.approx(mcgraw_wong_a(totals))
    assert (rel["item"]["icc_a1"], rel["item"]["icc_ak"]) == pytest.approx(mcgraw_wong_a(cells))
    assert rel["total"]["s_w"] == pytest.approx(math.sqrt(mean_squares(totals)[1]))
    assert rel["item"]["rc"] == pytest.approx(1.96 * math.sqrt(2) * math.sqrt(mean_squares(cells)[1]))
    ccc = [lin_ccc(totals[:, i], totals[:, j]) for i, j in itertools.combinations(range(3), 2)]
    assert rel["total"]["lin_ccc_median"] == pytest.approx(np.median(ccc))
    assert rel["total"]["lin_ccc_iqr"] == pytest.approx(np.percentile(ccc, 75) - np.percentile(ccc, 25))
    sd = [stats.tstd(row) for row in totals]
    assert rel["total"]["sd_median"] == pytest.approx(np.median(sd))
    assert rel["total"]["sd_iqr"] == pytest.approx(stats.iqr(sd))
    assert reliability(runs[:1]) is None


def test_total_agreement_against_numpy():
    rng = np.random.default_rng(4)
    human = rng.integers(0, 3, size=(15, 4)).astype(float)
    ai = human + rng.choice([-0.5, 0, 0.5], size=human.shape)
    got = quality.total_agreement(ai, human)
    a, h = ai.sum(axis=1), human.sum(axis=1)
    slope, offset = np.polyfit(h, a, 1)
    assert got["slope"] == pytest.approx(slope, abs=1e-6)
    assert got["offset"] == pytest.approx(offset, abs=1e-6)
    assert got["pearson_r"] == pytest.approx(np.corrcoef(a, h)[0, 1], abs=1e-6)
    assert got["r2"] == pytest.approx(np.corrcoef(a, h)[0, 1] ** 2, abs=1e-6)
    assert got["mae"] == pytest.approx(np.abs(a - h).mean(), abs=1e-6)
    assert got["rmse"] == pytest.approx(np.sqrt(((a - h) ** 2).mean()), abs=1e-6)
    # With a mask, totals run over accepted cells only and students with none are left out.
    mask = np.zeros_like(ai, bool)
    mask[:5, :2] = True
    masked = quality.total_agreement(ai, human, mask)
    assert masked["n"] == 5
    assert masked["mae"] == pytest.approx(np.abs(ai[:5, :2].sum(1) - human[:5, :2].sum(1)).mean(), abs=1e-6)


def test_classification_hand_calculation():
    # Classes 0, 0.5, 1: F1 per class 1, 0.5, 0.5 (see the derivation in the comment of each line).
    human = [0, 0.5, 1, 1, 0.5]
    ai = [0, 1, 1, 0.5, 0.5]
    got = quality.classification(ai, human)
    assert got["n_classes"] == 3 and got["n_samples"] == 5
    assert got["accuracy"] == pytest.approx(3 / 5)
    assert got["precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)  # class 0: 1/1, 0.5: 1/2, 1: 1/2
    assert got["recall"] == pytest.approx((1 + 0.5 + 0.5) / 3)  # class 0: 1/1, 0.5: 1/2, 1: 1/2
    assert got["f1"] == pytest.approx(2 / 3)
    assert got["normed_f1"] == pytest.approx((2 / 3 - 1 / 3) / (1 - 1 / 3))


def test_classification_class_only_the_ai_uses_and_float_noise():
    # Class 0.25 is only predicted: precision 0, recall 0/0 -> 0, F1 0. Class 1: P 1, R 1/2, F1 2/3.
    got = quality.classification([1, 0.25], [1, 1])
    assert got["n_classes"] == 2
    assert got["precision"] == pytest.approx(0.5)
    assert got["recall"] == pytest.approx(0.25)
    assert got["f1"] == pytest.approx(1 / 3)
    assert got["normed_f1"] == pytest.approx((1 / 3 - 1 / 2) / (1 / 2))
    noisy = quality.classification([0.1 + 0.2], [0.3])
    assert noisy["n_classes"] == 1 and noisy["accuracy"] == 1.0 and noisy["normed_f1"] is None


def test_by_problem_type_groups_and_all_row():
    human = np.array([[1, 0, 2], [1, 1, 0]], float)
    ai = np.array([[1, 0, 1], [0, 1, 0]], float)
    got = quality.by_problem_type(ai, human, ["mc", "mc", "numerical"])
    assert set(got) == {"mc", "numerical", "all"}
    assert got["mc"]["n_parts"] == 2 and got["mc"]["n_samples"] == 4
    assert got["mc"]["accuracy"] == pytest.approx(3 / 4)
    assert got["numerical"]["n_classes"] == 3  # 0, 1 (AI) and 2 (human)
    assert got["all"]["n_samples"] == 6 and got["all"]["accuracy"] == pytest.approx(4 / 6)


def test_threshold_sweep_hand_table():
    max_points = np.array([1.0, 2.0])
    ai = np.array([[1.0, 0.5], [0.0, 2.0]])  # AI fractions 1, 0.25, 0, 1
    human = np.array([[1.0, 1.0], [0.5, 1.0]])  # differences AI - human: 0, -0.5, -0.5, +1
    rows = {r["threshold"]: r for r in quality.threshold_sweep(ai, human, max_points, 0.1)}
    assert sorted(rows) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert rows[0.0] == pytest.approx({"threshold": 0.0, "accepted": 1.0, "mae": 0.5, "under": 0.5,
                                       "under_gt_0.25": 0.5, "over": 0.25, "bias": 0.0})
    assert rows[0.2] == pytest.approx({"threshold": 0.2, "accepted": 0.75, "mae": 0.5, "under": 1 / 3,
                                       "under_gt_0.25": 1 / 3, "over": 1 / 3, "bias": 0.5 / 3})
    assert rows[1.0] == pytest.approx({"threshold": 1.0, "accepted": 0.5, "mae": 0.5, "under": 0.0,
                                       "under_gt_0.25": 0.0, "over": 0.5, "bias": 0.5})
    # A fraction exactly on the threshold is accepted; t = 0 accepts negative AI points too.
    assert quality.threshold_mask(ai, max_points, 0.25)[0, 1]
    assert quality.threshold_mask(np.array([[-1.0]]), np.array([1.0]), 0.0).all()


def test_under_by_more_than_a_notch_is_strict():
    row = quality.threshold_row(np.array([[0.75, 0.5]]), np.array([[1.0, 1.0]]), np.ones((1, 2), bool))
    assert row["under"] == 1.0 and row["under_gt_0.25"] == 0.5  # -0.25 is one notch, not more


def test_type_mask_normalises_names():
    keep = quality.type_mask((2, 4), ["Graphing", "long answer", "drawing", None], ["graphing", "Drawing"])
    assert keep.tolist() == [[False, True, False, True]] * 2


def simulate_2pl(n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    theta, a, b = rng.normal(size=n), rng.uniform(0.7, 2.0, m), rng.normal(size=m)
    p = 1 / (1 + np.exp(-a[None, :] * (theta[:, None] - b[None, :])))
    return (rng.random(p.shape) < p).astype(float), theta, a, b


def test_irt_binary_fit_matches_girth_mml():
    import girth

    x, theta, a, b = simulate_2pl(400, 10, seed=0)
    ref = girth.twopl_mml(x.T.astype(int))  # independent marginal-ML 2PL on the same binary data
    # Nearly flat priors: the same marginal likelihood, so the same estimates up to quadrature.
    flat = fit_2pl(x, IrtPrior(sd_log_a=100.0, sd_b=100.0, a_min=0.01, a_max=20.0, b_max=20.0,
                               quadrature_points=61, max_iter=2000))
    assert flat.converged
    assert flat.b == pytest.approx(ref["Difficulty"], abs=0.05)
    assert flat.a == pytest.approx(ref["Discrimination"], abs=0.05)
    # The default priors shrink extreme items a little, nothing more.
    fit = fit_2pl(x, PRIOR)
    assert fit.a == pytest.approx(ref["Discrimination"], rel=0.15)
    assert fit.b == pytest.approx(ref["Difficulty"], abs=0.1)
    assert np.corrcoef(fit.b, b)[0, 1] > 0.98
    assert np.corrcoef(fit.theta, theta)[0, 1] > 0.85
    check = compare_with_girth(x, fit)
    assert check["n_items"] == 10 and check["spearman_b"] > 0.95


def test_irt_fractional_scores_recover_difficulty_and_ability():
    rng = np.random.default_rng(7)
    theta, a, b = rng.normal(size=300), rng.uniform(0.7, 2.0, 8), rng.normal(size=8)
    p = 1 / (1 + np.exp(-a[None, :] * (theta[:, None] - b[None, :])))
    s = (rng.random((4, *p.shape)) < p).mean(axis=0)  # quarter-point partial credit
    fit = fit_2pl(s, PRIOR)
    assert np.corrcoef(fit.b, b)[0, 1] > 0.98
    assert np.corrcoef(fit.theta, theta)[0, 1] > 0.9


def test_irt_is_deterministic_and_finite_when_ill_conditioned():
    x, *_ = simulate_2pl(6, 4, seed=1)
    one, two = fit_2pl(x, PRIOR), fit_2pl(x, PRIOR)
    assert np.array_equal(one.a, two.a) and np.array_equal(one.b, two.b) and np.array_equal(one.theta, two.theta)
    solved = fit_2pl(np.ones((3, 2)), PRIOR)  # everybody gets everything: b would run off to -infinity
    assert np.all(np.isfinite(solved.b)) and np.all(np.abs(solved.b) <= PRIOR.b_max)
    assert np.all((solved.a >= PRIOR.a_min - 1e-9) & (solved.a <= PRIOR.a_max + 1e-9))


def test_risk_is_distance_to_the_2pl_expectation_with_raw_scores():
    fit = IrtFit(theta=np.array([0.0, 1.0]), a=np.array([1.0, 2.0]), b=np.array([0.0, 1.0]), converged=True,
                 message="", marginal_log_likelihood=0.0)
    s = np.array([[1.0, 0.0], [1.5, 0.25]])  # 1.5: AI gave more than the maximum
    # p = 1 / (1 + exp(-a (theta - b))): [[0.5, 1 / (1 + e^2)], [1 / (1 + e^-1), 0.5]]
    p = np.array([[0.5, 1 / (1 + math.exp(2))], [1 / (1 + math.exp(-1)), 0.5]])
    assert risk_matrix(s, fit) == pytest.approx(np.abs(s - p))
    assert risk_matrix(s, fit)[1, 0] > 0.5
