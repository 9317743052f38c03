"""KG span_encoding=pooled: one transformer pass per answer, span vectors from its token vectors."""

from __future__ import annotations

import numpy as np
import pytest

from grading.graders import build_grader
from grading.rubric import Answer
from inkbase.cli import compose
from inkbase.errors import ConfigError

from .test_kg import QUESTION


def test_token_pass_keeps_the_answer_embedding(embedder):
    texts = ["The mass cancels out, so both balls fall together.", "Binary search needs a sorted array."]
    tokens = embedder.encode_tokens(texts)
    for text, (vectors, offsets) in zip(texts, tokens, strict=True):
        assert vectors.shape == (len(offsets), embedder.dim) and len(offsets) > 3
        assert offsets[0][0] == 0 and offsets[-1][1] == len(text)  # special tokens left out
        assert all(text[s:e].strip() for s, e in offsets)
    fresh = type(embedder)(embedder.model_name)
    fresh._model = embedder.model
    stored = embedder.encode(texts)  # from memory: what encode_tokens left there
    assert np.allclose((stored * fresh.encode(texts)).sum(axis=1), 1.0, atol=1e-4)


def kg(embedder, tmp_path, **overrides):
    cfg = compose("grade", ["grader=kg", "rubric=x", "answers=y", f"paths.cache_dir={tmp_path}",
                            *[f"grader.{k}={v}" for k, v in overrides.items()]]).grader
    return build_grader(cfg, embedder)


def test_pooled_matching_finds_stated_concepts_and_quotes_them(embedder, tmp_path):
    grader = kg(embedder, tmp_path, span_encoding="pooled", threshold=0.5)
    texts = ["Gravity pulls harder on the heavier ball, but the mass cancels out, so both accelerate at g.",
             "The heavy ball is made of metal."]
    right, wrong = grader.grade(QUESTION, [Answer(answer_id=str(i), question_id="Q1", text=t)
                                           for i, t in enumerate(texts)])
    assert set(right.matched) == {"gravity", "cancels", "same_acc"}
    assert "cancels" not in wrong.matched and "same_acc" not in wrong.matched
    for text, res in zip(texts, (right, wrong), strict=True):
        for e in res.details["matches"] + res.details["closest_missing"]:
            assert text[e["start"]:e["end"]] == e["span"]


def test_unknown_span_encoding_is_a_config_error(embedder, tmp_path):
    with pytest.raises(ConfigError, match="span_encoding"):
        kg(embedder, tmp_path, span_encoding="bag")
