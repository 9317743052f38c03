"""Lanke et al.'s knowledge-graph grader: rubric concepts as a weighted graph, matched by embedding similarity.

The rubric question becomes a networkx DiGraph (concept nodes with label, weight and synonyms; edges
typed by relation). The student answer is cut into spans (:mod:`grading.graders.concepts`). A concept's
similarity is the largest cosine (all-MiniLM-L6-v2) over every (student span, concept phrase) pair, the
phrases being its label and synonyms; the concept is matched when that similarity reaches ``threshold``.
Pairs whose directions oppose ("shifts right" / "shifts left": cosine ~0.9 for MiniLM) are ruled out first
(``direction_check``). ``span_encoding``: ``separate`` embeds every span on its own (one transformer pass
per distinct span, ~34 per answer); ``pooled`` runs one pass per answer and averages the contextual token
vectors of each span's words (:meth:`grading.embed.Embedder.encode_tokens`), which also yields the answer's
own embedding for the similarity grader; ``static`` embeds spans and phrases with static word-piece vectors
distilled from the same model (:mod:`grading.static_vectors`: no transformer pass). Lanke et al., Eq. 1: ``S_KG = matched weight / total weight``
(over ``Question.concepts_for_full_marks`` concepts' weight where a rubric of alternatives sets it). With ``edge_bonus`` > 0
the score becomes ``(1 - edge_bonus) * S_KG + edge_bonus * (satisfied relations / relations)``, a
relation being satisfied when both its ends are matched; the default 0 keeps the paper's formula.

Per-concept thresholds from the rubric (``phrase_slope``, 0 by default: one threshold for all; set in
``configs/grader/kg_transfer.yaml``): a concept with k distinct phrases (label and synonyms) is matched
when its best cosine reaches ``threshold + phrase_slope * ln k``. The best of k cosines runs higher the
more phrases a concept has, for true and false matches alike: on the sample exam (4-5 phrases per
concept) the best single threshold is 0.68, with only the labels kept 0.46, and on the concept
development set (1-2 phrases) 0.30. The explanations then give each concept's ``threshold``.

A concept verifier (``verifier``: a weights file; :mod:`grading.entailment`) reads the whole
answer and each phrase of a concept together (a cross-encoder) and gives the probability that the answer
states it. With a verifier a concept's score is that probability where the best cosine reaches
``verify_floor`` (0 where it does not: the candidates come from the cosine, the decision from the
verifier), and ``threshold`` applies to the probability. The explanations keep the cosine span and add
each concept's ``entailment``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from grading.embed import Embedder
from grading.entailment import best_probabilities, load_verifier
from grading.graders.base import Grader, GradeResult
from grading.graders.concepts import (
    SpanOptions,
    locate,
    locate_words,
    normalise,
    polarity,
    polarity_conflicts,
    span_options,
    span_parser,
)
from grading.rubric import Answer, Question
from grading.scoring import list_share, to_points
from grading.static_vectors import static_vectors
from inkbase.errors import ConfigError, check_range

SPAN_ENCODINGS = ("separate", "pooled", "static")


def rubric_graph(question: Question) -> nx.DiGraph:
    """The question's concepts as nodes (``label``, ``weight``, ``synonyms``) and edges with ``relation``."""
    graph = nx.DiGraph(question_id=question.id)
    for c in question.concepts:
        graph.add_node(c.id, label=c.label, weight=float(c.weight), synonyms=list(c.synonyms))
    for e in question.edges:
        graph.add_edge(e.source, e.target, relation=e.relation)
    return graph


def kg_coverage(graph: nx.DiGraph, matched: set[str]) -> float:
    """Lanke et al., Eq. 1: weight of the matched concepts over the total weight."""
    total = sum(w for _, w in graph.nodes(data="weight"))
    return sum(graph.nodes[n]["weight"] for n in matched if n in graph) / total if total > 0 else 0.0


def satisfied_relations(graph: nx.DiGraph, matched: set[str]) -> list[tuple[str, str, str]]:
    """Edges whose source and target are both matched, as (source, relation, target)."""
    return [(u, r, v) for u, v, r in graph.edges(data="relation") if u in matched and v in matched]


