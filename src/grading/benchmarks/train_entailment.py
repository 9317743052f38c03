"""``scripts/train_entailment.py``: train the concept verifier (:mod:`grading.entailment`).

Training data: SemEval-2013's train split (the test splits are never read) plus generated hard negatives.
After each epoch the verifier is scored on a concept devset (by default the dev part of concept-devset-v1,
the place where matcher settings are chosen); the epoch with the best dev F1 is kept. Writes
``verifier.safetensors``, ``history.json`` and ``card.md``; nothing is shipped by this script. A run
interrupted between epochs resumes from ``checkpoint.pt`` in its folder.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
from omegaconf import DictConfig

from grading.benchmarks.datasets import load_benchmark
from grading.entailment import (
    ConceptVerifier,
    concept_rows,
    concept_scores,
    hard_negatives,
    semeval_pairs,
    threshold_metrics,
    train_verifier,
    with_distractors,
)
from grading.graders.concepts import load_nlp
from grading.rubric import load_answers, load_rubric
from inkbase.errors import ConfigError
from inkbase.runs import hydra_output_dir, start_run

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    if cfg.benchmark.name != "semeval":
        raise ConfigError("benchmark", f"{cfg.benchmark.name}: the verifier trains on SemEval's train split only")
    if cfg.epochs < 1:
        raise ConfigError("epochs", f"{cfg.epochs}: the verifier is chosen among its epochs, so it needs one")
    bench = load_benchmark(cfg.benchmark, cfg.data_dir)
    folder = start_run(hydra_output_dir(cfg.out_dir), cfg)
    pairs = semeval_pairs(bench, "train")
    generated = hard_negatives(pairs, load_nlp(cfg.spacy_model), cfg.seed, cfg.negated_share) if cfg.negated_share else []
    data = pairs + generated
    if cfg.distractor_share:
        data = with_distractors(data, cfg.distractor_share, cfg.distractor_max, cfg.seed)
    if cfg.max_pairs:
        rng = np.random.default_rng(cfg.seed)
        data = [data[i] for i in rng.permutation(len(data))[:cfg.max_pairs]]
    log.info("%d SemEval pairs + %d generated -> %d training pairs", len(pairs), len(generated), len(data))
    rubric = load_rubric(cfg.dev.rubric)
    rows = concept_rows(rubric, load_answers(cfg.dev.answers, rubric))
    labels = np.array([r[2] for r in rows])
    verifier = ConceptVerifier(base=cfg.base_model, max_length=cfg.max_length, batch_size=cfg.batch_size)
    path = folder.file("verifier.safetensors")

    def on_epoch(epoch: int, before: list[dict]) -> dict:
        # The weights file holds the best epoch so far, an epoch finished before a restart included.
        metrics = threshold_metrics(concept_scores(verifier, rows), labels)
        if metrics["f1"] > max((h["dev"]["f1"] for h in before), default=-1.0):
            verifier.save(path, cfg.train_layers, card={"epoch": epoch, "dev": metrics, **card})
        return {"dev": metrics}

    card = {"trained_on": f"SemEval-2013 train split ({len(pairs)} pairs) + {len(generated)} generated pairs",
            "command": json.loads(folder.file("run.json").read_text())["command"],
            "train_layers": cfg.train_layers, "epochs": cfg.epochs, "lr": cfg.lr, "dev_set": str(cfg.dev.answers)}
    history = train_verifier(verifier, data, cfg.train_layers, cfg.epochs, cfg.lr, cfg.train_batch_size, cfg.seed,
                             cfg.threads, on_epoch, checkpoint=folder.file("checkpoint.pt"))
    best = max(history, key=lambda h: h["dev"]["f1"])  # the first of equals, as on_epoch keeps it
    folder.file("history.json").write_text(json.dumps(history, indent=1), encoding="utf-8")
    metrics = {"n_pairs": len(pairs), "n_generated": len(generated), "best_epoch": best["epoch"],
               "dev": best["dev"], "history": history}
    folder.file("card.md").write_text(
        "# Concept verifier\n\n" + "\n".join(f"- {k}: {v}" for k, v in card.items())
        + f"\n- kept epoch: {best['epoch']}\n- dev: {metrics['dev']}\n", encoding="utf-8")
    folder.finish(metrics)
    return metrics
