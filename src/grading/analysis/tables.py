"""Markdown, LaTeX and CSV tables laid out as Cvengros & Kortemeyer Tables 1-4 (plus reliability, risk and type filters).

The CSV keeps the numbers (fractions 0-1, full precision); Markdown and LaTeX round like the paper
(two decimals, shares in percent).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from grading.analysis.quality import ALL

QUALITY_COLUMNS = ["Type", "Parts", "Samples", "Classes", "Accuracy", "Precision", "Recall", "F1", "normed F1"]


def type_label(name: str) -> str:
    """'long_answer' -> 'Long Answer', as the paper's rows read."""
    return "All" if name == ALL else " ".join(w.capitalize() for w in name.replace("-", "_").split("_") if w)


def quality_table(by_type: dict[str, dict]) -> pd.DataFrame:
    """Tables 1, 3, 4: one row per problem type and ``All``, in order of decreasing normed F1."""
    rows = [[type_label(t), r["n_parts"], r["n_samples"], r["n_classes"], r["accuracy"], r["precision"],
             r["recall"], r["f1"], r["normed_f1"]] for t, r in by_type.items() if r["n_samples"] > 0]
    df = pd.DataFrame(rows, columns=QUALITY_COLUMNS)
    key = df["normed F1"].astype(float).fillna(-math.inf)
    return df.loc[key.sort_values(ascending=False, kind="stable").index].reset_index(drop=True)


def threshold_table(sweep: list[dict]) -> pd.DataFrame:
    """Table 2: the partial-credit threshold sweep."""
    return pd.DataFrame([[r["threshold"], r["accepted"], r["mae"], r["under"], r["under_gt_0.25"], r["over"],
                          r["bias"]] for r in sweep],
                        columns=["Threshold t", "Accepted", "MAE Pts", "Under", "Under > 0.25 Pts", "Over",
                                 "Bias Pts"])


def risk_table(sweep: list[dict]) -> pd.DataFrame:
    """The risk sweep of section 4.5, laid out like Table 2."""
    return pd.DataFrame([[r["risk"], r["accepted"], r["mae"], r["bias"], r["r2_totals"]] for r in sweep],
                        columns=["Risk r", "Accepted", "MAE Pts", "Bias Pts", "R2 totals"])


def reliability_table(rel: dict) -> pd.DataFrame:
    """Section 4.1's figures: totals per student and student x item cells."""
    names = [("icc_a1", "ICC(A,1)"), ("icc_ak", f"ICC(A,{rel['total']['k']})"), ("s_w", "S_w Pts"),
             ("rc", "RC Pts"), ("kendall_w", "Kendall's W"), ("lin_ccc_median", "Lin's CCC median"),
             ("lin_ccc_iqr", "Lin's CCC IQR"), ("sd_median", "SD of totals median Pts"),
             ("sd_iqr", "SD of totals IQR Pts")]
    return pd.DataFrame([[label, rel["total"].get(key), rel["item"].get(key)] for key, label in names],
                        columns=["Measure", "Total", "Item x student"])


def filter_table(filters: dict[str, dict]) -> pd.DataFrame:
    """Fig. 11-15's regressions of AI on human totals under each filter, with coverage and item errors."""
    rows = [[name, f["accepted"], f["total"]["n"], f["total"]["slope"], f["total"]["offset"], f["total"]["r2"],
             f["total"]["pearson_r"], f["item"]["mae"], f["item"]["bias"]] for name, f in filters.items()]
    return pd.DataFrame(rows, columns=["Filter", "Accepted", "Students", "Slope", "Offset", "R2", "Pearson r",
                                       "MAE Pts", "Bias Pts"])


PERCENT = {"Accepted", "Under", "Under > 0.25 Pts", "Over"}
SWEPT = {"Threshold t", "Risk r"}  # shown as the paper does: 0, 0.1, ..., 1


def _formatted(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy().astype(object)
    for col in out.columns:
        for i, v in out[col].items():
            if v is None or (isinstance(v, float) and math.isnan(v)):
                out.at[i, col] = "-"
            elif isinstance(v, float):
                text = f"{100 * v:.0f}%" if col in PERCENT else f"{v:g}" if col in SWEPT else f"{v:.2f}"
                out.at[i, col] = text[1:] if text.startswith("-") and not text.strip("-0.%") else text  # no "-0.00"
    return out


def write_table(df: pd.DataFrame, out_dir: str | Path, stem: str, caption: str) -> list[Path]:
    """Write ``<stem>.csv`` (numbers), ``<stem>.md`` and ``<stem>.tex`` (rounded like the paper)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.{ext}" for ext in ("csv", "md", "tex")]
    df.to_csv(paths[0], index=False)
    shown = _formatted(df)
    align = ["left"] + ["right"] * (len(shown.columns) - 1)
    markdown = shown.to_markdown(index=False, disable_numparse=True, colalign=align)
    paths[1].write_text(f"{caption}\n\n{markdown}\n", encoding="utf-8")
    latex = shown.to_latex(index=False, caption=caption, label=f"tab:{stem}", escape=True,
                           column_format="l" + "r" * (len(shown.columns) - 1))
    paths[2].write_text(latex, encoding="utf-8")
    return paths
