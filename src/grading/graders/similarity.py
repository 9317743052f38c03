"""Wong's scorer: cosine similarity of the answer to the reference answer (all-MiniLM-L6-v2).

The instructor sets a minimum similarity; below it an answer scores 0. Above it the similarity is
mapped to points (``mapping``) and rounded to the question's granularity. An empty answer scores 0.
"""

from __future__ import annotations

from grading.embed import Embedder
from grading.graders.base import Grader, GradeResult
from grading.rubric import Answer, Question
from grading.scoring import to_points
from inkbase.errors import ConfigError, check_range

MAPPINGS = ("proportional", "rescaled")


class SimilarityGrader(Grader):
    def __init__(self, embedder: Embedder, min_similarity: float = 0.3, mapping: str = "rescaled",
                 name: str = "similarity"):
        self.embedder = embedder
        self.min_similarity = check_range("grader.min_similarity", min_similarity, 0.0, 1.0)
        if mapping not in MAPPINGS:
            raise ConfigError("grader.mapping", f"{mapping!r} is not one of {MAPPINGS}")
        self.mapping = mapping
        self.name = name

    def fraction(self, similarity: float) -> float:
        """Share of the points for a given cosine similarity."""
        if similarity < self.min_similarity:
            return 0.0
        if self.mapping == "proportional":
            return similarity
        return (similarity - self.min_similarity) / (1.0 - self.min_similarity) if self.min_similarity < 1 else 1.0

    def grade(self, question: Question, answers: list[Answer]) -> list[GradeResult]:
        ref = self.embedder.encode([question.reference_answer])[0]
        vecs = self.embedder.encode([a.text for a in answers])
        sims = vecs @ ref
        results = []
        for answer, sim in zip(answers, sims, strict=True):
            sim = float(sim) if answer.text.strip() else 0.0
            fraction = self.fraction(sim)
            points = to_points(fraction, question.max_points, question.granularity)
            results.append(GradeResult(points=points, max_points=question.max_points,
                                       details={"fraction": round(fraction, 6), "similarity": round(sim, 6)}))
        return results
