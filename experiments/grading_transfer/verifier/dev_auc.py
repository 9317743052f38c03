"""How well each matcher ranks the (answer, concept) pairs of a concept devset: ROC AUC and the best F1 over
all thresholds, for the KG's cosine (t=0.40 preset's spans and negation check) and for concept verifiers.

PYTHONPATH=src:. python experiments/grading_transfer/verifier/dev_auc.py <rubric> <answers> <out.json> [<weights> ...]
"""

import json
import sys

import numpy as np

from grading.embed import get_embedder
from grading.entailment import ConceptVerifier, concept_rows, concept_scores, threshold_metrics
from grading.graders import build_grader
from grading.rubric import load_answers, load_rubric
from inkbase.cli import compose


def main(rubric_path: str, answers_path: str, out: str, *weights: str) -> None:
    rubric = load_rubric(rubric_path)
    answers = load_answers(answers_path, rubric)
    rows = concept_rows(rubric, answers)
    labels = np.array([r[2] for r in rows])
    cfg = compose("grade", ["grader=kg", "rubric=x", "answers=y", "grader.negation_check=true"])
    kg = build_grader(cfg.grader, get_embedder(cfg.embedder.model, variant=cfg.embedder.variant))
    sims = {}
    for q in rubric.questions:
        group = [a for a in answers if a.question_id == q.id]
        if group:
            found = kg.concept_similarities(q, [a.text for a in group]).similarity
            sims.update({a.answer_id: row for a, row in zip(group, found, strict=True)})
    cos = np.concatenate([sims[a.answer_id] for a in answers])  # concept_rows' order
    result = {"pairs": len(rows), "positives": int(labels.sum()),
              "kg_cosine_negation_check": threshold_metrics(cos, labels)}
    for w in weights:
        result[w] = threshold_metrics(concept_scores(ConceptVerifier(w), rows), labels)
    print(json.dumps(result, indent=1))
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
