"""PLAN.md's third round: the shipped ensemble with each member's standardised features clipped to the range
they take on SemEval train; SemEval test macro-F1 and a padded answer's score for both, side by side; writes
``<out_dir>/metrics.json`` and ``<out_dir>/semantic_semeval_ensemble.json`` (the clipped ensemble).

PYTHONPATH=src:. python experiments/grading_transfer/scorer_transfer/clip.py <data_dir> <out_dir>
"""

import sys

import numpy as np

from grading.benchmarks.datasets import load_benchmark
from grading.benchmarks.run import _fractions, _items
from grading.benchmarks.train_semantic import _metrics
from grading.grade import embedder_from_config
from grading.graders.semantic import Item, SemanticEnsemble, feature_columns, load_scorer, pair_features
from inkbase.cli import compose
from inkbase.runs import start_run

PADDED = Item("Why does ice float?", ["Ice is less dense than water. So it floats."], "x " * 600)
SHORT = Item("Why does ice float?", ["Ice is less dense than water. So it floats."], "x " * 5)


def main(data_dir: str, out_dir: str) -> None:
    cfg = compose("train_semantic", [f"data_dir={data_dir}", f"out_dir={out_dir}"])
    folder = start_run(out_dir, cfg)
    bench = load_benchmark(cfg.benchmark, cfg.data_dir)
    answers = bench.answers
    train = answers[answers["split"].isin(["train", "all"])].reset_index(drop=True)
    embedder = embedder_from_config(cfg)
    x = pair_features(embedder, _items(bench, train), version="semantic-v2", products=True)
    shipped = load_scorer("semantic_semeval_ensemble.json")
    clipped = SemanticEnsemble([m.clipped_to(feature_columns(x, "semantic-v2", m.feature_version, m.products))
                                for m in shipped.members],
                               card={**shipped.card, "clipped": "each member's standardised features clipped to "
                                                                "their range on SemEval train (clip.py)"})
    out: dict = {"semeval_test": {}}
    for split in ("UA", "UQ", "UD"):
        for name, rows in answers[answers["split"] == split].groupby("subset"):
            items, gold = _items(bench, rows), _fractions(bench, rows)
            out["semeval_test"][f"test_{name}_{split}"] = {
                "clipped": _metrics(True, clipped.score(embedder, items), gold, 1.0),
                "shipped": _metrics(True, shipped.score(embedder, items), gold, 1.0)}
    out["semeval_test_mean_macro_f1"] = {
        k: round(float(np.mean([t[k]["macro_f1"] for t in out["semeval_test"].values()])), 4)
        for k in ("clipped", "shipped")}
    for label, item in (("padded_600_x", PADDED), ("short_5_x", SHORT)):
        out[label] = {"clipped": round(float(clipped.score(embedder, [item])[0]), 4),
                      "shipped": round(float(shipped.score(embedder, [item])[0]), 4)}
    clipped.save(folder.file("semantic_semeval_ensemble.json"))
    folder.finish(out)
    print(out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