def kg_score(graph: nx.DiGraph, matched: set[str], edge_bonus: float = 0.0) -> float:
    """S_KG (Eq. 1), optionally blended with the share of satisfied relations (``edge_bonus``)."""
    coverage = kg_coverage(graph, matched)
    if edge_bonus == 0 or graph.number_of_edges() == 0:
        return coverage
    share = len(satisfied_relations(graph, matched)) / graph.number_of_edges()
    return (1 - edge_bonus) * coverage + edge_bonus * share


@dataclass
class ConceptSimilarities:
    """For each answer (row) and concept (column): the best score and the student span that reached it.
    ``similarity`` is compared with the grader's ``threshold``: the cosine less the concept's threshold
    offset (``phrase_slope``), clipped to [0, 1]; ``cosine`` is the reported span's own cosine."""

    concept_ids: list[str]
    similarity: np.ndarray  # (n_answers, n_concepts)
    best_span: list[list[str]]
    cosine: np.ndarray | None = None  # (n_answers, n_concepts); None: equal to similarity


@dataclass
class _Phrases:
    """A question's concept phrases (labels and synonyms), grouped by concept."""

    text: list[str]
    vectors: np.ndarray  # (p, d)
    starts: np.ndarray  # first column of each concept
    polarity: np.ndarray  # (p,) tag bits
    offset: np.ndarray  # (c,) each concept's threshold offset, phrase_slope * ln(its number of phrases)


class _Best:
    """Per answer and concept, the span with the highest score, its score and cosine."""

    def __init__(self, n_answers: int, n_concepts: int):
        self.score = np.zeros((n_answers, n_concepts), dtype=np.float32)
        self.cosine = np.zeros((n_answers, n_concepts), dtype=np.float32)
        self.span: list[list[str]] = [[""] * n_concepts for _ in range(n_answers)]

    def take(self, i: int, score: np.ndarray, cosine: np.ndarray, spans: list[str]) -> None:
        """Answer ``i``'s (spans, concepts) scores and cosines."""
        arg = score.argmax(axis=0)
        cols = np.arange(score.shape[1])
        self.score[i], self.cosine[i] = score[arg, cols], cosine[arg, cols]
        self.span[i] = [spans[k] for k in arg]

    def result(self, ids: list[str]) -> ConceptSimilarities:
        cosine = np.clip(self.cosine, 0.0, 1.0)
        return ConceptSimilarities(ids, np.clip(self.score, 0.0, 1.0), self.span, cosine)


