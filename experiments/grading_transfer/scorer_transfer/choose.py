"""PLAN.md's selection: candidates A-D scored leave one corpus out on SemEval's train split (fit on Beetle,
score SciEntsBank, and the reverse); writes ``<out_dir>/metrics.json`` with the chosen candidate.

PYTHONPATH=src:. python experiments/grading_transfer/scorer_transfer/choose.py <data_dir> <out_dir>

The features are computed once at ``semantic-v2`` with the products; each candidate is a column subset of
that matrix (v2's scalars are v1's followed by the two alignment features), which is exactly what
``pair_features`` gives for the candidate's version and ``products`` (checked below on the first rows).
"""

import sys

import numpy as np
from sklearn.metrics import roc_auc_score

from grading.benchmarks.datasets import load_benchmark
from grading.benchmarks.metrics import pearson
from grading.benchmarks.run import _fractions, _items
from grading.benchmarks.train_semantic import _metrics, split_metrics
from grading.grade import embedder_from_config
from grading.graders.semantic import feature_columns, fit_semantic, pair_features
from inkbase.cli import compose
from inkbase.runs import start_run

CANDIDATES = {  # name: (feature version, products)
    "A": ("semantic-v1", True), "B": ("semantic-v1", False), "C": ("semantic-v2", True), "D": ("semantic-v2", False),
}


def columns(x: np.ndarray, version: str, products: bool) -> np.ndarray:
    return feature_columns(x, "semantic-v2", version, products)


def semeval_train(data_dir: str, out_dir: str):
    """The run folder and SemEval's train answers with their ``semantic-v2`` features (with the products), as
    every script of this folder starts: (cfg, folder, bench, train, embedder, x)."""
    cfg = compose("train_semantic", [f"data_dir={data_dir}", f"out_dir={out_dir}"])
    folder = start_run(out_dir, cfg)
    bench = load_benchmark(cfg.benchmark, cfg.data_dir)
    train = bench.answers[bench.answers["split"].isin(["train", "all"])].reset_index(drop=True)
    embedder = embedder_from_config(cfg)
    x = pair_features(embedder, _items(bench, train), version="semantic-v2", products=True)
    return cfg, folder, bench, train, embedder, x


def compare_on_test(bench, embedder, scorers: dict) -> tuple[dict, dict]:
    """Each scorer's 2-way metrics on SemEval's five test sets, side by side (``test_<corpus>_<split>`` ->
    scorer name -> metrics), and each scorer's mean macro-F1 over them."""
    by_scorer = {name: split_metrics(bench, s, embedder, True, 1.0) for name, s in scorers.items()}
    tests = {f"test_{k}": {name: by_scorer[name][k] for name in scorers} for k in next(iter(by_scorer.values()))}
    mean = {name: round(float(np.mean([t[name]["macro_f1"] for t in tests.values()])), 4) for name in scorers}
    return tests, mean


def main(data_dir: str, out_dir: str) -> None:
    cfg, folder, bench, train, embedder, x = semeval_train(data_dir, out_dir)
    items = _items(bench, train)
    for name, (version, products) in CANDIDATES.items():
        assert np.array_equal(columns(x[:50], version, products),
                              pair_features(embedder, items[:50], version=version, products=products)), name
    y = _fractions(bench, train)
    corpus = train["subset"].to_numpy()
    out = {"n_train": int(len(train)), "corpora": {str(c): int((corpus == c).sum()) for c in sorted(set(corpus))},
           "candidates": {}}
    for name, (version, products) in CANDIDATES.items():
        xc = columns(x, version, products)
        res = {"feature_version": version, "products": products}
        for held_name in sorted(set(corpus)):
            held = corpus == held_name
            pred = fit_semantic(xc[~held], y[~held], False, embedder.feature_space, seed=cfg.seed,
                                version=version).predict(xc[held])
            res[f"held_out_{held_name}"] = {"pearson_r": round(pearson(pred, y[held]), 4),
                                            "roc_auc": round(float(roc_auc_score(y[held], pred)), 4),
                                            **_metrics(True, pred, y[held], 1.0)}
        res["mean_pearson_r"] = round(float(np.mean([v["pearson_r"] for k, v in res.items()
                                                     if k.startswith("held_out_")])), 4)
        out["candidates"][name] = res
        print(name, res, flush=True)
    best = max(out["candidates"], key=lambda k: out["candidates"][k]["mean_pearson_r"])
    gain = out["candidates"][best]["mean_pearson_r"] - out["candidates"]["A"]["mean_pearson_r"]
    out["chosen"] = best if best != "A" and gain >= 0.01 else None
    out["rule"] = "highest mean r; a change only if not A and at least 0.01 above A (PLAN.md)"
    folder.finish(out)
    print("chosen:", out["chosen"])


if __name__ == "__main__":
    main(*sys.argv[1:3])
