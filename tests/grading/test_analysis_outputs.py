"""Figures draw the numbers they claim; tables are laid out and rounded like Cvengros & Kortemeyer's."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from grading.analysis import figures, tables


def test_scatter_panel_draws_the_least_squares_line():
    rng = np.random.default_rng(0)
    human = rng.uniform(0, 10, 30)
    ai = 0.8 * human + 1 + rng.normal(0, 0.5, 30)
    fig, ax = plt.subplots()
    fit = figures.scatter_panel(ax, human, ai, "total")
    slope, offset = np.polyfit(human, ai, 1)
    assert fit["slope"] == pytest.approx(slope) and fit["offset"] == pytest.approx(offset)
    assert fit["r2"] == pytest.approx(np.corrcoef(human, ai)[0, 1] ** 2)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"slope {slope:.2f}, offset {offset:.2f}, $R^2$ {fit['r2']:.2f}" in legend
    x, y = ax.lines[1].get_data()  # the regression line passes through its own equation
    assert y == pytest.approx(slope * x + offset)
    assert figures.scatter_panel(ax, np.ones(3), np.arange(3.0), "flat") is None  # no spread, no line
    plt.close(fig)


def test_scatter_grid_and_heatmap_files(tmp_path):
    panels = [("a", np.arange(5.0), np.arange(5.0) * 2), ("b", np.arange(4.0), np.arange(4.0))]
    fits = figures.scatter_grid(panels, tmp_path / "s.png", dpi=40)
    assert [f["slope"] for f in fits] == pytest.approx([2.0, 1.0])
    risk = np.array([[0.1, 1.4], [0.5, 0.0], [0.9, 0.3]])
    figures.risk_heatmap(risk, ["Q1", "Q2"], ["S1", "S2", "S3"], tmp_path / "r.png", dpi=40)
    for name in ("s.png", "r.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_quality_table_sorted_and_labelled():
    row = {"n_parts": 1, "n_samples": 4, "n_classes": 3, "accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5}
    by_type = {"long_answer": {**row, "normed_f1": 0.2}, "graphing": {**row, "normed_f1": -0.1},
               "all": {**row, "normed_f1": 0.4}, "drawing": {**row, "normed_f1": None}}
    df = tables.quality_table(by_type)
    assert list(df["Type"]) == ["All", "Long Answer", "Graphing", "Drawing"]
    assert list(df.columns) == tables.QUALITY_COLUMNS


def test_written_tables_round_like_the_paper(tmp_path):
    sweep = [{"threshold": 0.0, "accepted": 1.0, "mae": 0.2134, "under": 0.24, "under_gt_0.25": 0.151, "over": 0.14,
              "bias": -0.0812}]
    csv, md, tex = tables.write_table(tables.threshold_table(sweep), tmp_path, "t2", "Table 2: sweep.")
    assert pd.read_csv(csv).iloc[0]["MAE Pts"] == pytest.approx(0.2134)
    text = md.read_text()
    assert " 100% |" in text and " 0.21 |" in text and " 15% |" in text and " -0.08 |" in text
    assert "100\\%" in tex.read_text() and "\\caption{Table 2: sweep.}" in tex.read_text()
