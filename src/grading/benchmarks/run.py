"""``scripts/benchmark_grading.py``: every grading method on a public benchmark, under its protocols.

Methods (``methods=[...]``):
- ``similarity``: Wong's raw cosine to the reference answer; ``similarity_points``: Wong's
  grader points (minimum similarity, rescaling, granularity) used as they are, with no fitting;
- ``keyword``, ``kg``: the rubric-concept graders (concepts from the reference answer where the data
  has no concept rubric);
- ``semantic``: the trained scorer (:mod:`grading.graders.semantic`), trained on each training fold;
  under unseen answers it also compares with graded answers to the same question in the training fold;
  ``semantic_ref``: the same without those comparisons (reference answer only);
- ``hybrid``: Lanke et al.'s alpha * S_KG + (1 - alpha) * S_semantic. Per question, alpha follows
  :func:`grading.graders.hybrid.effective_alpha` (configs/grader/hybrid.yaml's alpha for an instructor's
  concept list, 0 for concepts cut out of the reference answer); under ``few_shot`` a question with a concept
  list gets the alpha that :func:`grading.graders.hybrid.calibrate_alpha` picks on its graded examples;
- ``llm``: the LLM grader, when an endpoint is configured (skipped with a note when its key is unset).

From a method's score in [0, 1] to the dataset's scale:
- Mohler (0-5): a least-squares line fitted on the training fold (the semantic scorer is trained on
  the 0-5 gold / 5 and used as is); ``pearson_raw`` is the score's own correlation.
- SemEval (2-way): "correct" when the score reaches the threshold with the best macro-F1 on the
  training split.
- ASAP (evaluation only, nothing trained on it; the semantic scorer is the shipped one, trained on SemEval
  only): ``zero_shot``: round(score * max score); ``few_shot``: per prompt, the k graded examples fix the
  map (:func:`grading.benchmarks.metrics.quantile_map`) and are left out of the test answers; examples that
  all got the same grade carry no scale, and that prompt keeps round(score * max score).
- ``zero_shot`` on Mohler or SemEval (``benchmark.protocols=[zero_shot]``): no training fold, so the shipped
  scorer and no fitted map: score * 5 on Mohler (Pearson r is the score's own), "correct" from 0.5 on SemEval
  (whose shipped scorer was trained on SemEval train: not zero-shot there).
- nn_exam (0-2, evaluation only): ``zero_shot`` as on Mohler, score * 2; the scorer is always the shipped one.

Per-answer scores of the graders that need no training are appended to ``fractions/<method>.jsonl``
as they are produced, so an interrupted run resumes; embeddings and LLM replies are cached on disk.
Outputs in the run folder: ``results.json`` (dataset -> method -> protocol -> metrics), ``results.csv``,
``results.md``, ``predictions.jsonl`` (one line per answer, method and protocol).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from tqdm import tqdm

from grading.benchmarks.datasets import EVALUATION_ONLY, Benchmark, load_benchmark
from grading.benchmarks.metrics import (
    best_threshold,
    classification_metrics,
    fit_linear,
    pearson,
    quantile_map,
    qwk,
    regression_metrics,
)
from grading.benchmarks.protocols import USES_EXAMPLES, folds
from grading.embed import Embedder
from grading.grade import embedder_from_config
from grading.graders import Grader, build_grader
from grading.graders.hybrid import calibrate_alpha, effective_alpha, hybrid_fraction
from grading.graders.semantic import (
    Examples,
    Item,
    SemanticEnsemble,
    SemanticModel,
    fit_semantic,
    load_scorer,
    pair_features,
)
from grading.rubric import Answer
from grading.scoring import to_points
from inkbase.errors import ConfigError
from inkbase.jsonio import JsonlAppender, read_jsonl, write_json
from inkbase.runs import hydra_output_dir, start_run

log = logging.getLogger(__name__)

METHODS = ("similarity", "similarity_points", "keyword", "kg", "semantic", "semantic_ref", "hybrid", "llm")
# Methods whose score comes from a grader that needs no training, and which grader config gives it.
GRADER_OF = {"similarity": "similarity", "similarity_points": "similarity", "keyword": "keyword", "kg": "kg",
             "llm": "llm"}


def grade_all(grader: Grader, bench: Benchmark, path: Path, chunk_size: int, progress: bool) -> dict[str, dict]:
    """Each answer's score from ``grader``, appended to ``path`` as produced; answers found there are skipped."""
    done = {r["answer_id"]: r for r in read_jsonl(path)}
    todo = bench.answers[~bench.answers["answer_id"].isin(done)]
    with JsonlAppender(path) as out, tqdm(total=len(todo), desc=f"{bench.name}[{grader.name}]", unit="ans",
                                           disable=not progress) as bar:
        for qid, group in todo.groupby("question_id", sort=False):
            question = bench.questions[qid]
            rows = list(group.itertuples())
            for start in range(0, len(rows), chunk_size):
                chunk = rows[start:start + chunk_size]
                answers = [Answer(answer_id=r.answer_id, question_id=qid, text=r.text) for r in chunk]
                records = []
                for a, res in zip(answers, grader.grade(question, answers), strict=True):
                    rec = {"answer_id": a.answer_id, "fraction": float(res.details["fraction"]),
                           "points": res.points, "max_points": res.max_points}
                    if "similarity" in res.details:
                        rec["similarity"] = float(res.details["similarity"])
                    if res.details.get("needs_review"):
                        rec["needs_review"] = True
                    records.append(rec)
                out.write_many(records)
                done.update({r["answer_id"]: r for r in records})
                bar.update(len(chunk))
    return done


