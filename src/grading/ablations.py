"""Lanke et al.'s ablations (Tables III-V) from per-answer component scores computed once.

Every grader runs once per answer set: the KG grader's similarity of each answer to each concept (and
the student span behind it), the keyword baseline's fraction and the other grader's fraction. These
components are cached under ``<cache_dir>/ablation/<key>.jsonl``, the key hashing the input files, the
component graders' configs (less the knobs swept here) and source code, any model file their configs name,
the embedding model and :data:`COMPONENTS_VERSION`;
the embeddings and model replies the graders need come from their own caches. Thresholds and alphas are
then swept on the cached components, never by running a grader again:

- Table III: concept matching precision / recall / F1 against the answers' annotated ``concepts``, per
  threshold (micro over (answer, concept) pairs; macro F1 = mean of the per-question F1).
- Table IV: keyword, KG only, other grader only and hybrid points vs the answers' ``reference_points``
  (Pearson r, MAE, RMSE).
- Table V: Pearson r of the hybrid points per subject and overall, per alpha.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from omegaconf import DictConfig, OmegaConf
from sklearn.metrics import precision_recall_fscore_support
from tqdm import tqdm

from grading import entailment
from grading.agreement import summary_agreement
from grading.embed import encoder_id
from grading.grade import embedder_from_config
from grading.graders import build_grader, concepts
from grading.graders.hybrid import hybrid_fraction
from grading.graders.kg import kg_score, rubric_graph
from grading.rubric import Answer, Rubric, load_answers, load_rubric
from grading.scoring import to_points
from inkbase.errors import ConfigError, InputError, check_range
from inkbase.jsonio import JsonlAppender, read_jsonl
from inkbase.runs import hydra_output_dir, iter_run_folders, start_run

log = logging.getLogger(__name__)

COMPONENTS_VERSION = "1"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"  # where graders look up trained models by name
# KG knobs applied after the similarities are known: swept or set here, not part of the cache key.
_KG_POST_KNOBS = ("threshold", "edge_bonus", "name")


# --- components ---------------------------------------------------------------------------------

def _file_hash(path: str | Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def _without_cache_dir(grader_cfg: DictConfig) -> dict:
    """A grader's config less where its caches live (which does not change its output)."""
    return {k: v for k, v in OmegaConf.to_container(grader_cfg, resolve=True).items() if k != "cache_dir"}


def _grader_fingerprint(grader_cfg: DictConfig) -> dict[str, str]:
    """Hashes of the grader's source module and of the files its config names (e.g. trained weights), so a
    changed grader or retrained model under the same name does not reuse stale components."""
    module = importlib.import_module(grader_cfg._target_.rsplit(".", 1)[0])
    out = {"source": _file_hash(inspect.getsourcefile(module))}
    for value in OmegaConf.to_container(grader_cfg, resolve=True).values():
        if isinstance(value, str) and value.strip():
            for path in (Path(value), WEIGHTS_DIR / value):
                if path.is_file():
                    out[value] = _file_hash(path)
                    break
    return out


def components_key(cfg: DictConfig) -> str:
    """Hash of everything the components depend on."""
    kg = {k: v for k, v in _without_cache_dir(cfg.kg).items() if k not in _KG_POST_KNOBS}
    parts = {
        "version": COMPONENTS_VERSION, "span_code": _file_hash(inspect.getsourcefile(concepts)),
        "embedder": encoder_id(cfg.embedder.model, cfg.embedder.get("variant", "torch"),
                               cfg.embedder.get("max_seq_length")), "rubric": _file_hash(cfg.rubric), "answers": _file_hash(cfg.answers),
        "kg": kg, "keyword": _without_cache_dir(cfg.keyword), "other": _without_cache_dir(cfg.other),
        "code": {name: _grader_fingerprint(cfg[name]) for name in ("kg", "keyword", "other")},
    }
    if cfg.kg.get("verifier"):
        parts["verifier_code"] = _file_hash(inspect.getsourcefile(entailment))
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _gold_concepts(answer: Answer, concept_ids: list[str], answers_path: str) -> list[str] | None:
    gold = answer.extra.get("concepts")
    if gold is None:
        return None
    if not isinstance(gold, list) or any(g not in concept_ids for g in gold):
        raise InputError(answers_path, f"answer {answer.answer_id}: concepts",
                         f"{gold!r} is not a list of the question's concept ids {concept_ids}")
    return list(gold)


