"""Zero-shot Pearson r of a concept verifier used as a reference-answer scorer: P(the answer states the
reference), the best over a question's references, against the gold scores of Mohler and nn_exam; and, in
the verifier's own domain, macro-F1 at 0.5 on SemEval's unseen-answers and unseen-questions test splits.

PYTHONPATH=src:. python experiments/grading_transfer/verifier/score_references.py <weights> <data_dir> <out.json>
"""

import json
import sys
import time

import numpy as np

from grading.benchmarks.datasets import load_mohler, load_nn_exam, load_semeval
from grading.benchmarks.metrics import classification_metrics, pearson
from grading.entailment import ConceptVerifier


def main(weights: str, data_dir: str, out: str) -> None:
    verifier = ConceptVerifier(weights)
    result = {"weights": weights}
    semeval = load_semeval(data_dir, ["sciEntsBank", "beetle"])
    sets = [("mohler", load_mohler(data_dir, "mean"), None), ("nn_exam", load_nn_exam(data_dir), None)]
    sets += [(f"semeval_{corpus}_{split}", semeval, rows) for split in ("UA", "UQ")
             for corpus, rows in semeval.answers[semeval.answers["split"] == split].groupby("subset")]
    for name, bench, rows in sets:
        start = time.time()
        rows = bench.answers if rows is None else rows
        prem, hyp, owner = [], [], []
        for k, row in enumerate(rows.itertuples()):
            for ref in bench.refs(row.question_id):
                prem.append(str(row.text))
                hyp.append(ref)
                owner.append(k)
        probs = verifier.scores(prem, hyp)
        best = np.zeros(len(rows))
        np.maximum.at(best, np.asarray(owner), probs)
        gold = rows["gold"].to_numpy()
        result[name] = {"pearson_r": round(pearson(best, gold), 4), "answers": len(rows)}
        if bench is semeval:
            result[name]["macro_f1"] = round(classification_metrics((best >= 0.5).astype(int), gold.astype(int))["macro_f1"], 4)
        result[name]["seconds"] = round(time.time() - start, 1)
        print(name, result[name], flush=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
