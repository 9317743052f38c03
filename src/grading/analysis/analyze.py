"""``scripts/analyze_grades.py``: the psychometric analysis of Cvengros & Kortemeyer (sections 3.3-3.5, 4) in one run folder.

Writes ``analysis.json`` (the interface: key names are read by other tools), the tables of
:mod:`grading.analysis.tables` and the figures of :mod:`grading.analysis.figures`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from grading.analysis import figures, quality, tables
from grading.analysis.io import GradeData, load_grades
from grading.analysis.irt import IrtPrior, compare_with_girth, fit_2pl, risk_matrix
from grading.analysis.reliability import reliability
from inkbase.errors import ConfigError, check_range
from inkbase.jsonio import write_json
from inkbase.runs import hydra_output_dir, start_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalysisOptions:
    ai_run: str | None
    sweep_step: float
    threshold: float
    risk: float
    graphical_types: tuple[str, ...]
    irt: IrtPrior
    dpi: int

    @classmethod
    def from_config(cls, cfg: DictConfig) -> AnalysisOptions:
        step = check_range("sweep_step", cfg.sweep_step, 0.01, 1.0)
        if abs(1 / step - round(1 / step)) > 1e-9:
            raise ConfigError("sweep_step", f"{step} does not divide 1 into equal steps")
        irt = OmegaConf.to_container(cfg.irt)
        for key in ("sd_log_a", "sd_b", "a_min", "a_max", "b_max"):
            check_range(f"irt.{key}", irt[key], 1e-3, 100.0)
        if irt["a_min"] >= irt["a_max"]:
            raise ConfigError("irt.a_min", f"{irt['a_min']} is not below irt.a_max {irt['a_max']}")
        check_range("irt.quadrature_points", irt["quadrature_points"], 5, 201)
        check_range("irt.max_iter", irt["max_iter"], 1, 100000)
        return cls(ai_run=None if cfg.ai_run is None else str(cfg.ai_run), sweep_step=step,
                   threshold=check_range("filters.threshold", cfg.filters.threshold, 0.0, 1.0),
                   risk=check_range("filters.risk", cfg.filters.risk, 0.0, 1.0),
                   graphical_types=tuple(str(t) for t in cfg.filters.graphical_types),
                   irt=IrtPrior(**irt), dpi=int(check_range("figures.dpi", cfg.figures.dpi, 50, 600)))


def _json_safe(obj: Any) -> Any:
    """NaN and infinity become null: JSON has no such numbers."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _filter_summary(ai: np.ndarray, human: np.ndarray, accepted: np.ndarray) -> dict:
    return {"accepted": float(accepted.mean()), "total": quality.total_agreement(ai, human, accepted),
            "item": quality.item_agreement(ai, human, accepted)}


@dataclass
class Analysis:
    """analysis.json's content plus what the figures need."""

    result: dict[str, Any]
    ai: np.ndarray
    risk: np.ndarray
    masks: dict[str, np.ndarray]


