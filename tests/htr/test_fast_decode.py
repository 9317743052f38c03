"""htr.fast_decode against transformers' generate on a tiny peaked model (CPU, float32)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutput

from benchmarks.htr_speed.models import build_trocr, random_pixels
from htr.fast_decode import FastDecoder, fast_generate, resolve_settings, trim_generated

EOS = (2,)


@pytest.fixture(scope="module")
def peaked():
    """Peaked distributions, strong image dependence, EOS at varied steps (see build_trocr)."""
    torch.set_num_threads(1)
    return build_trocr("tiny", seed=0, logit_scale=30.0, eos_logit=10.0, cross_gain=20.0,
                       tie_word_embeddings=False)


@pytest.fixture(scope="module")
def pixels(peaked):
    return random_pixels(peaked, 11, seed=1)


_REFERENCES: dict = {}


def naive(model, pixels, **kwargs):
    """One-line-at-a-time ``generate``, the reference (memoised per model and settings)."""
    key = (id(model), tuple(sorted(kwargs.items())))
    if key not in _REFERENCES:
        _REFERENCES[key] = [trim_generated(model.generate(pixel_values=pixels[i:i + 1], **kwargs), EOS)[0]
                            for i in range(pixels.shape[0])]
    return _REFERENCES[key]


@pytest.mark.parametrize("kwargs, batch_sizes", [
    (dict(num_beams=5, max_new_tokens=16), (1, 4, 11)),
    (dict(num_beams=5, max_new_tokens=16, early_stopping=True, length_penalty=2.0), (4, 11)),
    (dict(num_beams=4, max_new_tokens=12, early_stopping="never", length_penalty=0.5), (4, 11)),
    (dict(num_beams=3, max_new_tokens=16, length_penalty=-1.0), (4,)),
    (dict(num_beams=1, max_new_tokens=16), (1, 4, 11)),
])
def test_matches_one_line_generate(peaked, pixels, kwargs, batch_sizes):
    reference = naive(peaked, pixels, **kwargs)
    assert len({len(r) for r in reference}) > 1, "the fixture should end lines at different steps"
    assert any(r[-1] == EOS[0] for r in reference) and any(r[-1] != EOS[0] for r in reference)
    for batch_size in batch_sizes:
        ours = trim_generated(fast_generate(peaked, pixels, batch_size=batch_size, **kwargs), EOS)
        assert ours == reference, f"batch_size={batch_size}"


@pytest.mark.parametrize("num_beams", [5, 1])
def test_eager_attention_matches_too(peaked, pixels, num_beams):
    kwargs = dict(num_beams=num_beams, max_new_tokens=16)
    ours = trim_generated(fast_generate(peaked, pixels, batch_size=4, attention="eager", **kwargs), EOS)
    assert ours == naive(peaked, pixels, **kwargs)


def test_output_layout_matches_batched_generate(peaked, pixels):
    kwargs = dict(num_beams=5, max_new_tokens=16)
    expected = peaked.generate(pixel_values=pixels, **kwargs)
    got = fast_generate(peaked, pixels, batch_size=4, **kwargs)
    assert got.dtype == torch.long and got.shape == expected.shape
    assert torch.equal(got, expected)


@pytest.mark.parametrize("kwargs", [
    dict(num_beams=5, max_new_tokens=14, no_repeat_ngram_size=2),
    dict(num_beams=5, max_new_tokens=14, min_new_tokens=6),
    dict(num_beams=3, max_new_tokens=10, min_length=5, forced_eos_token_id=2),
    dict(num_beams=1, max_new_tokens=14, no_repeat_ngram_size=1, min_new_tokens=3),
])
def test_logits_processors(peaked, pixels, kwargs):
    assert trim_generated(fast_generate(peaked, pixels, batch_size=6, **kwargs), EOS) == naive(peaked, pixels, **kwargs)


def test_length_hint_only_reorders_work(peaked, pixels):
    kwargs = dict(num_beams=5, max_new_tokens=16)
    hint = [float(i % 5) for i in range(pixels.shape[0])]
    plain = fast_generate(peaked, pixels, batch_size=3, **kwargs)
    sorted_ = fast_generate(peaked, pixels, batch_size=3, length_hint=hint, **kwargs)
    assert trim_generated(plain, EOS) == trim_generated(sorted_, EOS)


def test_generation_config_defaults_are_used(peaked, pixels):
    model = build_trocr("tiny", seed=0, logit_scale=30.0, eos_logit=10.0, cross_gain=20.0,
                        tie_word_embeddings=False)
    model.generation_config.num_beams = 4
    model.generation_config.max_length = 11
    model.generation_config.early_stopping = True
    settings = resolve_settings(model)
    assert (settings.num_beams, settings.max_new_tokens, settings.early_stopping) == (4, 10, True)
    assert trim_generated(fast_generate(model, pixels), EOS) == naive(model, pixels)


def test_unsupported_settings_are_refused(peaked, pixels):
    with pytest.raises(ValueError, match="repetition_penalty"):
        fast_generate(peaked, pixels, num_beams=2, max_new_tokens=4, repetition_penalty=1.3)
    with pytest.raises(ValueError, match="do_sample"):
        fast_generate(peaked, pixels, num_beams=2, max_new_tokens=4, do_sample=True)
    with pytest.raises(TypeError, match="VisionEncoderDecoderModel"):
        FastDecoder(torch.nn.Linear(2, 2), settings=resolve_settings(peaked, 2, 4))


def test_static_cache_step_matches_full_forward(peaked, pixels):
    """Logits of each cached single-token step equal a full uncached forward over the same prefix."""
    settings = resolve_settings(peaked, num_beams=1, max_new_tokens=8)
    decoder = FastDecoder(peaked, settings=settings, batch_size=pixels.shape[0])
    from htr.fast_decode import _BatchState

    state = _BatchState(decoder, pixels.shape[0])
    with torch.no_grad():
        enc = decoder._encode(pixels)
        state.load(enc)
        tokens = torch.randint(3, peaked.config.decoder.vocab_size, (pixels.shape[0], 8))
        tokens[:, 0] = settings.decoder_start_token_id
        full = peaked(encoder_outputs=BaseModelOutput(last_hidden_state=peaked.encoder(pixels).last_hidden_state),
                      decoder_input_ids=tokens).logits
        for t in range(8):
            step = state._decoder_step(tokens[:, t:t + 1], t)[:, 0]
            torch.testing.assert_close(step, full[:, t], rtol=1e-5, atol=1e-5)


def test_weight_updates_reach_a_dtype_copy(pixels):
    model = build_trocr("tiny", seed=3, logit_scale=30.0, eos_logit=10.0, cross_gain=20.0,
                        tie_word_embeddings=False)
    kwargs = dict(num_beams=3, max_new_tokens=10)
    decoder = FastDecoder(model, settings=resolve_settings(model, **kwargs), dtype=torch.float64)
    before = trim_generated(decoder.generate(pixels), EOS)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    after = trim_generated(decoder.generate(pixels), EOS)
    assert after != before
    reference = copy.deepcopy(model).to(torch.float64)
    assert after == naive(reference, pixels.to(torch.float64), **kwargs)