def _items(bench: Benchmark, rows: pd.DataFrame) -> list[Item]:
    return [Item(bench.questions[q].text, bench.refs(q), t, q, a)
            for q, t, a in zip(rows["question_id"], rows["text"], rows["answer_id"], strict=True)]


def _fractions(bench: Benchmark, rows: pd.DataFrame) -> np.ndarray:
    """Gold as a share of each question's maximum (the semantic scorer's target)."""
    return rows["gold"].to_numpy(float) / rows["question_id"].map(lambda q: bench.questions[q].max_points).to_numpy()


def semantic_scores(bench: Benchmark, train: pd.DataFrame, test: pd.DataFrame, embedder: Embedder,
                    use_examples: bool, shipped: SemanticModel | SemanticEnsemble | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training-fold scores, test scores) of a semantic scorer fitted on ``train`` (or ``shipped`` when
    there is nothing to train on). Training-fold scores are in-sample; they only fit the scale map."""
    if shipped is not None:
        train_score = shipped.score(embedder, _items(bench, train)) if len(train) else np.zeros(0)
        return train_score, shipped.score(embedder, _items(bench, test))
    examples = None
    if use_examples:
        examples = {q: Examples(list(g["answer_id"]), list(g["text"]), _fractions(bench, g))
                    for q, g in train.groupby("question_id", sort=False)}
    x_train = pair_features(embedder, _items(bench, train), examples, use_examples)
    model = fit_semantic(x_train, _fractions(bench, train), use_examples, embedder.feature_space, seed=seed)
    return model.predict(x_train), model.predict(pair_features(embedder, _items(bench, test), examples, use_examples))


def to_scale(task: str, method: str, max_points: np.ndarray, train_score: np.ndarray, train_gold: np.ndarray,
             test_score: np.ndarray, trained: bool, train_q: np.ndarray | None = None,
             test_q: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, float]]:
    """Map scores in [0, 1] to predictions on the gold scale (see the module docstring); ``train_q`` and
    ``test_q`` (question ids) give ordinal tasks one map per question."""
    if task == "ordinal":
        if not len(train_score):
            return np.array([to_points(s, m, 1.0) for s, m in zip(test_score, max_points, strict=True)]), {}
        pred = np.zeros(len(test_score))
        fallback = []
        for q in np.unique(test_q):
            rows, examples = test_q == q, train_q == q
            if len(np.unique(train_gold[examples])) < 2:  # one grade says nothing about the scale
                fallback.append(str(q))
                pred[rows] = [to_points(s, m, 1.0) for s, m in zip(test_score[rows], max_points[rows], strict=True)]
            else:
                pred[rows] = quantile_map(train_score[examples], train_gold[examples], test_score[rows])
        return pred, {"map": "quantile", **({"round_for": fallback} if fallback else {})}
    if task == "regression":
        if trained or not len(train_score):  # nothing to fit a line on (zero-shot): the score's own scale
            return test_score * max_points, {}
        slope, offset = fit_linear(train_score, train_gold)
        return np.clip(slope * test_score + offset, 0, max_points), {"slope": slope, "offset": offset}
    cut = best_threshold(train_score, train_gold) if len(train_score) else 0.5
    return (test_score >= cut).astype(float), {"threshold": cut}


def hybrid_alphas(bench: Benchmark, train: pd.DataFrame, kg_train: np.ndarray, other_train: np.ndarray,
                  alpha: float, calibrate: bool) -> dict[str, float]:
    """The hybrid weight of each question: :func:`effective_alpha`, or with ``calibrate`` and at least 3
    graded examples of a question with a concept list, :func:`calibrate_alpha` on those examples."""
    out = {}
    for qid, question in bench.questions.items():
        out[qid] = effective_alpha(alpha, question)
        rows = (train["question_id"] == qid).to_numpy()
        if calibrate and question.has_concept_rubric and rows.sum() >= 3:
            out[qid] = calibrate_alpha(kg_train[rows], other_train[rows], train["gold"].to_numpy(float)[rows])
    return out


def evaluate(task: str, rows: pd.DataFrame, by_fold: list[dict]) -> dict[str, Any]:
    """Pooled metrics over all test folds, plus fold count and n."""
    gold, pred, score = rows["gold"].to_numpy(), rows["pred"].to_numpy(), rows["score"].to_numpy()
    out: dict[str, Any] = {"n": int(len(rows)), "folds": int(rows["fold"].nunique())}
    if task == "regression":
        out.update(regression_metrics(pred, gold))
        out["pearson_raw"] = pearson(score, gold)
        if out["folds"] > 1:
            per_fold = [pearson(g["pred"], g["gold"]) for _, g in rows.groupby("fold")]
            out["pearson_r_fold_mean"] = float(np.nanmean(per_fold))
            out["pearson_r_fold_sd"] = float(np.nanstd(per_fold))
    elif task == "binary":
        out.update(classification_metrics(pred.astype(int), gold.astype(int)))
    else:
        per_set = {f"qwk_{q}": qwk(g["pred"], g["gold"]) for q, g in rows.groupby("question_id", sort=False)}
        out["qwk_mean"] = float(np.mean(list(per_set.values())))
        out.update(per_set)
    maps = [m for m in by_fold if m]
    if maps:
        out["map"] = maps if len(maps) > 1 else maps[0]
    return out


def resolve_methods(cfg: DictConfig, bench: Benchmark, embedder: Embedder) -> tuple[dict[str, Grader], list[str]]:
    """The graders the requested methods need, and notes on methods left out."""
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ConfigError("methods", f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    needed = {GRADER_OF[m] for m in cfg.methods if m in GRADER_OF}
    if "hybrid" in cfg.methods and any(q.has_concept_rubric for q in bench.questions.values()):
        needed.add("kg")  # otherwise the hybrid's weight on the KG is 0 for every question
    graders, notes = {}, []
    for name in sorted(needed):
        try:
            graders[name] = build_grader(cfg.graders[name], embedder)
        except ConfigError as err:
            if name == "llm" and err.key == "llm.api_key_env":
                notes.append(f"llm skipped: {err.problem}")
                continue
            raise
    return graders, notes


def slices(bench: Benchmark) -> list[tuple[str, Benchmark]]:
    """SemEval's two corpora are separate benchmarks (each trained on its own train split)."""
    if bench.name != "semeval":
        return [(bench.name, bench)]
    out = []
    for corpus, rows in bench.answers.groupby("subset", sort=True):
        qids = set(rows["question_id"])
        out.append((f"semeval_{corpus.lower()}", Benchmark(
            bench.name, bench.task, {q: v for q, v in bench.questions.items() if q in qids},
            rows.reset_index(drop=True), {q: v for q, v in bench.references.items() if q in qids}, bench.notes)))
    return out