def compute_components(cfg: DictConfig, rubric: Rubric, answers: list[Answer], path: Path) -> list[dict]:
    """Run the KG, keyword and other graders once per answer, appending records to ``path`` as they come."""
    embedder = embedder_from_config(cfg)
    kg = build_grader(cfg.kg, embedder)
    keyword = build_grader(cfg.keyword, embedder)
    other = build_grader(cfg.other, embedder)
    if not hasattr(kg, "concept_similarities"):
        raise ConfigError("kg", f"{cfg.kg._target_} is not a knowledge-graph grader")
    done = {r["answer_id"] for r in read_jsonl(path)}
    by_question: dict[str, list[Answer]] = defaultdict(list)
    for a in answers:
        if a.answer_id not in done:
            by_question[a.question_id].append(a)
    with JsonlAppender(path) as out, tqdm(total=sum(map(len, by_question.values())), desc="components",
                                          unit="ans") as bar:
        for qid, group in by_question.items():
            question = rubric.question(qid)
            ids = [c.id for c in question.concepts]
            for start in range(0, len(group), cfg.chunk_size):
                chunk = group[start:start + cfg.chunk_size]
                sims = kg.concept_similarities(question, [a.text for a in chunk])
                kw = keyword.grade(question, chunk)
                oth = other.grade(question, chunk)
                out.write_many({
                    "answer_id": a.answer_id, "question_id": qid, "subject": question.subject or "all",
                    "category": a.extra.get("category"), "max_points": question.max_points,
                    "granularity": question.granularity, "reference_points": a.extra.get("reference_points"),
                    "gold_concepts": _gold_concepts(a, ids, cfg.answers), "concept_ids": ids,
                    "similarity": [round(float(s), 6) for s in sims.similarity[i]], "best_span": sims.best_span[i],
                    "keyword_fraction": k.details["fraction"], "keyword_matched": k.matched,
                    "other": other.name, "other_fraction": o.details["fraction"],
                } for i, (a, k, o) in enumerate(zip(chunk, kw, oth, strict=True)))
                bar.update(len(chunk))
    return read_jsonl(path)


def load_components(cfg: DictConfig, rubric: Rubric, answers: list[Answer]) -> tuple[list[dict], Path, bool]:
    """Cached components for this input and config; computed (resumably) when absent."""
    cache = Path(cfg.paths.cache_dir) / "ablation"
    final = cache / f"{components_key(cfg)}.jsonl"
    if final.exists():
        return read_jsonl(final), final, True
    partial = final.with_suffix(".partial.jsonl")
    records = compute_components(cfg, rubric, answers, partial)
    os.replace(partial, final)
    return records, final, False


# --- metrics ------------------------------------------------------------------------------------

