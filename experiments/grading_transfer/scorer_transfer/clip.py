"""PLAN.md's third round: the shipped ensemble with each member's standardised features clipped to the range
they take on SemEval train; SemEval test macro-F1 and a padded answer's score for both, side by side; writes
``<out_dir>/metrics.json`` and ``<out_dir>/semantic_semeval_ensemble.json`` (the clipped ensemble).

PYTHONPATH=src:. python experiments/grading_transfer/scorer_transfer/clip.py <data_dir> <out_dir>
"""

import sys
from pathlib import Path

from grading.graders.semantic import Item, SemanticEnsemble, feature_columns, load_scorer

sys.path.insert(0, str(Path(__file__).parent))
from choose import compare_on_test, semeval_train  # noqa: E402

PADDED = Item("Why does ice float?", ["Ice is less dense than water. So it floats."], "x " * 600)
SHORT = Item("Why does ice float?", ["Ice is less dense than water. So it floats."], "x " * 5)


def main(data_dir: str, out_dir: str) -> None:
    _, folder, bench, _, embedder, x = semeval_train(data_dir, out_dir)
    shipped = load_scorer("semantic_semeval_ensemble.json")
    clipped = SemanticEnsemble([m.clipped_to(feature_columns(x, "semantic-v2", m.feature_version, m.products))
                                for m in shipped.members],
                               card={**shipped.card, "clipped": "each member's standardised features clipped to "
                                                                "their range on SemEval train (clip.py)"})
    out: dict = {}
    out["semeval_test"], out["semeval_test_mean_macro_f1"] = compare_on_test(
        bench, embedder, {"clipped": clipped, "shipped": shipped})
    for label, item in (("padded_600_x", PADDED), ("short_5_x", SHORT)):
        out[label] = {"clipped": round(float(clipped.score(embedder, [item])[0]), 4),
                      "shipped": round(float(shipped.score(embedder, [item])[0]), 4)}
    clipped.save(folder.file("semantic_semeval_ensemble.json"))
    folder.finish(out)
    print(out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
