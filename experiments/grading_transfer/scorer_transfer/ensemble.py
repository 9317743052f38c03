"""PLAN.md's second candidate E (the mean of the shipped scorer's and D's scores): its leave-one-corpus-out
r on SemEval train (each member fitted on one corpus, as in round one), the ensemble file of the two shipped
files, and its macro-F1 on SemEval's five test sets; writes ``<out_dir>/metrics.json`` and
``<out_dir>/semantic_semeval_ensemble.json``.

PYTHONPATH=src:. python experiments/grading_transfer/scorer_transfer/ensemble.py <data_dir> <out_dir>
"""

import sys

import numpy as np
from sklearn.metrics import roc_auc_score

from grading.benchmarks.metrics import pearson
from grading.benchmarks.run import _fractions
from grading.graders.semantic import SemanticEnsemble, SemanticModel, fit_semantic

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from choose import CANDIDATES, columns, compare_on_test, semeval_train  # noqa: E402

SHIPPED, D_FILE = "semantic_semeval.json", "semantic_semeval_v2_scalar.json"


def main(data_dir: str, out_dir: str) -> None:
    cfg, folder, bench, train, embedder, x = semeval_train(data_dir, out_dir)
    y, corpus = _fractions(bench, train), train["subset"].to_numpy()
    out = {"loco": {}}
    for held_name in sorted(set(corpus)):
        held = corpus == held_name
        preds = []
        for name in ("A", "D"):
            version, products = CANDIDATES[name]
            xc = columns(x, version, products)
            preds.append(fit_semantic(xc[~held], y[~held], False, embedder.feature_space, seed=cfg.seed,
                                      version=version).predict(xc[held]))
        pred = np.mean(preds, axis=0)
        out["loco"][f"held_out_{held_name}"] = {"pearson_r": round(pearson(pred, y[held]), 4),
                                               "roc_auc": round(float(roc_auc_score(y[held], pred)), 4)}
    out["loco"]["mean_pearson_r"] = round(float(np.mean([v["pearson_r"] for v in out["loco"].values()])), 4)
    members = [SemanticModel.load(SHIPPED), SemanticModel.load(D_FILE)]
    ens = SemanticEnsemble(members, card={"trained_on": "mean of semantic_semeval.json and "
                                          "semantic_semeval_v2_scalar.json (SemEval-2013 train split only)",
                                          "command": "experiments/grading_transfer/scorer_transfer/ensemble.py"})
    tests, mean = compare_on_test(bench, embedder, {"ensemble": ens, "shipped": members[0], "D": members[1]})
    out["semeval_test"], out["semeval_test_mean_macro_f1"] = tests, mean
    ens.card.update({"loco_mean_pearson_r": out["loco"]["mean_pearson_r"], **{k: v["ensemble"] for k, v in tests.items()}})
    ens.save(folder.file("semantic_semeval_ensemble.json"))
    folder.finish(out)
    print(out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
