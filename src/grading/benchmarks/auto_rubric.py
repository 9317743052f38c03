"""Concepts for datasets that have a reference answer but no concept rubric.

The reference answer's noun chunks (spaCy, determiners and pronouns dropped, duplicates merged) become
the concepts, with equal weights, so the knowledge-graph and keyword graders can run on them. A
reference with no usable noun chunk becomes a single concept (its own text).
"""

from __future__ import annotations

import functools

from grading.graders.concepts import SPACY_MODEL, load_nlp
from grading.rubric import Concept

MAX_CONCEPTS = 12
_DROP_POS = {"DET", "PRON", "PUNCT"}


@functools.lru_cache(maxsize=4096)
def _noun_chunks(text: str) -> tuple[str, ...]:
    doc = load_nlp(SPACY_MODEL)(text)
    chunks = []
    for chunk in doc.noun_chunks:
        words = [t.text for t in chunk if t.pos_ not in _DROP_POS]
        phrase = " ".join(words).strip().lower()
        if len(phrase) >= 3:
            chunks.append(phrase)
    return tuple(dict.fromkeys(chunks))


def auto_concepts(reference: str, max_concepts: int = MAX_CONCEPTS) -> list[Concept]:
    """Equal-weight concepts from the noun chunks of ``reference``."""
    phrases = list(_noun_chunks(reference.strip()))[:max_concepts]
    if not phrases:
        phrases = [reference.strip()[:300] if any(ch.isalnum() for ch in reference) else "answer"]
    return [Concept(id=f"c{i + 1}", label=p, weight=1.0) for i, p in enumerate(phrases)]
