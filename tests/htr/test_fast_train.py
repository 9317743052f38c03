"""htr.fast_train: the training speed-ups must leave losses, gradients, generation and saved weights unchanged."""

import copy

import pytest
import torch

from benchmarks.htr_speed.models import build_trocr
from htr.fast_train import (
    PaddedOutputProjection,
    pad_output_projection,
    restore_output_projection,
    sdpa_decoder_attention,
    speed_up_training,
)


@pytest.fixture()
def pair():
    """A tiny TrOCR-architecture model in training mode and an untouched copy."""
    model = build_trocr("tiny", seed=3, tie_word_embeddings=True).train()
    return model, copy.deepcopy(model)


def _loss_and_grads(model, pixels, labels, decoder_attention_mask=None):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # the same dropout masks for both models
    loss = model(pixel_values=pixels, labels=labels, decoder_attention_mask=decoder_attention_mask,
                 use_cache=False).loss
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("with_padding_mask", [False, True])
def test_loss_and_gradients_match_the_unpatched_model(pair, with_padding_mask):
    fast, plain = pair
    done = speed_up_training(fast, pad_vocab_to=50)  # vocabulary 64 -> 100 rows
    assert done == {"sdpa_decoder_attention": 4, "vocab_padding": 36}
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(3, 3, 32, 32, generator=g)
    labels = torch.randint(3, 64, (3, 9), generator=g)
    mask = None
    if with_padding_mask:  # decoder padding: the self-attention mask then differs from plain causal
        mask = torch.ones(3, 9, dtype=torch.long)
        mask[0, 5:] = 0
        mask[2, 7:] = 0
    loss_plain, grads_plain = _loss_and_grads(plain, pixels, labels, mask)
    loss_fast, grads_fast = _loss_and_grads(fast, pixels, labels, mask)
    torch.testing.assert_close(loss_fast, loss_plain, rtol=1e-5, atol=1e-6)
    assert grads_fast.keys() == grads_plain.keys()
    compared = 0
    for name, grad in grads_plain.items():
        if grad is None:
            assert grads_fast[name] is None, name
            continue
        torch.testing.assert_close(grads_fast[name], grad, rtol=1e-4, atol=1e-6, msg=name)
        compared += 1
    assert compared > 20


def test_generation_and_state_dict_are_unchanged(pair):
    fast, plain = pair
    speed_up_training(fast, pad_vocab_to=50)
    decoder = fast.decoder
    assert isinstance(decoder.output_projection, PaddedOutputProjection)
    assert decoder.output_projection.weight is decoder.model.decoder.embed_tokens.weight  # tying kept
    state_fast, state_plain = fast.state_dict(), plain.state_dict()
    assert {k: v.shape for k, v in state_fast.items()} == {k: v.shape for k, v in state_plain.items()}
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    fast.eval()
    plain.eval()
    for beams in (1, 3):  # generation uses the KV cache, where the original attention runs
        out_fast = fast.generate(pixel_values=pixels, num_beams=beams, max_new_tokens=6)
        out_plain = plain.generate(pixel_values=pixels, num_beams=beams, max_new_tokens=6)
        assert torch.equal(out_fast, out_plain)
    restore_output_projection(fast)
    assert type(decoder.output_projection) is torch.nn.Linear
    assert decoder.output_projection.weight is decoder.model.decoder.embed_tokens.weight


def test_no_padding_needed_and_models_without_the_parts():
    model = build_trocr("tiny")
    assert pad_output_projection(model, 64) == 0  # 64 rows already: the plain head stays
    assert type(model.decoder.output_projection) is torch.nn.Linear
    assert sdpa_decoder_attention(torch.nn.Linear(2, 2)) == 0
    with pytest.raises(TypeError, match="output_projection"):
        pad_output_projection(torch.nn.Linear(2, 2))
    assert speed_up_training(torch.nn.Linear(2, 2)) == {"sdpa_decoder_attention": 0, "vocab_padding": 0}


def test_bert_style_decoder_is_left_alone_and_restore_is_a_no_op():
    """model=vit_minilm has a BERT decoder: training applies nothing to it and must still save."""
    from transformers import BertConfig, BertLMHeadModel

    holder = torch.nn.Module()
    holder.decoder = BertLMHeadModel(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1,
                                                num_attention_heads=2, intermediate_size=32, is_decoder=True,
                                                add_cross_attention=True))
    before = {k: v.clone() for k, v in holder.state_dict().items()}
    assert speed_up_training(holder) == {"sdpa_decoder_attention": 0, "vocab_padding": 0}
    restore_output_projection(holder)  # train.run calls this before every save
    after = holder.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(TypeError, match="output_projection"):
        pad_output_projection(holder)