class KGGrader(Grader):
    """``direction_check``: a span and a phrase naming opposite directions ("shifts right" / "shifts left")
    do not match. ``negation_check``: nor do a negated and an affirmative one. ``phrase_slope``: see
    the module docstring."""

    def __init__(self, embedder: Embedder, threshold: float, edge_bonus: float, spans: dict | SpanOptions,
                 direction_check: bool, negation_check: bool, spacy_model: str, cache_dir: str | Path | None,
                 batch_size: int, n_process: int, name: str = "kg", span_encoding: str = "separate",
                 phrase_slope: float = 0.0, verifier: str | None = None, verify_floor: float = 0.0):
        self.embedder = embedder
        self.verifier = load_verifier(verifier) if verifier else None
        self.verify_floor = check_range("grader.verify_floor", verify_floor, 0.0, 1.0)
        self.threshold = check_range("grader.threshold", threshold, 0.0, 1.0)
        self.edge_bonus = check_range("grader.edge_bonus", edge_bonus, 0.0, 1.0)
        self.phrase_slope = check_range("grader.phrase_slope", phrase_slope, 0.0, 1.0)
        self.span_options = span_options(spans)
        self.direction_check = bool(direction_check)
        self.negation_check = bool(negation_check)
        if span_encoding not in SPAN_ENCODINGS:
            raise ConfigError("grader.span_encoding", f"{span_encoding!r} is not one of {SPAN_ENCODINGS}")
        self.span_encoding = span_encoding
        parser_args = {"spacy_model": spacy_model, "cache_dir": cache_dir, "batch_size": batch_size,
                       "n_process": n_process}
        self.parse = span_parser(self.span_options, **parser_args)
        self.name = name
        self._phrases: dict[tuple, _Phrases] = {}
        self._static = None

    def _encode(self, texts: list[str]) -> np.ndarray:
        """Span and phrase vectors: the sentence model's, or with ``span_encoding: static`` its static ones."""
        if self.span_encoding != "static":
            return self.embedder.encode(texts)
        if self._static is None:
            self._static = static_vectors(self.embedder)
        return self._static.encode(texts)

    def _concept_phrases(self, question: Question) -> _Phrases:
        key = tuple((c.id, tuple(c.phrases)) for c in question.concepts)
        if key not in self._phrases:
            phrases, starts = [], []
            for c in question.concepts:
                starts.append(len(phrases))
                phrases.extend(dict.fromkeys(normalise(p) for p in c.phrases))
            counts = np.diff([*starts, len(phrases)])
            self._phrases[key] = _Phrases(phrases, self._encode(phrases), np.asarray(starts, dtype=int),
                                          np.array([polarity(p) for p in phrases], dtype=np.int64),
                                          self.phrase_slope * np.log(counts).astype(np.float32))
        return self._phrases[key]

    def _span_concept(self, texts: list[str], tags: np.ndarray, phrases: _Phrases,
                      vectors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(spans, concepts) score and cosine: each concept's best phrase for every span, a pair being 0
        where the polarity checks rule it out; the score is the cosine less the concept's threshold offset.
        ``vectors``: the spans' own, else they are embedded."""
        vectors = self._encode(texts) if vectors is None else vectors
        sims = vectors @ phrases.vectors.T
        if self.direction_check or self.negation_check:
            sims[polarity_conflicts(tags, phrases.polarity, directions=self.direction_check,
                                    negation=self.negation_check)] = 0.0
        cosine = np.maximum.reduceat(sims, phrases.starts, axis=1)
        return cosine - phrases.offset, cosine

    def concept_similarities(self, question: Question, texts: list[str]) -> ConceptSimilarities:
        """Best (span, phrase) score per answer and concept; one embedding call for all spans of ``texts``;
        with a verifier, its probability where the cosine reaches ``verify_floor``."""
        found = self._cosine_similarities(question, texts)
        if self.verifier is None or not found.concept_ids:
            return found
        rows, cols = np.nonzero(found.similarity >= self.verify_floor)
        phrases = [list(dict.fromkeys(c.phrases)) for c in question.concepts]
        entail = np.zeros_like(found.similarity)
        entail[rows, cols] = best_probabilities(self.verifier, [texts[i] for i in rows], [phrases[j] for j in cols])
        found.similarity = entail  # the score is the verifier's probability; the spans keep their cosine
        return found

    def _cosine_similarities(self, question: Question, texts: list[str]) -> ConceptSimilarities:
        ids = [c.id for c in question.concepts]
        span_lists = self.parse(texts)
        found = _Best(len(texts), len(ids))
        if not ids:
            return found.result(ids)
        phrases = self._concept_phrases(question)
        found.score -= phrases.offset  # an answer without spans is as far below each threshold as a cosine 0
        if self.span_encoding == "pooled":
            return self._pooled_similarities(ids, texts, span_lists, phrases, found)
        # The same text may carry other tags in another answer: a (text, tags) pair is one row.
        unique = list(dict.fromkeys((text, tags) for spans in span_lists for text, tags in spans))
        if not unique:
            return found.result(ids)
        row = {s: i for i, s in enumerate(unique)}
        score, cosine = self._span_concept([t for t, _ in unique], np.array([g for _, g in unique], dtype=np.int64),
                                           phrases)
        for i, spans in enumerate(span_lists):
            if spans:
                rows = [row[(text, tags)] for text, tags in spans]
                found.take(i, score[rows], cosine[rows], [text for text, _ in spans])
        return found.result(ids)

    def _pooled_similarities(self, ids: list[str], texts: list[str], span_lists: list,
                             phrases: _Phrases, found: _Best) -> ConceptSimilarities:
        """As :meth:`concept_similarities`, each span's vector being the mean of its words' token vectors
        from one pass over its answer (a span whose words are not found is left out). The spans of all
        answers are scored in one product with the phrases."""
        vectors, kept, owner = [], [], []
        for i, ((tokens, offsets), spans) in enumerate(zip(self.embedder.encode_tokens(texts), span_lists,
                                                             strict=True)):
            if not len(offsets):
                continue
            inside, answer_spans = [], []
            for text, tags in spans:
                words = locate_words(texts[i], text)
                if not words:
                    continue
                w = np.asarray(words)
                # A token belongs to the span when it overlaps one of its words' characters.
                hit = ((offsets[None, :, 0] < w[:, 1:2]) & (offsets[None, :, 1] > w[:, 0:1])).any(axis=0)
                if hit.any():
                    inside.append(hit)
                    answer_spans.append((text, tags))
            if not inside:
                continue
            member = np.stack(inside).astype(np.float32)
            vec = (member @ tokens) / member.sum(axis=1, keepdims=True)
            vectors.append(vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12))
            kept.extend(answer_spans)
            owner.extend([i] * len(answer_spans))
        if not kept:
            return found.result(ids)
        score, cosine = self._span_concept([t for t, _ in kept], np.array([g for _, g in kept], dtype=np.int64),
                                           phrases, np.concatenate(vectors).astype(np.float32))
        bounds = np.flatnonzero(np.diff(owner)) + 1
        for rows in np.split(np.arange(len(kept)), bounds):
            found.take(owner[rows[0]], score[rows], cosine[rows], [kept[r][0] for r in rows])
        return found.result(ids)

    def explain(self, question: Question, sims: np.ndarray, best: list[str], graph: nx.DiGraph | None = None,
                text: str | None = None, cosine: np.ndarray | None = None,
                ) -> tuple[float, list[str], list[str], dict[str, Any]]:
        """S_KG, matched ids, missing ids and the explanation keys for one answer's scores (``sims``; the
        spans' own ``cosine`` where the score differs from it; with a verifier ``sims`` are its probabilities,
        reported as ``entailment``). With the answer's ``text``, each concept's span is quoted from it, with
        its ``start``/``end`` characters."""
        graph = graph if graph is not None else rubric_graph(question)
        ids = [c.id for c in question.concepts]
        matched = [cid for cid, s in zip(ids, sims, strict=True) if s >= self.threshold]
        missing = [cid for cid, s in zip(ids, sims, strict=True) if s < self.threshold]
        s_kg = list_share(kg_score(graph, set(matched), self.edge_bonus), len(ids), question.concepts_for_full_marks)
        cosine = sims if cosine is None else cosine
        entry = {cid: {"id": cid, "span": span, "similarity": round(float(c), 4)}
                 for cid, c, span in zip(ids, cosine, best, strict=True)}
        if self.verifier is not None:
            for cid, e in zip(ids, sims, strict=True):
                entry[cid]["entailment"] = round(float(e), 4)
        if self.phrase_slope:
            for cid, off in zip(ids, self._concept_phrases(question).offset, strict=True):
                entry[cid]["threshold"] = round(self.threshold + float(off), 4)
        for e in entry.values():
            where = locate(text, e["span"]) if text is not None else None
            if where is not None:
                e.update(span=text[where[0]:where[1]], start=where[0], end=where[1])
        details = {
            "fraction": round(s_kg, 6),
            "s_kg": round(s_kg, 6),
            "threshold": self.threshold,
            "matches": [entry[c] for c in matched],
            "closest_missing": [entry[c] for c in missing],
            "relations_satisfied": [list(r) for r in satisfied_relations(graph, set(matched))],
        }
        return s_kg, matched, missing, details

    def grade(self, question: Question, answers: list[Answer]) -> list[GradeResult]:
        graph = rubric_graph(question)
        found = self.concept_similarities(question, [a.text for a in answers])
        results = []
        for answer, sims, best, cosine in zip(answers, found.similarity, found.best_span, found.cosine, strict=True):
            s_kg, matched, missing, details = self.explain(question, sims, best, graph, answer.text, cosine)
            results.append(GradeResult(points=to_points(s_kg, question.max_points, question.granularity),
                                       max_points=question.max_points, matched=matched, missing=missing,
                                       details=details))
        return results
