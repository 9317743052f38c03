"""Figures of Cvengros & Kortemeyer: AI vs human scatter with regression (Fig. 10-12, 14, 15) and the risk matrix (Fig. 13)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402


def scatter_panel(ax: plt.Axes, human: np.ndarray, ai: np.ndarray, title: str) -> dict[str, float] | None:
    """Scatter AI (y) against human (x) points, the least-squares line and the identity line.

    Returns the line drawn (slope, offset, r2), or None when it is undefined (fewer than 2 points or
    no spread); the legend shows the same numbers.
    """
    human, ai = np.asarray(human, float), np.asarray(ai, float)
    ax.scatter(human, ai, s=14, alpha=0.7, color="tab:blue", edgecolors="none")
    lo = float(min(human.min(initial=0), ai.min(initial=0)))
    hi = float(max(human.max(initial=1), ai.max(initial=1)))
    pad = 0.04 * (hi - lo)
    xs = np.array([lo - pad, hi + pad])
    ax.plot(xs, xs, ls=":", color="0.5", lw=1, label="AI = human")
    fit = None
    if human.size >= 2 and np.ptp(human) > 0 and np.ptp(ai) > 0:
        line = stats.linregress(human, ai)
        fit = {"slope": float(line.slope), "offset": float(line.intercept), "r2": float(line.rvalue ** 2)}
        ax.plot(xs, fit["slope"] * xs + fit["offset"], color="tab:red", lw=1.5,
                label=f"slope {fit['slope']:.2f}, offset {fit['offset']:.2f}, $R^2$ {fit['r2']:.2f}")
    ax.set_xlim(*xs)
    ax.set_ylim(*xs)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("human points", fontsize=8)
    ax.set_ylabel("AI points", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, loc="upper left")
    return fit


def scatter_grid(panels: list[tuple[str, np.ndarray, np.ndarray]], path: str | Path, dpi: int,
                 columns: int = 3) -> list[dict | None]:
    """One scatter panel per (title, human, ai); returns the lines drawn, panel by panel."""
    cols = min(columns, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.4 * rows), squeeze=False)
    fits = [scatter_panel(ax, h, a, title) for ax, (title, h, a) in zip(axes.flat, panels, strict=False)]
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return fits


def risk_heatmap(risk: np.ndarray, items: list[str], students: list[str], path: str | Path, dpi: int) -> None:
    """Fig. 13: Risk_ij with items as rows and students as columns, blue (expected) to red; > 1 dark red."""
    cmap = matplotlib.colormaps["jet"].with_extremes(over="#4d0000")
    n_items, n_students = risk.shape[1], risk.shape[0]
    fig, ax = plt.subplots(figsize=(min(18, 2.5 + 0.12 * n_students), min(14, 1.5 + 0.3 * n_items)))
    im = ax.imshow(risk.T, aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks(range(n_items), items, fontsize=7)
    if n_students <= 60:
        ax.set_xticks(range(n_students), students, rotation=90, fontsize=6)
    else:
        ax.set_xticks([])
    ax.set_xlabel("students")
    ax.set_ylabel("items")
    fig.colorbar(im, ax=ax, extend="max", label="Risk = |s - p|")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def sweep_plot(threshold_sweep: list[dict], risk_sweep: list[dict], path: str | Path, dpi: int) -> None:
    """Coverage and MAE on accepted items as the partial-credit threshold and the risk bound move."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, rows, key, label in ((axes[0], threshold_sweep, "threshold", "threshold t (accept AI fraction >= t)"),
                                 (axes[1], risk_sweep, "risk", "risk bound r (accept risk <= r)")):
        x = [r[key] for r in rows]
        ax.plot(x, [r["accepted"] for r in rows], "o-", color="tab:blue", label="accepted share")
        ax.set_xlabel(label, fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("accepted share", fontsize=8)
        twin = ax.twinx()
        twin.plot(x, [np.nan if r["mae"] is None else r["mae"] for r in rows], "s--", color="tab:red",
                  label="MAE on accepted (points)")
        twin.set_ylabel("MAE (points)", fontsize=8)
        twin.set_ylim(bottom=0)
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="lower center",
                  bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
