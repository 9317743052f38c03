"""Lanke et al.'s knowledge-graph grader: rubric concepts as a weighted graph, matched by embedding similarity.

The rubric question becomes a networkx DiGraph (concept nodes with label, weight and synonyms; edges
typed by relation). The student answer is cut into spans (:mod:`grading.graders.concepts`). A concept's
similarity is the largest cosine (all-MiniLM-L6-v2) over every (student span, concept phrase) pair, the
phrases being its label and synonyms; the concept is matched when that similarity reaches ``threshold``.
Pairs whose directions oppose ("shifts right" / "shifts left": cosine ~0.9 for MiniLM) are ruled out first
(``direction_check``). ``span_encoding``: ``separate`` embeds every span on its own (one transformer pass
per distinct span, ~34 per answer); ``pooled`` runs one pass per answer and averages the contextual token
vectors of each span's words (:meth:`grading.embed.Embedder.encode_tokens`), which also yields the answer's
own embedding for the similarity grader. Lanke et al., Eq. 1: ``S_KG = matched weight / total weight``
(over ``Question.concepts_for_full_marks`` concepts' weight where a rubric of alternatives sets it). With ``edge_bonus`` > 0
the score becomes ``(1 - edge_bonus) * S_KG + edge_bonus * (satisfied relations / relations)``, a
relation being satisfied when both its ends are matched; the default 0 keeps the paper's formula.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from grading.embed import Embedder
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
from inkbase.errors import ConfigError, check_range

SPAN_ENCODINGS = ("separate", "pooled")


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
    """For each answer (row) and concept (column): the best cosine and the student span that reached it."""

    concept_ids: list[str]
    similarity: np.ndarray  # (n_answers, n_concepts)
    best_span: list[list[str]]


@dataclass
class _Phrases:
    """A question's concept phrases (labels and synonyms), grouped by concept."""

    text: list[str]
    vectors: np.ndarray  # (p, d)
    starts: np.ndarray  # first column of each concept
    polarity: np.ndarray  # (p,) tag bits


