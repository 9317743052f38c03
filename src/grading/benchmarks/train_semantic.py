"""``scripts/train_semantic.py``: train the semantic scorer on a dataset's training data.

Only training data is used: SemEval's ``train`` split (the test splits UA/UQ/UD are scored afterwards,
for the card), or all of Mohler (which has no licence: such a model is for local use, not to be
redistributed). ASAP is evaluation only and refused. The model is reference-only (no graded examples),
so it can grade questions it has never seen. A cross-validation by question on the training data
(GroupKFold) estimates how it does on unseen questions, and compares zero-shot score maps on the same
held-out questions (:func:`zero_shot_maps`). Where the training data holds several corpora (SemEval: Beetle
and SciEntsBank), each corpus is also scored by a model fitted on the others (``cv_by_corpus``), which
estimates how the recipe carries over to another course. ``feature_version`` / ``products`` pick the
features (:func:`grading.graders.semantic.pair_features`). Writes ``model.json`` and ``card.md``; with
``ensemble_with=<model file>`` also ``ensemble.json``, that file's scorer(s) and the new model averaged.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
from omegaconf import DictConfig
from sklearn.model_selection import GroupKFold

from grading.benchmarks.datasets import EVALUATION_ONLY, load_benchmark
from grading.benchmarks.metrics import classification_metrics, pearson, regression_metrics
from grading.benchmarks.run import _fractions, _items
from grading.grade import embedder_from_config
from grading.graders.semantic import (
    SCALAR_FEATURES,
    Item,
    SemanticEnsemble,
    fit_semantic,
    load_scorer,
    pair_features,
    scalar_names,
)
from inkbase.errors import ConfigError
from inkbase.runs import hydra_output_dir, start_run

log = logging.getLogger(__name__)


def _metrics(binary: bool, pred: np.ndarray, gold: np.ndarray, scale: float) -> dict[str, float]:
    if binary:
        return {k: round(v, 4) for k, v in classification_metrics((pred >= 0.5).astype(int), gold.astype(int)).items()}
    return {k: round(v, 4) for k, v in regression_metrics(pred * scale, gold * scale).items()}


def run(cfg: DictConfig) -> dict[str, Any]:
    if cfg.benchmark.name in EVALUATION_ONLY:
        raise ConfigError("benchmark", f"{cfg.benchmark.name} is evaluation only; nothing may be trained on it")
    bench = load_benchmark(cfg.benchmark, cfg.data_dir)
    folder = start_run(hydra_output_dir(cfg.out_dir), cfg)
    embedder = embedder_from_config(cfg)
    answers = bench.answers
    train = answers[answers["split"].isin(["train", "all"])].reset_index(drop=True)
    version, products = str(cfg.feature_version), bool(cfg.products)
    x = pair_features(embedder, _items(bench, train), version=version, products=products)
    y = _fractions(bench, train)
    binary = bench.task == "binary"
    scale = 1.0 if binary else float(max(q.max_points for q in bench.questions.values()))
    cv_pred = np.zeros(len(train))
    splits = list(GroupKFold(n_splits=cfg.cv_folds).split(x, y, groups=train["question_id"]))
    for tr, te in splits:
        cv_pred[te] = fit_semantic(x[tr], y[tr], False, embedder.feature_space, seed=cfg.seed,
                                   version=version).predict(x[te])
    metrics: dict[str, Any] = {"dataset": bench.name, "n_train": int(len(train)), "feature_version": version,
                               "products": products,
                               f"cv_{cfg.cv_folds}fold_by_question": _metrics(binary, cv_pred, y, scale)}
    if train["subset"].nunique() > 1:
        metrics["cv_by_corpus"] = by_corpus(train["subset"].to_numpy(), x, y, embedder, cfg.seed, version)
    if cfg.zero_shot_maps:
        metrics["cv_zero_shot_maps"] = zero_shot_maps(bench, train, x, y, splits, embedder, cfg.seed, version,
                                                      products)
    card = {"trained_on": f"{bench.name} training data ({len(train)} answers)", "notes": bench.notes,
            "command": json.loads(folder.file("run.json").read_text())["command"], **{k: v for k, v in metrics.items() if k.startswith("cv_")}}
    model = fit_semantic(x, y, False, embedder.feature_space, card=card, seed=cfg.seed, version=version)
    metrics.update({f"test_{k}": v for k, v in split_metrics(bench, model, embedder, binary, scale).items()})
    model.card.update({k: v for k, v in metrics.items() if k.startswith("test_")})
    model.save(folder.file("model.json"))
    if cfg.get("ensemble_with"):
        metrics.update(_ensemble(cfg, bench, embedder, model, binary, scale, folder))
    folder.file("card.md").write_text(model_card(model.card, metrics), encoding="utf-8")
    folder.finish(metrics)
    log.info("semantic scorer -> %s: %s", folder.file("model.json"), metrics)
    return metrics


def split_metrics(bench, scorer, embedder, binary: bool, scale: float) -> dict[str, dict[str, float]]:
    """``scorer``'s metrics on each test split of each corpus (SemEval: UA, UQ, UD), keyed ``<corpus>_<split>``."""
    answers = bench.answers
    return {f"{corpus}_{split}": _metrics(binary, scorer.score(embedder, _items(bench, rows)), _fractions(bench, rows),
                                          scale)
            for split in ("UA", "UQ", "UD") for corpus, rows in answers[answers["split"] == split].groupby("subset")}