def concept_prf(records: list[dict], threshold: float) -> dict[str, float]:
    """Concept matching P/R/F1 over (answer, concept) pairs of the annotated answers, micro and macro."""
    annotated = [r for r in records if r["gold_concepts"] is not None]
    if not annotated:
        raise ValueError("no answer carries annotated concepts")

    def pairs(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        gold = np.concatenate([[c in r["gold_concepts"] for c in r["concept_ids"]] for r in rows])
        pred = np.concatenate([np.asarray(r["similarity"]) >= threshold for r in rows])
        return gold.astype(bool), pred.astype(bool)

    gold, pred = pairs(annotated)
    p, r, f, _ = precision_recall_fscore_support(gold, pred, average="binary", zero_division=0)
    per_question = defaultdict(list)
    for row in annotated:
        per_question[row["question_id"]].append(row)
    macro = [precision_recall_fscore_support(*pairs(rows), average="binary", zero_division=0)[2]
             for rows in per_question.values()]
    return {"threshold": round(threshold, 4), "precision": float(p), "recall": float(r), "f1": float(f),
            "macro_f1": float(np.mean(macro)), "pairs": int(gold.size), "positives": int(gold.sum()),
            "predicted": int(pred.sum())}


def keyword_prf(records: list[dict]) -> dict[str, float]:
    """Concept matching P/R/F1 of the keyword baseline (micro), for comparison with the KG matcher."""
    rows = [r for r in records if r["gold_concepts"] is not None]
    gold = np.concatenate([[c in r["gold_concepts"] for c in r["concept_ids"]] for r in rows]).astype(bool)
    pred = np.concatenate([[c in r["keyword_matched"] for c in r["concept_ids"]] for r in rows]).astype(bool)
    p, r, f, _ = precision_recall_fscore_support(gold, pred, average="binary", zero_division=0)
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


class Fractions:
    """Per-answer fractions of each system, recomputed from the components for a threshold / alpha."""

    def __init__(self, records: list[dict], rubric: Rubric, edge_bonus: float):
        self.records = records
        self.graphs = {q.id: rubric_graph(q) for q in rubric.questions}
        self.edge_bonus = edge_bonus

    def kg(self, threshold: float) -> np.ndarray:
        def matched(r: dict) -> set[str]:
            return {c for c, s in zip(r["concept_ids"], r["similarity"], strict=True) if s >= threshold}

        return np.array([kg_score(self.graphs[r["question_id"]], matched(r), self.edge_bonus) for r in self.records])

    def keyword(self) -> np.ndarray:
        return np.array([r["keyword_fraction"] for r in self.records], dtype=float)

    def other(self) -> np.ndarray:
        return np.array([r["other_fraction"] for r in self.records], dtype=float)

    def points(self, fractions: np.ndarray) -> np.ndarray:
        return np.array([to_points(f, r["max_points"], r["granularity"])
                         for f, r in zip(fractions, self.records, strict=True)])


def _agreement(points: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    out = summary_agreement(points, reference)
    return {"pearson_r": out["pearson_r"], "mae": out["mae"], "rmse": out["rmse"]}


# --- tables -------------------------------------------------------------------------------------

def threshold_table(records: list[dict], thresholds: list[float]) -> pd.DataFrame:
    return pd.DataFrame([concept_prf(records, t) for t in thresholds])


def concept_breakdown(records: list[dict], threshold: float, by: str) -> pd.DataFrame:
    """Concept P/R/F1 at one threshold per question / category / subject (``predicted``: concepts matched,
    all false where an answer has no annotated concept)."""
    groups = defaultdict(list)
    for r in records:
        if r["gold_concepts"] is not None:
            groups[r[by] if r[by] is not None else "-"].append(r)
    rows = []
    for name, rows_ in sorted(groups.items()):
        m = concept_prf(rows_, threshold)
        keep = ("precision", "recall", "f1", "pairs", "positives", "predicted")
        rows.append({by: name, "answers": len(rows_), **{k: m[k] for k in keep}})
    return pd.DataFrame(rows)


def baseline_table(fr: Fractions, threshold: float, alpha: float) -> pd.DataFrame:
    reference = np.array([r["reference_points"] for r in fr.records], dtype=float)
    other = fr.records[0]["other"]
    kg = fr.kg(threshold)
    systems = {
        "keyword": fr.keyword(),
        f"KG only (t={threshold:g})": kg,
        f"{other} only": fr.other(),
        f"hybrid KG + {other} (alpha={alpha:g})": hybrid_fraction(alpha, kg, fr.other()),
    }
    return pd.DataFrame([{"system": name, **_agreement(fr.points(f), reference)} for name, f in systems.items()])


def alpha_table(fr: Fractions, threshold: float, alphas: list[float]) -> pd.DataFrame:
    reference = np.array([r["reference_points"] for r in fr.records], dtype=float)
    subjects = sorted({r["subject"] for r in fr.records})
    kg, other = fr.kg(threshold), fr.other()
    rows = []
    for alpha in alphas:
        points = fr.points(hybrid_fraction(alpha, kg, other))
        row: dict[str, Any] = {"alpha": round(alpha, 4)}
        for subject in subjects:
            mask = np.array([r["subject"] == subject for r in fr.records])
            enough = mask.sum() >= 2
            row[subject] = _agreement(points[mask], reference[mask])["pearson_r"] if enough else float("nan")
        row["overall"] = _agreement(points, reference)["pearson_r"]
        rows.append(row)
    return pd.DataFrame(rows)


def write_table(df: pd.DataFrame, folder: Path, name: str, caption: str) -> None:
    """The same table as Markdown, CSV and LaTeX."""
    df.to_csv(folder / f"{name}.csv", index=False)
    # Object columns keep integer counts from being printed as floats.
    markdown = df.astype(object).to_markdown(index=False, floatfmt=".3f")
    (folder / f"{name}.md").write_text(f"{caption}\n\n{markdown}\n")
    (folder / f"{name}.tex").write_text(df.to_latex(index=False, float_format="%.3f", caption=caption,
                                                    label=f"tab:{name}"))


def _plot(folder: Path, name: str, x: pd.Series, series: dict[str, pd.Series], xlabel: str, ylabel: str,
          mark: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, y in series.items():
        ax.plot(x, y, marker="o", label=label)
    if mark is not None:
        ax.axvline(mark, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / f"{name}.png", dpi=150)
    plt.close(fig)


def best_threshold(table: pd.DataFrame) -> float:
    """The threshold with the highest micro F1 (the higher threshold on a tie: fewer false matches)."""
    best = table["f1"].max()
    return float(table.loc[np.isclose(table["f1"], best), "threshold"].max())


def collect_runs(root: str | Path) -> pd.DataFrame:
    """One row per finished ablation run folder under ``root`` (a multirun): its overrides and headline numbers."""
    rows = []
    for folder in iter_run_folders(root):
        metrics = json.loads((folder / "metrics.json").read_text())
        if "components" not in metrics:
            continue
        overrides = yaml.safe_load((folder / "overrides.yaml").read_text()) or []
        table3 = folder / "table3_threshold.csv"
        best = pd.read_csv(table3).sort_values("f1").iloc[-1] if table3.exists() else None
        at_t = metrics.get("concept_at_threshold", {})
        baselines = metrics.get("baselines", {})
        rows.append({
            "run": str(folder.relative_to(root)), "overrides": " ".join(overrides),
            "best_threshold": None if best is None else float(best["threshold"]),
            "f1_at_best": None if best is None else float(best["f1"]),
            "kg_threshold": metrics["kg_threshold"], "precision": at_t.get("precision"),
            "recall": at_t.get("recall"), "f1": at_t.get("f1"), "macro_f1": at_t.get("macro_f1"),
            **{f"r_{name.split(' (')[0].replace(' ', '_')}": v["pearson_r"] for name, v in baselines.items()},
        })
    if not rows:
        raise InputError(root, "(folder)", "holds no finished ablation run folders")
    return pd.DataFrame(rows)


# --- entry point --------------------------------------------------------------------------------

def check_config(cfg: DictConfig) -> None:
    for t in cfg.thresholds:
        check_range("thresholds", t, 0.0, 1.0)
    for a in cfg.alphas:
        check_range("alphas", a, 0.0, 1.0)
    check_range("alpha", cfg.alpha, 0.0, 1.0)
    check_range("kg.threshold", cfg.kg.threshold, 0.0, 1.0)
    check_range("chunk_size", cfg.chunk_size, 1, 1_000_000)


def run(cfg: DictConfig) -> dict[str, Any]:
    """``scripts/run_ablation.py``: tables and figures in the run folder; returns the metrics."""
    if cfg.collect:
        folder = start_run(hydra_output_dir(cfg.out_dir), cfg)
        table = collect_runs(cfg.collect)
        write_table(table, folder.path, "runs", f"Ablation runs under {cfg.collect}.")
        metrics = {"collected": str(cfg.collect), "runs": len(table)}
        folder.finish(metrics)
        return metrics
    check_config(cfg)
    rubric = load_rubric(cfg.rubric)
    answers = load_answers(cfg.answers, rubric)
    folder = start_run(hydra_output_dir(cfg.out_dir), cfg)
    records, cache_file, cached = load_components(cfg, rubric, answers)
    log.info("components %s (%s)", cache_file, "cached" if cached else "computed")
    with JsonlAppender(folder.file("components.jsonl")) as out:
        out.write_many(records)
    t = float(cfg.kg.threshold)
    metrics: dict[str, Any] = {"answers": len(records), "components": str(cache_file), "components_cached": cached,
                               "kg_threshold": t, "alpha": float(cfg.alpha), "other": records[0]["other"]}

    if any(r["gold_concepts"] is not None for r in records):
        table3 = threshold_table(records, list(cfg.thresholds))
        write_table(table3, folder.path, "table3_threshold",
                    "Table III analogue: KG concept matching vs cosine threshold (micro P/R/F1 over "
                    "(answer, concept) pairs; macro F1 = mean per-question F1).")
        _plot(folder.path, "fig_threshold", table3["threshold"],
              {k: table3[k] for k in ("precision", "recall", "f1")}, "cosine threshold t", "concept matching",
              mark=t)
        at_t = concept_prf(records, t)
        for by in ("question_id", "category"):
            write_table(concept_breakdown(records, t, by), folder.path, f"concepts_by_{by}",
                        f"KG concept matching at t={t:g} by {by}.")
        metrics.update(best_threshold=best_threshold(table3), concept_at_threshold=at_t,
                       keyword_concepts=keyword_prf(records))

    if all(r["reference_points"] is not None for r in records) and len(records) >= 3:
        fr = Fractions(records, rubric, float(cfg.kg.edge_bonus))
        table4 = baseline_table(fr, t, float(cfg.alpha))
        write_table(table4, folder.path, "table4_baselines",
                    "Table IV analogue: points vs reference points (Pearson r, MAE, RMSE in points).")
        table5 = alpha_table(fr, t, list(cfg.alphas))
        write_table(table5, folder.path, "table5_alpha",
                    f"Table V analogue: Pearson r of hybrid points vs reference points per alpha (t={t:g}).")
        _plot(folder.path, "fig_alpha", table5["alpha"],
              {c: table5[c] for c in table5.columns if c != "alpha"}, "alpha (weight of S_KG)", "Pearson r",
              mark=float(cfg.alpha))
        metrics.update(baselines=table4.set_index("system").to_dict(orient="index"),
                       best_alpha=float(table5.loc[table5["overall"].idxmax(), "alpha"]))
    folder.finish(metrics)
    log.info("ablation tables -> %s", folder.path)
    return metrics