class KGGrader(Grader):
    """``direction_check``: a span and a phrase naming opposite directions ("shifts right" / "shifts left")
    do not match. ``negation_check``: nor do a negated and an affirmative one."""

    def __init__(self, embedder: Embedder, threshold: float, edge_bonus: float, spans: dict | SpanOptions,
                 direction_check: bool, negation_check: bool, spacy_model: str, cache_dir: str | Path | None,
                 batch_size: int, n_process: int, name: str = "kg", span_encoding: str = "separate"):
        self.embedder = embedder
        self.threshold = check_range("grader.threshold", threshold, 0.0, 1.0)
        self.edge_bonus = check_range("grader.edge_bonus", edge_bonus, 0.0, 1.0)
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

    def _concept_phrases(self, question: Question) -> _Phrases:
        key = tuple((c.id, tuple(c.phrases)) for c in question.concepts)
        if key not in self._phrases:
            phrases, starts = [], []
            for c in question.concepts:
                starts.append(len(phrases))
                phrases.extend(dict.fromkeys(normalise(p) for p in c.phrases))
            self._phrases[key] = _Phrases(phrases, self.embedder.encode(phrases), np.asarray(starts, dtype=int),
                                          np.array([polarity(p) for p in phrases], dtype=np.int64))
        return self._phrases[key]

    def _pair_similarity(self, spans: list[str] | np.ndarray, tags: np.ndarray, phrases: _Phrases) -> np.ndarray:
        """Cosine of every (span, phrase) pair, 0 where the polarity checks rule the pair out; ``spans`` are
        texts or already their vectors."""
        vectors = self.embedder.encode(spans) if isinstance(spans, list) else spans
        sims = vectors @ phrases.vectors.T
        if self.direction_check or self.negation_check:
            sims[polarity_conflicts(tags, phrases.polarity, directions=self.direction_check,
                                    negation=self.negation_check)] = 0.0
        return sims

    def concept_similarities(self, question: Question, texts: list[str]) -> ConceptSimilarities:
        """Best (span, phrase) cosine per answer and concept; one embedding call for all spans of ``texts``."""
        ids = [c.id for c in question.concepts]
        span_lists = self.parse(texts)
        sims = np.zeros((len(texts), len(ids)), dtype=np.float32)
        best: list[list[str]] = [[""] * len(ids) for _ in texts]
        if not ids:
            return ConceptSimilarities(ids, sims, best)
        phrases = self._concept_phrases(question)
        if self.span_encoding == "pooled":
            return self._pooled_similarities(ids, texts, span_lists, phrases)
        # The same text may carry other tags in another answer: a (text, tags) pair is one row.
        unique = list(dict.fromkeys((text, tags) for spans in span_lists for text, tags in spans))
        if not unique:
            return ConceptSimilarities(ids, sims, best)
        row = {s: i for i, s in enumerate(unique)}
        pair = self._pair_similarity([t for t, _ in unique], np.array([g for _, g in unique], dtype=np.int64),
                                     phrases)
        # (unique spans, concepts): each concept's best phrase for every span.
        span_concept = np.maximum.reduceat(pair, phrases.starts, axis=1)
        for i, spans in enumerate(span_lists):
            if not spans:
                continue
            block = span_concept[[row[(text, tags)] for text, tags in spans]]
            arg = block.argmax(axis=0)
            sims[i] = block[arg, np.arange(len(ids))]
            best[i] = [spans[k][0] for k in arg]
        return ConceptSimilarities(ids, np.clip(sims, 0.0, 1.0), best)

    def _pooled_similarities(self, ids: list[str], texts: list[str], span_lists: list,
                             phrases: _Phrases) -> ConceptSimilarities:
        """As :meth:`concept_similarities`, each span's vector being the mean of its words' token vectors
        from one pass over its answer (a span whose words are not found is left out)."""
        sims = np.zeros((len(texts), len(ids)), dtype=np.float32)
        best: list[list[str]] = [[""] * len(ids) for _ in texts]
        for i, ((tokens, offsets), spans) in enumerate(zip(self.embedder.encode_tokens(texts), span_lists,
                                                             strict=True)):
            rows, kept = [], []
            for text, tags in spans:
                words = locate_words(texts[i], text)
                if not words or not len(offsets):
                    continue
                inside = np.zeros(len(offsets), dtype=bool)
                for start, end in words:
                    inside |= (offsets[:, 0] < end) & (offsets[:, 1] > start)
                if inside.any():
                    vec = tokens[inside].mean(axis=0)
                    rows.append(vec / max(float(np.linalg.norm(vec)), 1e-12))
                    kept.append((text, tags))
            if not rows:
                continue
            pair = self._pair_similarity(np.stack(rows).astype(np.float32),
                                         np.array([g for _, g in kept], dtype=np.int64), phrases)
            block = np.maximum.reduceat(pair, phrases.starts, axis=1)
            arg = block.argmax(axis=0)
            sims[i] = block[arg, np.arange(len(ids))]
            best[i] = [kept[k][0] for k in arg]
        return ConceptSimilarities(ids, np.clip(sims, 0.0, 1.0), best)

    def explain(self, question: Question, sims: np.ndarray, best: list[str], graph: nx.DiGraph | None = None,
                text: str | None = None) -> tuple[float, list[str], list[str], dict[str, Any]]:
        """S_KG, matched ids, missing ids and the explanation keys for one answer's similarities. With the
        answer's ``text``, each concept's span is quoted from it, with its ``start``/``end`` characters."""
        graph = graph if graph is not None else rubric_graph(question)
        ids = [c.id for c in question.concepts]
        matched = [cid for cid, s in zip(ids, sims, strict=True) if s >= self.threshold]
        missing = [cid for cid, s in zip(ids, sims, strict=True) if s < self.threshold]
        s_kg = list_share(kg_score(graph, set(matched), self.edge_bonus), len(ids), question.concepts_for_full_marks)
        entry = {cid: {"id": cid, "span": span, "similarity": round(float(s), 4)}
                 for cid, s, span in zip(ids, sims, best, strict=True)}
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
        for answer, sims, best in zip(answers, found.similarity, found.best_span, strict=True):
            s_kg, matched, missing, details = self.explain(question, sims, best, graph, answer.text)
            results.append(GradeResult(points=to_points(s_kg, question.max_points, question.granularity),
                                       max_points=question.max_points, matched=matched, missing=missing,
                                       details=details))
        return results