def run(cfg: DictConfig) -> dict[str, Any]:
    bench = load_benchmark(cfg.benchmark, cfg.data_dir)
    folder = start_run(hydra_output_dir(cfg.out_dir), cfg)
    embedder = embedder_from_config(cfg)
    graders, notes = resolve_methods(cfg, bench, embedder)
    methods = [m for m in cfg.methods if m not in GRADER_OF or GRADER_OF[m] in graders]
    notes = bench.notes + notes
    scores = {name: grade_all(g, bench, folder.file("fractions", f"{name}.jsonl"), cfg.chunk_size, cfg.progress)
              for name, g in graders.items()}
    evaluation_only = bench.name in EVALUATION_ONLY
    shipped = load_scorer(cfg.semantic_model) \
        if evaluation_only or "zero_shot" in cfg.benchmark.protocols else None
    if shipped is not None:
        notes.append(f"semantic: shipped model {cfg.semantic_model} ({shipped.card.get('trained_on', '?')}), "
                     f"applied zero-shot")
    alpha = float(cfg.graders.hybrid.alpha)
    alpha_by: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    results: dict[str, Any] = {}
    predictions = []
    for key, part in slices(bench):
        answers = part.answers
        max_points = answers["question_id"].map({q: v.max_points for q, v in part.questions.items()}).to_numpy(float)
        gold = answers["gold"].to_numpy(float)
        base = {}
        for m in methods:
            if m in GRADER_OF:
                recs = scores[GRADER_OF[m]]
                field = "similarity" if m == "similarity" and part.task != "ordinal" else "fraction"
                base[m] = np.array([recs[a][field] for a in answers["answer_id"]])
        if "hybrid" in methods:
            kg_all = np.array([scores["kg"][a]["fraction"] for a in answers["answer_id"]]) if "kg" in scores \
                else np.zeros(len(answers))
        rows_by = defaultdict(list)
        maps_by = defaultdict(list)
        for protocol in cfg.benchmark.protocols:
            for fold in tqdm(list(folds(answers, protocol, cfg.benchmark.n_folds, cfg.seed,
                                        cfg.benchmark.few_shot_k)),
                             desc=f"{key}[{protocol}]", disable=not cfg.progress):
                train, test = answers.iloc[fold.train], answers.iloc[fold.test]
                fold_scores: dict[str, tuple[np.ndarray, np.ndarray, bool]] = {}
                for m in methods:
                    if m in base:
                        fold_scores[m] = (base[m][fold.train], base[m][fold.test], False)
                use_ex = fold.protocol in USES_EXAMPLES
                # Nothing is trained on evaluation-only data or without a training fold: the shipped scorer.
                fixed = shipped if evaluation_only or fold.protocol == "zero_shot" else None
                if {"semantic", "hybrid"} & set(methods):
                    fold_scores["semantic"] = (*semantic_scores(part, train, test, embedder, use_ex, fixed,
                                                                cfg.seed), True)
                if "semantic_ref" in methods:
                    fold_scores["semantic_ref"] = fold_scores["semantic"] if "semantic" in fold_scores and not use_ex \
                        else (*semantic_scores(part, train, test, embedder, False, fixed, cfg.seed), True)
                if "hybrid" in methods:
                    sem_tr, sem_te, _ = fold_scores["semantic"]
                    alphas = hybrid_alphas(part, train, kg_all[fold.train], sem_tr, alpha,
                                           calibrate=fold.protocol == "few_shot")
                    a_tr = train["question_id"].map(alphas).to_numpy(float)
                    a_te = test["question_id"].map(alphas).to_numpy(float)
                    hy_tr = hybrid_fraction(a_tr, kg_all[fold.train], sem_tr) if len(sem_tr) else sem_tr
                    fold_scores["hybrid"] = (hy_tr, hybrid_fraction(a_te, kg_all[fold.test], sem_te), False)
                    alpha_by[(key, fold.protocol)].append(alphas)
                for m in methods:
                    tr_score, te_score, trained = fold_scores[m]
                    if m == "similarity_points":
                        pts = np.array([scores["similarity"][a]["points"] for a in test["answer_id"]])
                        pred, fmap = (pts >= 0.5 * max_points[fold.test]).astype(float) \
                            if part.task == "binary" else pts, {}
                    else:
                        pred, fmap = to_scale(part.task, m, max_points[fold.test], tr_score, gold[fold.train],
                                              te_score, trained, train["question_id"].to_numpy(),
                                              test["question_id"].to_numpy())
                    proto = fold.protocol
                    maps_by[(m, proto)].append(fmap)
                    for aid, qid, g, s, p in zip(test["answer_id"], test["question_id"], test["gold"], te_score, pred,
                                                 strict=True):
                        rows_by[(m, proto)].append({"answer_id": aid, "question_id": qid, "gold": float(g),
                                                    "score": float(s), "pred": float(p), "fold": fold.index})
        for (m, proto), rows in rows_by.items():
            frame = pd.DataFrame(rows)
            results.setdefault(key, {}).setdefault(m, {})[proto] = evaluate(part.task, frame, maps_by[(m, proto)])
            predictions += [{"dataset": key, "method": m, "protocol": proto, **r} for r in rows]
    with JsonlAppender(folder.file("predictions.jsonl")) as out:
        out.write_many(predictions)
    usage = {name: g.usage_summary() for name, g in graders.items() if hasattr(g, "usage_summary")}
    write_json(folder.file("results.json"), {"results": results, "notes": notes, "llm_usage": usage,
                                             "hybrid_alpha": alpha, "hybrid_alpha_per_question": {
                                                 f"{d}/{p}": folds_ for (d, p), folds_ in alpha_by.items()}})
    table = results_table(results)
    table.to_csv(folder.file("results.csv"), index=False)
    folder.file("results.md").write_text(results_markdown(table, notes), encoding="utf-8")
    metrics = {"datasets": list(results), "notes": notes, "headline": headline(results)}
    if usage:
        metrics["llm_usage"] = usage
    folder.finish(metrics)
    log.info("benchmark %s -> %s", bench.name, folder.path)
    return metrics


def results_table(results: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for dataset, by_method in results.items():
        for method, by_protocol in by_method.items():
            for protocol, m in by_protocol.items():
                rows.append({"dataset": dataset, "method": method, "protocol": protocol,
                             **{k: v for k, v in m.items() if k != "map"}})
    return pd.DataFrame(rows)


def results_markdown(table: pd.DataFrame, notes: list[str]) -> str:
    parts = []
    for dataset, g in table.groupby("dataset", sort=False):
        g = g.drop(columns="dataset").dropna(axis=1, how="all")
        parts.append(f"### {dataset}\n\n{g.to_markdown(index=False, floatfmt='.3f')}\n")
    return "\n".join(parts) + "\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """Best method per dataset and protocol by its main metric (Pearson r, macro-F1, mean QWK)."""
    out = {}
    for dataset, by_method in results.items():
        for method, by_protocol in by_method.items():
            for protocol, m in by_protocol.items():
                metric = next(k for k in ("pearson_r", "macro_f1", "qwk_mean") if k in m)
                key = f"{dataset}/{protocol}/{metric}"
                if key not in out or (m[metric] == m[metric] and m[metric] > out[key]["value"]):
                    out[key] = {"method": method, "value": round(m[metric], 4)}
    return out
