"""``scripts/train_semantic.py``: train the semantic scorer on a dataset's training data.

Only training data is used: SemEval's ``train`` split (the test splits UA/UQ/UD are scored afterwards,
for the card), or all of Mohler (which has no licence: such a model is for local use, not to be
redistributed). ASAP is evaluation only and refused. The model is reference-only (no graded examples),
so it can grade questions it has never seen. A cross-validation by question on the training data
(GroupKFold) estimates how it does on unseen questions. Writes ``model.json`` and ``card.md``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
from omegaconf import DictConfig
from sklearn.model_selection import GroupKFold

from grading.benchmarks.datasets import load_benchmark
from grading.benchmarks.metrics import classification_metrics, regression_metrics
from grading.benchmarks.run import _fractions, _items
from grading.grade import embedder_from_config
from grading.graders.semantic import fit_semantic, pair_features
from inkbase.errors import ConfigError
from inkbase.runs import hydra_output_dir, start_run

log = logging.getLogger(__name__)
EVALUATION_ONLY = {"asap"}


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
    x = pair_features(embedder, _items(bench, train))
    y = _fractions(bench, train)
    binary = bench.task == "binary"
    scale = 1.0 if binary else float(max(q.max_points for q in bench.questions.values()))
    cv_pred = np.zeros(len(train))
    for tr, te in GroupKFold(n_splits=cfg.cv_folds).split(x, y, groups=train["question_id"]):
        cv_pred[te] = fit_semantic(x[tr], y[tr], False, embedder.model_name, seed=cfg.seed).predict(x[te])
    metrics: dict[str, Any] = {"dataset": bench.name, "n_train": int(len(train)),
                               f"cv_{cfg.cv_folds}fold_by_question": _metrics(binary, cv_pred, y, scale)}
    card = {"trained_on": f"{bench.name} training data ({len(train)} answers)", "notes": bench.notes,
            "command": json.loads(folder.file("run.json").read_text())["command"], **{k: v for k, v in metrics.items() if k.startswith("cv_")}}
    model = fit_semantic(x, y, False, embedder.model_name, card=card, seed=cfg.seed)
    for split in ("UA", "UQ", "UD"):
        for corpus, rows in answers[answers["split"] == split].groupby("subset"):
            pred = model.predict(pair_features(embedder, _items(bench, rows)))
            metrics[f"test_{corpus}_{split}"] = _metrics(binary, pred, _fractions(bench, rows), scale)
    model.card.update({k: v for k, v in metrics.items() if k.startswith("test_")})
    model.save(folder.file("model.json"))
    folder.file("card.md").write_text(model_card(model.card, metrics), encoding="utf-8")
    folder.finish(metrics)
    log.info("semantic scorer -> %s: %s", folder.file("model.json"), metrics)
    return metrics


def model_card(card: dict[str, Any], metrics: dict[str, Any]) -> str:
    lines = ["# Semantic scorer", "", f"- Trained on: {card['trained_on']}",
             f"- Command: `{card['command']}`", "- Features: all-MiniLM-L6-v2 (reference, answer, question); "
             "model: standardised ridge/logistic + MLP(32), mean of the two", "", "| evaluation | metrics |",
             "|---|---|"]
    lines += [f"| {k} | {', '.join(f'{m}={v}' for m, v in val.items())} |" for k, val in metrics.items()
              if isinstance(val, dict)]
    return "\n".join(lines) + "\n"