def analyze(data: GradeData, opts: AnalysisOptions) -> Analysis:
    runs = data.runs
    run = opts.ai_run if opts.ai_run is not None else runs[0]
    if run not in data.ai:
        raise ConfigError("ai_run", f"{run!r} is not a run of the AI table (runs: {', '.join(runs)})")
    ai, human, max_points = data.ai[run], data.human, data.max_points
    scores = ai / max_points[None, :]

    fit = fit_2pl(scores, opts.irt)
    if not fit.converged:
        log.warning("IRT fit did not converge: %s", fit.message)
    risk = risk_matrix(scores, fit)

    def risk_mask(r: float) -> np.ndarray:
        return risk <= r + quality.EPS

    risk_sweep = []
    for r in quality.sweep_values(opts.sweep_step):
        mask = risk_mask(r)
        item = quality.item_agreement(ai, human, mask)
        risk_sweep.append({"risk": r, "accepted": float(mask.mean()), "mae": item["mae"], "bias": item["bias"],
                           "r2_totals": quality.total_agreement(ai, human, mask)["r2"]})

    t_mask = quality.threshold_mask(ai, max_points, opts.threshold)
    r_mask = risk_mask(opts.risk)
    type_mask = quality.type_mask(ai.shape, data.problem_type, opts.graphical_types)
    masks = {
        "type": type_mask,
        "type+threshold": type_mask & t_mask,
        "type+risk": type_mask & r_mask,
        "type+threshold+risk": type_mask & t_mask & r_mask,
    }
    type_filter = {name: _filter_summary(ai, human, m) for name, m in masks.items()}
    result: dict[str, Any] = {
        "ai_run": run,
        "runs": runs,
        "n_students": len(data.students),
        "n_items": len(data.items),
        "out_of_range_points": len(data.out_of_range),
        "out_of_range": data.out_of_range,
        "reliability": reliability([data.ai[r] for r in runs]),
        "agreement": {
            "total": quality.total_agreement(ai, human),
            "item": quality.item_agreement(ai, human),
            "by_problem_type": quality.by_problem_type(ai, human, data.problem_type),
        },
        "threshold_sweep": quality.threshold_sweep(ai, human, max_points, opts.sweep_step),
        "irt": {
            "model": "2PL, Bernoulli likelihood on AI points / max; marginal ML items with priors, EAP abilities",
            "converged": fit.converged,
            "marginal_log_likelihood": fit.marginal_log_likelihood,
            "theta": dict(zip(data.students, fit.theta.tolist(), strict=True)),
            "a": dict(zip(data.items, fit.a.tolist(), strict=True)),
            "b": dict(zip(data.items, fit.b.tolist(), strict=True)),
            "girth_binary_check": compare_with_girth(scores, fit),
        },
        "risk_sweep": risk_sweep,
        "problem_type_filter": {
            "excluded_types": list(opts.graphical_types),
            "excluded_items": [i for i, keep in zip(data.items, type_mask[0], strict=True) if not keep],
            "threshold": opts.threshold,
            "risk": opts.risk,
            **type_filter,
        },
        "filtered": {
            "threshold": {"threshold": opts.threshold, **_filter_summary(ai, human, t_mask),
                          "by_problem_type": quality.by_problem_type(ai, human, data.problem_type, t_mask)},
            "risk": {"risk": opts.risk, **_filter_summary(ai, human, r_mask),
                     "by_problem_type": quality.by_problem_type(ai, human, data.problem_type, r_mask)},
        },
    }
    masks.update({"threshold": t_mask, "risk": r_mask})
    return Analysis(result=_json_safe(result), ai=ai, risk=risk, masks=masks)


