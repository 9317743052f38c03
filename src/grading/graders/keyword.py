"""Lanke et al.'s keyword-matching baseline (Table IV, first row).

Definition used here: every phrase of a concept (its label and each synonym) is reduced to its content
lemmas (spaCy lemmas, lower-cased, stop words and punctuation removed), and so is the answer. A phrase's
overlap is the share of its content lemmas that occur among the answer's lemmas; a concept is found when
its best phrase's overlap reaches ``min_overlap``. The score is the weight of the found concepts over the
total weight, the same aggregation as S_KG, so the two differ only in how a concept is recognised
(exact lemmas here, embedding similarity there).
"""

from __future__ import annotations

from pathlib import Path

from grading.graders.base import Grader, GradeResult
from grading.graders.concepts import lemma_parser
from grading.rubric import Answer, Question
from grading.scoring import to_points
from inkbase.errors import check_range


def phrase_overlap(phrase_lemmas: list[str], answer_lemmas: set[str]) -> float:
    """Share of a phrase's distinct content lemmas found in the answer (0 for a phrase without any)."""
    wanted = set(phrase_lemmas)
    return len(wanted & answer_lemmas) / len(wanted) if wanted else 0.0


class KeywordGrader(Grader):
    def __init__(self, min_overlap: float, spacy_model: str, cache_dir: str | Path | None, batch_size: int,
                 n_process: int, name: str = "keyword"):
        # Exclusive of 0, else every concept would be found in every answer.
        self.min_overlap = check_range("grader.min_overlap", min_overlap, 1e-9, 1.0)
        self.parse = lemma_parser(spacy_model=spacy_model, cache_dir=cache_dir, batch_size=batch_size,
                                  n_process=n_process)
        self.name = name

    def concept_overlaps(self, question: Question, texts: list[str]) -> list[dict[str, float]]:
        """Per answer: each concept's best phrase overlap."""
        phrases = [p for c in question.concepts for p in c.phrases]
        phrase_lemmas = dict(zip(phrases, self.parse(phrases), strict=True))
        out = []
        for lemmas in self.parse(texts):
            have = set(lemmas)
            out.append({c.id: max(phrase_overlap(phrase_lemmas[p], have) for p in c.phrases)
                        for c in question.concepts})
        return out

    def grade(self, question: Question, answers: list[Answer]) -> list[GradeResult]:
        total = sum(c.weight for c in question.concepts)
        results = []
        for overlaps in self.concept_overlaps(question, [a.text for a in answers]):
            matched = [c.id for c in question.concepts if overlaps[c.id] >= self.min_overlap]
            missing = [c.id for c in question.concepts if overlaps[c.id] < self.min_overlap]
            fraction = sum(question.concept(cid).weight for cid in matched) / total if total > 0 else 0.0
            results.append(GradeResult(
                points=to_points(fraction, question.max_points, question.granularity),
                max_points=question.max_points, matched=matched, missing=missing,
                details={"fraction": round(fraction, 6), "s_keyword": round(fraction, 6),
                         "overlaps": {k: round(v, 4) for k, v in overlaps.items()}}))
        return results
