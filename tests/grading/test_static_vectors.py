"""Static word-piece vectors (grading.static_vectors) and the KG grader's ``span_encoding: static``."""

from __future__ import annotations

import numpy as np
import pytest

from grading import static_vectors as sv
from grading.graders import build_grader

from .test_kg import QUESTION, kg_config


@pytest.fixture(scope="module")
def table(embedder) -> sv.StaticVectors:
    """A random table over the packaged model's vocabulary (the real tokenizer, made-up vectors)."""
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(embedder.tokenizer.backend_tokenizer.get_vocab_size(), 8)).astype(np.float32)
    return sv.StaticVectors(rows, embedder.tokenizer.backend_tokenizer.to_str())


def test_a_text_is_the_normalised_mean_of_its_word_pieces(embedder, table):
    text = "The array must be sorted"
    ids = embedder.tokenizer(text, add_special_tokens=False)["input_ids"]
    want = table.table[ids].mean(axis=0)
    got = table.encode([text, "", "   "])
    assert np.allclose(got[0], want / np.linalg.norm(want), atol=1e-6)
    assert not got[1].any() and not got[2].any()  # no piece: a zero vector, cosine 0 with everything


def test_a_piece_row_is_the_models_own_vector_for_it_alone(embedder):
    piece = embedder.tokenizer.convert_tokens_to_ids("array")
    hidden, mask, _ = embedder._token_states(["array"])  # [CLS] array [SEP]
    assert mask[0].sum() == 3
    assert np.allclose(sv.distill_rows(embedder, [piece])[0], hidden[0, 1], atol=1e-4)


def test_the_table_is_centred_and_reduced():
    rows = np.random.default_rng(1).normal(loc=3.0, size=(200, 16)).astype(np.float32)
    small = sv.distill_table(rows, dim=4)
    assert small.shape == (200, 4) and np.allclose(small.mean(axis=0), 0, atol=1e-4)
    assert np.all(np.diff(small.var(axis=0)) <= 1e-6)  # components by falling variance


def test_kg_static_matches_a_phrase_written_verbatim(embedder, table, tmp_path):
    kg = build_grader(kg_config(tmp_path, span_encoding="static", threshold=0.99), embedder)
    kg._static = table  # the distilled table is tested in the slow tier; the grading path is the same
    sims = kg.concept_similarities(QUESTION, ["Mass cancels out.", "The sky is blue."])
    col = sims.concept_ids.index("cancels")
    assert sims.similarity[0, col] == pytest.approx(1.0, abs=1e-5)  # same pieces as the label: cosine 1
    assert sims.best_span[0][col].lower().rstrip(".") == "mass cancels out"
    assert sims.similarity[1].max() < 0.99
    res = kg.grade(QUESTION, [kg_answer("Mass cancels out.")])[0]
    assert "cancels" in res.matched and "gravity" in res.missing


def kg_answer(text):
    from grading.rubric import Answer

    return Answer(answer_id="a", question_id=QUESTION.id, text=text)


@pytest.mark.slow
def test_static_vectors_are_distilled_once_and_read_back(embedder):
    sv._LOADED.clear()
    first = sv.static_vectors(embedder)
    path = sv._cache_path(embedder, sv.DIM)
    assert path.is_file() and first.table.shape == (embedder.tokenizer.backend_tokenizer.get_vocab_size(), sv.DIM)
    sv._LOADED.clear()
    again = sv.static_vectors(embedder)
    assert np.array_equal(again.table, first.table)
    a, b, c = again.encode(["the array must be sorted", "the elements are in ascending order", "photosynthesis"])
    assert a @ b > a @ c  # a paraphrase sits nearer than an unrelated word


def test_a_scorer_trained_on_static_vectors_reads_them_itself(embedder):
    from grading.embed import Embedder
    from grading.graders.semantic import SemanticGrader
    from inkbase.errors import ConfigError

    static = SemanticGrader(embedder, "semantic_semeval_static.json")  # the configured embedder is MiniLM's
    assert static.embedder.variant == "static" and static.model.embedder_model == static.embedder.feature_space
    assert embedder.feature_space == embedder.model_name  # the shipped default scorer's space
    with pytest.raises(ConfigError, match="#static"):
        SemanticGrader(Embedder(variant="static", cache=False), "semantic_semeval.json")


def test_a_static_embedder_has_no_token_vectors():
    from grading.embed import Embedder
    from inkbase.errors import ConfigError

    with pytest.raises(ConfigError, match="span_encoding"):
        Embedder(variant="static", cache=False).encode_tokens(["the array is sorted"])
