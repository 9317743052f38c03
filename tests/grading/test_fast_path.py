"""The fast grading path (grader=kg_fast / hybrid_fast): batched tokenization, vectorised span pooling, one
encoder pass per answer for both hybrid parts, onnxruntime threads that do not spin."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from grading.embed import Embedder, onnx_model
from grading.graders import build_grader
from grading.graders.concepts import locate_words, normalise, polarity, polarity_conflicts
from grading.rubric import Answer
from inkbase.cli import compose

from .test_kg import QUESTION

TEXTS = ["Gravity pulls harder on the heavier ball, but the mass cancels out, so both accelerate at g.",
         "", "The café\u2019s  naïve   owner said: E = mc^2 (roughly)!", "The heavy ball is made of metal.",
         " ".join(["the mass cancels out"] * 80)]  # ~320 word pieces: cut at the model's 256


@pytest.mark.parametrize("max_seq_length", [None, 8])
def test_batched_tokenizer_gives_what_transformers_gives(max_seq_length):
    emb = Embedder(variant="onnx-int8", max_seq_length=max_seq_length)  # the tokenizer only, no network
    ours = emb._tokenize(TEXTS, offsets=True)
    theirs = emb.tokenizer(TEXTS, padding=True, truncation=True, max_length=emb._max_length,
                           return_offsets_mapping=True, return_special_tokens_mask=True, return_tensors="np")
    assert set(ours) == set(theirs.keys()) == {"input_ids", "attention_mask", "token_type_ids", "offset_mapping",
                                               "special_tokens_mask"}
    for key, value in theirs.items():
        assert ours[key].dtype == np.int64 and np.array_equal(ours[key], value), key
    assert ours["input_ids"].shape[1] == (max_seq_length or 256)
    assert set(emb._tokenize(TEXTS[:2])) == {"input_ids", "attention_mask", "token_type_ids"}


def test_pooled_span_cosine_is_the_mean_of_its_words_token_vectors(embedder, tmp_path):
    cfg = compose("grade", ["grader=kg_fast", "rubric=x", "answers=y", f"paths.cache_dir={tmp_path}"]).grader
    grader = build_grader(cfg, embedder)
    texts = [TEXTS[0], TEXTS[3], ""]
    found = grader.concept_similarities(QUESTION, texts)
    # The same quantity computed span by span, as the definition reads.
    phrases = [[normalise(p) for p in dict.fromkeys(c.phrases)] for c in QUESTION.concepts]
    for i, ((tokens, offsets), spans) in enumerate(zip(embedder.encode_tokens(texts), grader.parse(texts),
                                                         strict=True)):
        for j, concept_phrases in enumerate(phrases):
            best, best_span = 0.0, ""
            for text, tags in spans:
                words = locate_words(texts[i], text)
                inside = np.zeros(len(offsets), dtype=bool)
                for start, end in words:
                    inside |= (offsets[:, 0] < end) & (offsets[:, 1] > start)
                vec = tokens[inside].mean(axis=0)
                vec /= np.linalg.norm(vec)
                cos = max(0.0 if polarity_conflicts(np.array([tags]), np.array([polarity(p)]))[0, 0]
                          else float(vec @ embedder.encode([p])[0]) for p in concept_phrases)
                if cos > best:
                    best, best_span = cos, text
            assert found.cosine[i, j] == pytest.approx(max(best, 0.0), abs=1e-5)
            if best > 0:
                assert found.best_span[i][j] == best_span
    assert found.cosine[0].max() > 0.6 and (found.cosine[2] == 0).all()


def test_hybrid_fast_runs_one_encoder_pass_per_answer(embedder, tmp_path, monkeypatch):
    cfg = compose("grade", ["grader=hybrid_fast", "rubric=x", "answers=y", f"paths.cache_dir={tmp_path}"]).grader
    hybrid = build_grader(cfg, embedder)
    warm = Answer(answer_id="w", question_id="Q1", text=QUESTION.reference_answer)
    hybrid.grade(QUESTION, [warm])  # phrases and the reference answer embedded
    passes = []
    real = embedder._token_states
    monkeypatch.setattr(embedder, "_token_states", lambda texts, offsets=False: passes.append(len(texts)) or
                        real(texts, offsets))
    monkeypatch.setattr(embedder, "_encode_new", lambda texts: pytest.fail(f"encoded again: {texts}"))
    answers = [Answer(answer_id=str(i), question_id="Q1", text=t) for i, t in enumerate(TEXTS[:4:3])]
    results = hybrid.grade(QUESTION, answers)
    assert passes == [2]  # both answers in one batch, and the semantic part read their vectors from memory
    assert "cancels" in results[0].matched and results[0].points > results[1].points


@pytest.mark.parametrize("variant", ["torch", "onnx-int8"])
def test_token_pass_answer_vector_matches_encode(variant, embedder, onnx_int8):
    """The hybrid's semantic part reads the answer vector the token pass left in memory: the masked mean of its
    token states, normalised, i.e. what ``encode`` computes. int8's activation scales are set per batch, so its
    vectors are compared over the same batch (alone, a text's int8 vector moves by up to ~0.01 per component)."""
    source = embedder if variant == "torch" else onnx_int8
    texts = [TEXTS[0], TEXTS[2], TEXTS[3]]
    source.encode_tokens(texts)
    stored = source.encode(texts)
    fresh = Embedder(variant=variant, cache=False)
    fresh._model, fresh._session = source._model, source._session
    assert np.abs(stored - fresh.encode(texts)).max() < 1e-5
    assert np.allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-6)


def test_onnx_threads_wait_without_spinning(onnx_int8):
    options = onnx_int8.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads >= 1


@pytest.fixture(scope="module")
def onnx_int8():
    return Embedder(variant="onnx-int8", cache=False).load()


def test_all_int8_encoder_is_its_own_variant_near_torch(embedder, onnx_int8):
    every = Embedder(variant="onnx-int8-all", cache=False).load()
    texts = [TEXTS[0], TEXTS[2], TEXTS[3]]
    reference = embedder.encode(texts)
    cos_all = (every.encode(texts) * reference).sum(axis=1)
    cos_int8 = (onnx_int8.encode(texts) * reference).sum(axis=1)
    assert cos_all.min() > 0.98 and not np.allclose(cos_all, cos_int8, atol=1e-4)
    assert every.encoder_id != onnx_int8.encoder_id
    def integer_products(e: Embedder) -> int:
        return sum(n.op_type == "MatMulInteger" for n in onnx.load(str(onnx_model(e.model_name, e.variant))).graph.node)

    assert integer_products(every) == 36 and integer_products(onnx_int8) == 30  # 6 weight products per layer