def _problem_panels(data: GradeData, ai: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    problems = list(dict.fromkeys(data.problem))
    cols = {p: [j for j, q in enumerate(data.problem) if q == p] for p in problems}
    panels = [("total", data.human.sum(axis=1), ai.sum(axis=1))]
    return panels + [(f"problem {p}", data.human[:, c].sum(axis=1), ai[:, c].sum(axis=1)) for p, c in cols.items()]


def _masked_panel(title: str, data: GradeData, ai: np.ndarray, mask: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    keep = mask.any(axis=1)
    h = np.where(mask, data.human, 0.0).sum(axis=1)[keep]
    a = np.where(mask, ai, 0.0).sum(axis=1)[keep]
    return f"{title} ({100 * mask.mean():.0f}% accepted)", h, a


def write_outputs(data: GradeData, analysis: Analysis, opts: AnalysisOptions, out_dir: Path) -> list[Path]:
    """Tables 1-4 (+ reliability, risk sweep, filters) and the figures, next to analysis.json."""
    res, ai = analysis.result, analysis.ai
    written: list[Path] = []
    t, r = opts.threshold, opts.risk
    written += tables.write_table(tables.quality_table(res["agreement"]["by_problem_type"]), out_dir,
                                  "table1_quality", "Table 1: Multiclass quality measures for the AI grading, "
                                  "in order of decreasing normed F1.")
    written += tables.write_table(tables.threshold_table(res["threshold_sweep"]), out_dir, "table2_threshold_sweep",
                                  "Table 2: Accepted = share of items auto-graded (AI fraction >= t); MAE = mean "
                                  "absolute point error on accepted items; Under/Over = share of accepted items "
                                  "where AI is below/above the human score; Under > 0.25 Pts = share under-credited "
                                  "by more than 0.25 points; Bias Pts = mean(AI - human) on accepted items.")
    written += tables.write_table(tables.quality_table(res["filtered"]["threshold"]["by_problem_type"]), out_dir,
                                  "table3_quality_threshold", f"Table 3: Quality measures for items where the AI "
                                  f"partial credit is at least {100 * t:.0f}%, in order of decreasing normed F1.")
    written += tables.write_table(tables.quality_table(res["filtered"]["risk"]["by_problem_type"]), out_dir,
                                  "table4_quality_risk", f"Table 4: Quality measures for items whose AI partial "
                                  f"credit deviates at most {r:g} from the IRT expectation, in order of decreasing "
                                  "normed F1.")
    written += tables.write_table(tables.risk_table(res["risk_sweep"]), out_dir, "table_risk_sweep",
                                  "Risk sweep: accept items with |s - p| <= r; MAE and bias in points on accepted "
                                  "items; R2 of AI on human totals over accepted items.")
    ptf = res["problem_type_filter"]
    filters = {"none": {"accepted": 1.0, "total": res["agreement"]["total"],
                        "item": {"mae": res["agreement"]["item"]["mae"], "bias": res["agreement"]["item"]["bias"]}},
               f"threshold {t:g}": res["filtered"]["threshold"], f"risk {r:g}": res["filtered"]["risk"],
               **{name: ptf[name] for name in analysis.masks if name.startswith("type")}}
    written += tables.write_table(tables.filter_table(filters), out_dir, "table_filters",
                                  f"Regression of AI on human totals under each filter (type = without "
                                  f"{', '.join(ptf['excluded_types'])}; threshold {t:g}; risk {r:g}).")
    if res["reliability"] is not None:
        written += tables.write_table(tables.reliability_table(res["reliability"]), out_dir, "table_reliability",
                                      f"Inter-run reliability of AI points over {res['reliability']['total']['k']} "
                                      "runs (section 4.1).")

    paths = {name: out_dir / f"{name}.png" for name in ("scatter_problems", "scatter_filters", "risk_matrix",
                                                         "sweeps")}
    figures.scatter_grid(_problem_panels(data, ai), paths["scatter_problems"], opts.dpi)
    thresholds = sorted({0.1, t, 1.0})
    filter_panels = [_masked_panel("unfiltered", data, ai, np.ones_like(ai, bool))]
    filter_panels += [_masked_panel(f"AI fraction >= {x:g}", data, ai, quality.threshold_mask(ai, data.max_points, x))
                      for x in thresholds]
    filter_panels += [_masked_panel(f"risk <= {r:g}", data, ai, analysis.masks["risk"])]
    filter_panels += [_masked_panel(name.replace("type", "no graphics"), data, ai, analysis.masks[name])
                      for name in ("type", "type+threshold", "type+threshold+risk")]
    figures.scatter_grid(filter_panels, paths["scatter_filters"], opts.dpi, columns=4)
    figures.risk_heatmap(analysis.risk, data.items, data.students, paths["risk_matrix"], opts.dpi)
    figures.sweep_plot(res["threshold_sweep"], res["risk_sweep"], paths["sweeps"], opts.dpi)
    return written + list(paths.values())


def run(cfg: DictConfig) -> dict[str, Any]:
    """Analyse ``cfg.ai`` against ``cfg.human`` into a run folder; returns the headline metrics."""
    opts = AnalysisOptions.from_config(cfg)
    data = load_grades(cfg.ai, cfg.human)
    if data.out_of_range:
        log.warning("%d points outside [0, max_points] (kept as given; listed in analysis.json)",
                    len(data.out_of_range))
    folder = start_run(hydra_output_dir(cfg.out_dir), cfg)
    analysis = analyze(data, opts)
    write_json(folder.file("analysis.json"), analysis.result)
    write_outputs(data, analysis, opts, folder.path)
    res = analysis.result
    rel = res["reliability"]
    metrics = {
        "ai_run": res["ai_run"],
        "n_runs": len(res["runs"]),
        "n_students": res["n_students"],
        "n_items": res["n_items"],
        "out_of_range_points": res["out_of_range_points"],
        "total_r2": res["agreement"]["total"]["r2"],
        "total_pearson_r": res["agreement"]["total"]["pearson_r"],
        "item_mae": res["agreement"]["item"]["mae"],
        "normed_f1_all": res["agreement"]["by_problem_type"][quality.ALL]["normed_f1"],
        "icc_a1_total": rel["total"]["icc_a1"] if rel else None,
        "icc_a1_item": rel["item"]["icc_a1"] if rel else None,
    }
    folder.finish(metrics)
    log.info("analysis of %d students x %d items (%d AI runs) -> %s", res["n_students"], res["n_items"],
             len(res["runs"]), folder.path)
    return metrics
