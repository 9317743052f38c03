"""Encoder variants (torch, ONNX float32, ONNX int8), their cache keys, pooled-span offsets and spaCy components."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from grading.embed import ENCODER_VARIANTS, Embedder, encoder_id, onnx_model
from grading.graders.concepts import locate_words, span_options, span_parser, span_pipes
from inkbase.errors import ConfigError

SENTENCES = ["The array must be sorted.", "the elements have to be in ascending order", "the mass cancels",
             "The number of steps grows like log2 of n, so binary search is O(log n).",
             "Gravity pulls harder on the heavier ball, but its larger inertia cancels that out."]
FULL = {"noun_chunks": True, "entities": True, "sentences": True, "clauses": True, "segments": True, "window": 6,
        "min_chars": 2}
LIGHT = {**FULL, "noun_chunks": False, "entities": False, "clauses": False}


@pytest.fixture(scope="module")
def onnx_embedders(embedder):
    """Exported once into the user's ONNX cache (~10 s the first time), read from it afterwards."""
    return {v: Embedder(embedder.model_name, variant=v).load() for v in ("onnx", "onnx-int8")}


def test_onnx_variants_embed_like_torch(embedder, onnx_embedders):
    reference = embedder.encode(SENTENCES)
    fp32 = (onnx_embedders["onnx"].encode(SENTENCES) * reference).sum(axis=1)
    int8 = (onnx_embedders["onnx-int8"].encode(SENTENCES) * reference).sum(axis=1)
    assert fp32.min() > 0.9999
    assert int8.min() > 0.99 and int8.max() < 1 - 1e-4  # quantised, not the float network


def test_onnx_token_pass_has_torch_offsets_and_sentence_vector(embedder, onnx_embedders):
    int8 = onnx_embedders["onnx-int8"]
    for text, (vectors, offsets), (_, torch_offsets) in zip(SENTENCES, int8.encode_tokens(SENTENCES),
                                                              embedder.encode_tokens(SENTENCES), strict=True):
        assert np.array_equal(offsets, torch_offsets) and vectors.shape == (len(offsets), int8.dim)
        assert offsets[0][0] == 0 and offsets[-1][1] == len(text)
    fresh = Embedder(embedder.model_name, variant="onnx-int8")
    fresh._session, fresh._tokenizer = int8.session, int8.tokenizer
    stored = int8.encode(SENTENCES)  # what encode_tokens left in memory: the mean of the same pass
    assert np.allclose((stored * fresh.encode(SENTENCES)).sum(axis=1), 1.0, atol=1e-4)


def test_export_is_cached_per_variant(onnx_embedders):
    paths = {v: onnx_model("sentence-transformers/all-MiniLM-L6-v2", v) for v in ("onnx", "onnx-int8")}
    assert paths["onnx"] != paths["onnx-int8"] and all(p.is_file() for p in paths.values())
    before = paths["onnx-int8"].stat().st_mtime_ns
    assert onnx_model("sentence-transformers/all-MiniLM-L6-v2", "onnx-int8").stat().st_mtime_ns == before


def test_cache_key_differs_per_variant_and_length():
    model = "sentence-transformers/all-MiniLM-L6-v2"
    keys = {Embedder(model, variant=v, max_seq_length=n)._key("the mass cancels")
            for v in ENCODER_VARIANTS for n in (None, 64)}
    assert len(keys) == 2 * len(ENCODER_VARIANTS)
    # The torch variant keeps the key vectors were cached under before there were variants.
    assert Embedder(model)._key("x") == hashlib.sha1(f"{model}\0x".encode()).hexdigest()
    assert encoder_id(model, "onnx-int8") != encoder_id(model, "onnx")
    with pytest.raises(ConfigError, match="embedder.variant"):
        Embedder(model, variant="int4")


def test_variants_never_read_each_others_cached_vectors(embedder, onnx_embedders, tmp_path):
    Embedder(embedder.model_name, cache_dir=tmp_path).encode(["zzz unlikely text"])  # torch vector on disk
    int8 = Embedder(embedder.model_name, variant="onnx-int8", cache_dir=tmp_path)
    int8._session, int8._tokenizer = onnx_embedders["onnx-int8"].session, onnx_embedders["onnx-int8"].tokenizer
    cached = int8._cache.get_many([int8._key("zzz unlikely text")])
    assert cached == {}


def _regex_words(text: str, span: str):
    """The regex search locate_words falls back to, for comparison."""
    words = [re.escape(w).replace("'", "['\u2019]") for w in span.split()]
    left, right = (r"\b" if span[0].isalnum() else ""), (r"\b" if span[-1].isalnum() else "")
    for gap in (r"\s+", r"[\s\S]*?"):
        found = re.search(left + gap.join(f"({w})" for w in words) + right, text, flags=re.IGNORECASE)
        if found:
            return [found.span(k + 1) for k in range(len(words))]
    return None


@pytest.mark.parametrize(("text", "span", "words"), [
    ("The massive ball: the MASS  cancels.", "the mass cancels", ["the", "MASS", "cancels"]),
    ("It\u2019s sorted,\n\tso it's fast", "it's fast", ["it's", "fast"]),
    ("It\u2019s sorted", "it's sorted", ["It\u2019s", "sorted"]),
    ("The mass, which is large, cancels", "the mass cancels", ["The", "mass", "cancels"]),  # a gap: regex
    ("\u0130stanbul: the mass cancels", "the mass cancels", ["the", "mass", "cancels"]),  # unfoldable text
    ("f = mg, so a = g", "a = g", ["a", "=", "g"]),
])
def test_pooled_span_words_are_the_answers_own_text(text, span, words):
    found = locate_words(text, span)
    assert [text[s:e] for s, e in found] == words
    assert found == _regex_words(text, span)
    assert locate_words("the massive ball", "the mass") is None


def test_spacy_components_follow_the_spans():
    assert span_pipes(span_options(FULL)) == ("tok2vec", "tagger", "attribute_ruler", "parser", "ner")
    assert span_pipes(span_options({**FULL, "entities": False})) == ("tok2vec", "tagger", "attribute_ruler",
                                                                      "parser")
    assert span_pipes(span_options(LIGHT)) == ("sentencizer",)
    assert span_pipes(span_options({**LIGHT, "entities": True})) == ("sentencizer", "tok2vec", "ner")


def test_tokenizer_only_spans_are_sentences_segments_and_windows():
    text = "The mass cancels out, so both balls fall together. Air resistance is ignored here."
    spans = [s for s, _ in span_parser(span_options({**LIGHT, "window": 3}))([text])[0]]
    assert spans[:4] == ["the mass cancels out, so both balls fall together", "the mass cancels out",
                         "both balls fall together", "the mass cancels"]
    assert "air resistance is ignored here" in spans and "air resistance is" in spans
    assert not any("together. air" in s for s in spans)  # windows stay inside a sentence
