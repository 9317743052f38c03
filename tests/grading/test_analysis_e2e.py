"""scripts/analyze_grades.py end to end on a tiny CSV pair; analysis.json's names and numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from grading.analysis import analyze
from grading.analysis.io import load_grades
from inkbase.cli import compose
from inkbase.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "analyze_grades.py"
TYPES = {"Q1": "numerical", "Q2": "short_answer", "Q3": "graphing", "Q4": "drawing", "Q5": "multiple_choice"}
MAX = {"Q1": 2.0, "Q2": 1.0, "Q3": 2.0, "Q4": 1.0, "Q5": 1.0}

RELIABILITY_KEYS = {"k", "icc_a1", "icc_ak", "s_w", "rc", "kendall_w", "lin_ccc_median", "lin_ccc_iqr", "sd_median",
                    "sd_iqr"}
TYPE_KEYS = {"n_parts", "n_samples", "n_classes", "accuracy", "precision", "recall", "f1", "normed_f1"}


def make_tables(tmp_path: Path, runs: int = 3) -> tuple[Path, Path, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(11)
    human, ai = [], []
    for s in range(10):
        ability = rng.uniform()
        for item, mx in MAX.items():
            h = float(np.round(ability * mx * 4 + rng.integers(-1, 2)) / 4)
            h = min(max(h, 0.0), mx)
            human.append({"student_id": f"S{s:02d}", "item_id": item, "points": h, "max_points": mx,
                          "problem_type": TYPES[item]})
            for r in range(1, runs + 1):
                a = h + 0.25 * rng.integers(-2, 3) if TYPES[item] in ("graphing", "drawing") else h + 0.25 * (
                    rng.random() < 0.3) * rng.choice([-1, 1])
                ai.append({"student_id": f"S{s:02d}", "item_id": item, "run": r, "points": a, "max_points": mx})
    human_df, ai_df = pd.DataFrame(human), pd.DataFrame(ai)
    if runs == 1:
        ai_df = ai_df.drop(columns="run")
    ai_path, human_path = tmp_path / "ai.csv", tmp_path / "human.csv"
    ai_df.to_csv(ai_path, index=False)
    human_df.to_csv(human_path, index=False)
    return ai_path, human_path, ai_df, human_df


def run_analysis(ai: Path, human: Path, out: Path, *extra: str) -> dict:
    cfg = compose("analyze_grades", [f"ai={ai}", f"human={human}", f"out_dir={out}", *extra])
    analyze.run(cfg)
    text = (out / "analysis.json").read_text()
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"analysis.json holds {c}"))


def matrix(df: pd.DataFrame) -> np.ndarray:
    return df.pivot(index="student_id", columns="item_id", values="points").sort_index()[list(MAX)].to_numpy()


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """The script itself, run once on three AI runs; the tests below read what it wrote."""
    tmp = tmp_path_factory.mktemp("three")
    ai, human, ai_df, human_df = make_tables(tmp)
    out = tmp / "out"
    done = subprocess.run([sys.executable, str(SCRIPT), f"ai={ai}", f"human={human}", f"out_dir={out}",
                           "figures.dpi=60"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    res = json.loads((out / "analysis.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON holds {c}"))
    return res, ai_df, human_df, out


def test_analysis_json_names(three_runs):
    res, *_ = three_runs
    assert {"out_of_range_points", "reliability", "agreement", "threshold_sweep", "irt", "risk_sweep",
            "problem_type_filter"} <= set(res)
    assert set(res["reliability"]) == {"total", "item"}
    assert set(res["reliability"]["total"]) == RELIABILITY_KEYS
    assert set(res["reliability"]["item"]) == {"icc_a1", "icc_ak", "s_w", "rc"}
    assert {"n", "pearson_r", "mae", "rmse", "slope", "offset", "r2"} <= set(res["agreement"]["total"])
    assert {"n", "mae"} <= set(res["agreement"]["item"])
    assert set(res["agreement"]["by_problem_type"]) == {*TYPES.values(), "all"}
    assert all(set(v) == TYPE_KEYS for v in res["agreement"]["by_problem_type"].values())
    assert [r["threshold"] for r in res["threshold_sweep"]] == pytest.approx(np.linspace(0, 1, 11))
    assert all(set(r) == {"threshold", "accepted", "mae", "under", "under_gt_0.25", "over", "bias"}
               for r in res["threshold_sweep"])
    assert set(res["irt"]["theta"]) == {f"S{s:02d}" for s in range(10)}
    assert set(res["irt"]["a"]) == set(res["irt"]["b"]) == set(MAX)
    assert [r["risk"] for r in res["risk_sweep"]] == pytest.approx(np.linspace(0, 1, 11))
    assert all(set(r) == {"risk", "accepted", "mae", "bias", "r2_totals"} for r in res["risk_sweep"])
    ptf = res["problem_type_filter"]
    assert ptf["excluded_items"] == ["Q3", "Q4"]
    assert {"type", "type+threshold", "type+risk", "type+threshold+risk"} <= set(ptf)


def test_outputs_written(three_runs):
    *_, out = three_runs
    for stem in ("table1_quality", "table2_threshold_sweep", "table3_quality_threshold", "table4_quality_risk",
                 "table_reliability", "table_risk_sweep", "table_filters"):
        for ext in ("md", "tex", "csv"):
            assert (out / f"{stem}.{ext}").stat().st_size > 0
    for fig in ("scatter_problems", "scatter_filters", "risk_matrix", "sweeps"):
        assert (out / f"{fig}.png").read_bytes()[:4] == b"\x89PNG"
    table2 = pd.read_csv(out / "table2_threshold_sweep.csv")
    assert list(table2.columns) == ["Threshold t", "Accepted", "MAE Pts", "Under", "Under > 0.25 Pts", "Over",
                                    "Bias Pts"]
    table1 = pd.read_csv(out / "table1_quality.csv")
    assert table1["normed F1"].is_monotonic_decreasing and "All" in set(table1["Type"])
    assert json.loads((out / "metrics.json").read_text())["n_runs"] == 3


def test_numbers_against_independent_computation(three_runs):
    res, ai_df, human_df, _ = three_runs
    ai = matrix(ai_df[ai_df.run == 1])
    human = matrix(human_df)
    mx = np.array(list(MAX.values()))
    a_tot, h_tot = ai.sum(1), human.sum(1)
    fit = stats.linregress(h_tot, a_tot)
    assert res["agreement"]["total"]["slope"] == pytest.approx(fit.slope, abs=1e-6)
    assert res["agreement"]["total"]["r2"] == pytest.approx(fit.rvalue ** 2, abs=1e-6)
    assert res["agreement"]["item"]["mae"] == pytest.approx(np.abs(ai - human).mean())
    assert res["out_of_range_points"] == int(((ai_df.points > ai_df.max_points) | (ai_df.points < 0)).sum())
    # Risk sweep from the published 2PL parameters.
    students = sorted(res["irt"]["theta"])
    theta = np.array([res["irt"]["theta"][s] for s in students])
    a = np.array([res["irt"]["a"][i] for i in MAX])
    b = np.array([res["irt"]["b"][i] for i in MAX])
    risk = np.abs(ai / mx - 1 / (1 + np.exp(-a * (theta[:, None] - b))))
    for row in res["risk_sweep"]:
        acc = risk <= row["risk"] + 1e-9
        assert row["accepted"] == pytest.approx(acc.mean())
        if acc.any():
            assert row["mae"] == pytest.approx(np.abs(ai - human)[acc].mean())
            assert row["bias"] == pytest.approx((ai - human)[acc].mean())
    # Problem-type filter with threshold and risk, recomputed.
    keep = np.array([TYPES[i] not in ("graphing", "drawing") for i in MAX])[None, :] & (ai / mx >= 0.5) & (risk <= 0.5)
    rows = keep.any(1)
    a_t, h_t = np.where(keep, ai, 0).sum(1)[rows], np.where(keep, human, 0).sum(1)[rows]
    got = res["problem_type_filter"]["type+threshold+risk"]
    assert got["accepted"] == pytest.approx(keep.mean())
    assert got["total"]["slope"] == pytest.approx(stats.linregress(h_t, a_t).slope, abs=1e-6)
    # Reliability reads the runs in order and on totals.
    totals = np.stack([matrix(ai_df[ai_df.run == r]).sum(1) for r in (1, 2, 3)], axis=1)
    assert res["reliability"]["total"]["sd_median"] == pytest.approx(np.median(totals.std(axis=1, ddof=1)))


def test_single_run_has_no_reliability(tmp_path):
    ai, human, *_ = make_tables(tmp_path, runs=1)
    res = run_analysis(ai, human, tmp_path / "one", "figures.dpi=50")
    assert res["reliability"] is None and res["runs"] == ["1"]
    assert not (tmp_path / "one" / "table_reliability.md").exists()
    assert (tmp_path / "one" / "table1_quality.md").exists()


def test_ai_run_choice(tmp_path):
    ai, human, ai_df, human_df = make_tables(tmp_path)
    cfg = compose("analyze_grades", [f"ai={ai}", f"human={human}", "ai_run=2"])
    res = analyze.analyze(load_grades(ai, human), analyze.AnalysisOptions.from_config(cfg)).result
    assert res["ai_run"] == "2"
    a2 = matrix(ai_df[ai_df.run == 2])
    assert res["agreement"]["item"]["mae"] == pytest.approx(np.abs(a2 - matrix(human_df)).mean())
    cfg = compose("analyze_grades", [f"ai={ai}", f"human={human}", "ai_run=7"])
    with pytest.raises(ConfigError, match="not a run of the AI table"):
        analyze.analyze(load_grades(ai, human), analyze.AnalysisOptions.from_config(cfg))
    with pytest.raises(ConfigError, match="filters.threshold"):
        analyze.AnalysisOptions.from_config(compose("analyze_grades", ["ai=a", "human=h", "filters.threshold=1.5"]))


def test_script_reports_bad_input_in_one_line(tmp_path):
    ai, human, ai_df, _ = make_tables(tmp_path)
    bad = ai_df.copy().astype({"points": object})
    bad.loc[5, "points"] = "abc"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    err = subprocess.run([sys.executable, str(SCRIPT), f"ai={tmp_path / 'bad.csv'}", f"human={human}",
                          f"out_dir={tmp_path / 'out'}"], capture_output=True, text=True, timeout=120)
    assert err.returncode == 2
    assert err.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'bad.csv'}: row 7: points: 'abc' is not a number"
    assert "Traceback" not in err.stderr
    assert not (tmp_path / "out" / "run.json").exists()  # nothing but the log was written