def _ensemble(cfg, bench, embedder, model, binary: bool, scale: float, folder) -> dict[str, Any]:
    """``ensemble.json``: the scorer(s) of ``cfg.ensemble_with`` followed by the new model, scored as their
    mean (the shipped default's recipe), with its test metrics (``ensemble_test_*``)."""
    other = load_scorer(cfg.ensemble_with)
    members = [*(other.members if isinstance(other, SemanticEnsemble) else [other]), model]
    ens = SemanticEnsemble(members, card={"trained_on": f"mean of {cfg.ensemble_with} and this run's model",
                                          "command": model.card.get("command", "")})
    out = {f"ensemble_test_{k}": v for k, v in split_metrics(bench, ens, embedder, binary, scale).items()}
    ens.card.update(out)
    ens.save(folder.file("ensemble.json"))
    return out


def by_corpus(corpus: np.ndarray, x: np.ndarray, y: np.ndarray, embedder, seed: int, version: str) -> dict[str, Any]:
    """Each corpus scored by a model fitted on the other corpora: Pearson r with the gold (and ROC AUC for
    0/1 gold) per held-out corpus, and their mean."""
    from sklearn.metrics import roc_auc_score

    out: dict[str, Any] = {}
    for name in sorted(set(corpus)):
        held = corpus == name
        pred = fit_semantic(x[~held], y[~held], False, embedder.feature_space, seed=seed, version=version
                            ).predict(x[held])
        out[str(name)] = {"pearson_r": round(pearson(pred, y[held]), 4)}
        if set(np.unique(y)) <= {0.0, 1.0}:
            out[str(name)]["roc_auc"] = round(float(roc_auc_score(y[held], pred)), 4)
    out["mean_pearson_r"] = round(float(np.mean([v["pearson_r"] for v in out.values()])), 4)
    return out


def zero_shot_maps(bench, train, x: np.ndarray, y: np.ndarray, splits, embedder, seed: int,
                   version: str = "semantic-v1", products: bool = True) -> dict[str, Any]:
    """Zero-shot score maps on questions held out of the scorer's training (the folds of ``splits``), each
    scored by the pooled Pearson r with the gold over all questions (what a zero-shot r on another
    benchmark measures) and, for 0/1 gold, ROC AUC. Per question, ``s_ref`` is the fold model's score of
    the reference answer given as an answer (full marks) and ``s_q`` of the question text (no content):
    ``top_anchor`` = s / s_ref, ``two_anchors`` = (s - s_q) / (s_ref - s_q), both clipped to [0, 1];
    ``scalar_features``: the scorer without the embedding-product features; ``cosine``: the reference
    cosine alone; ``mean_semantic_cosine``: their mean with a fixed weight of 1/2."""
    from sklearn.metrics import roc_auc_score

    qids = train["question_id"].to_numpy()
    n_scalar = len(scalar_names(version))
    questions = sorted(set(qids))
    x_ref = pair_features(embedder, [Item(bench.questions[q].text, bench.refs(q), bench.refs(q)[0], q, "ref")
                                     for q in questions], version=version, products=products)
    x_q = pair_features(embedder, [Item(bench.questions[q].text, bench.refs(q), bench.questions[q].text, q, "q")
                                   for q in questions], version=version, products=products)
    score, scalar, s_ref, s_q = (np.zeros(len(y)) for _ in range(4))
    for tr, te in splits:
        model = fit_semantic(x[tr], y[tr], False, embedder.feature_space, seed=seed, version=version)
        score[te] = model.predict(x[te])
        scalar[te] = fit_semantic(x[tr][:, :n_scalar], y[tr], False, embedder.feature_space,
                                  seed=seed, version=version).predict(x[te][:, :n_scalar])
        anchors = dict(zip(questions, zip(model.predict(x_ref), model.predict(x_q), strict=True), strict=True))
        s_ref[te] = [anchors[q][0] for q in qids[te]]
        s_q[te] = [anchors[q][1] for q in qids[te]]
    cosine = x[:, SCALAR_FEATURES.index("cos_ref")]
    candidates = {
        "semantic": score,
        "top_anchor": np.clip(score / np.maximum(s_ref, 1e-6), 0, 1),
        "two_anchors": np.clip((score - s_q) / np.maximum(s_ref - s_q, 1e-6), 0, 1),
        "scalar_features": scalar,
        "cosine": cosine,
        "mean_semantic_cosine": (score + cosine) / 2,
    }
    binary = set(np.unique(y)) <= {0.0, 1.0}
    out = {}
    for name, s in candidates.items():
        out[name] = {"pearson_r": round(pearson(s, y), 4)}
        if binary:
            out[name]["roc_auc"] = round(float(roc_auc_score(y, s)), 4)
    return out


def model_card(card: dict[str, Any], metrics: dict[str, Any]) -> str:
    lines = ["# Semantic scorer", "", f"- Trained on: {card['trained_on']}",
             f"- Command: `{card['command']}`", "- Features: all-MiniLM-L6-v2 (reference, answer, question); "
             "model: standardised ridge/logistic + MLP(32), mean of the two", "", "| evaluation | metrics |",
             "|---|---|"]
    lines += [f"| {k} | {', '.join(f'{m}={v}' for m, v in val.items())} |" for k, val in metrics.items()
              if isinstance(val, dict)]
    return "\n".join(lines) + "\n"
