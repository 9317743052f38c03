"""Training-time speed-ups for TrOCR-style models that leave the model's arithmetic and weights unchanged.

Profiling a compiled TrOCR-base training step on an H100 (``experiments/htr_speed/README.md``) showed two
places where matrix products fell back to slow, unaligned kernels:

* **Decoder attention.** transformers' ``TrOCRAttention`` has no SDPA path: it multiplies queries by keys
  with ``bmm`` and softmaxes in between. Cross-attention runs over the 577 encoder tokens, and 577 is not a
  multiple of 8, so the products run in ``align1`` kernels. :func:`sdpa_decoder_attention` swaps each such
  module's class for a subclass whose forward computes the same attention with
  ``torch.nn.functional.scaled_dot_product_attention`` when no KV cache and no attention weights are asked
  for (training, and validation without generation); otherwise the original forward runs.
* **LM head.** A vocabulary of 50,265 rows is not a multiple of 8 either, and the output projection and its
  two backward products ran in ``align1`` kernels. :func:`pad_output_projection` computes the logits with
  the weight zero-padded to a multiple of 64 rows and drops the padded columns, so logits, loss and
  gradients are those of the unpadded head. The weight stays the same ``Parameter`` (tying with the input
  embeddings is kept) and the state dict keeps its keys and shapes; :func:`restore_output_projection` puts
  the plain ``nn.Linear`` back before saving.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_SDPA_CLASSES: dict[type, type] = {}


def _sdpa_forward(self, hidden_states, key_value_states=None, past_key_values=None, attention_mask=None,
                  output_attentions=False, **kwargs):
    """``TrOCRAttention.forward`` through SDPA: same projections, scaling, mask and dropout."""
    if past_key_values is not None or output_attentions or kwargs.get("layer_head_mask") is not None:
        return self._eager_forward(hidden_states, key_value_states=key_value_states,
                                   past_key_values=past_key_values, attention_mask=attention_mask,
                                   output_attentions=output_attentions, **kwargs)
    bsz, tgt_len, _ = hidden_states.shape
    source = hidden_states if key_value_states is None else key_value_states
    heads = (bsz, -1, self.num_heads, self.head_dim)
    query = (self.q_proj(hidden_states) * self.scaling).view(heads).transpose(1, 2)
    key = self.k_proj(source).view(heads).transpose(1, 2)
    value = self.v_proj(source).view(heads).transpose(1, 2)
    if attention_mask is not None:
        attention_mask = attention_mask.to(query.dtype)  # additive mask, as the eager path adds it
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                         dropout_p=self.dropout if self.training else 0.0,
                                         scale=1.0)  # the query is already scaled, as in the eager path
    out = out.transpose(1, 2).reshape(bsz, tgt_len, self.embed_dim)
    return self.out_proj(out), None


def _sdpa_class(cls: type) -> type:
    if cls not in _SDPA_CLASSES:
        _SDPA_CLASSES[cls] = type(f"SDPA{cls.__name__}", (cls,), {"forward": _sdpa_forward,
                                                                 "_eager_forward": cls.forward})
    return _SDPA_CLASSES[cls]


def sdpa_decoder_attention(model: nn.Module) -> int:
    """Route every ``TrOCRAttention`` in ``model`` through SDPA (see the module docstring); returns how many."""
    count = 0
    for module in model.modules():
        cls = type(module)
        if cls.__name__ == "TrOCRAttention":
            module.__class__ = _sdpa_class(cls)
            count += 1
    return count


class PaddedOutputProjection(nn.Module):
    """An ``nn.Linear`` LM head computed with its weight zero-padded to a multiple of ``multiple`` rows.

    Holds the original ``weight`` (and ``bias``) parameters, so tying and state-dict keys are unchanged.
    """

    def __init__(self, linear: nn.Linear, multiple: int = 64):
        super().__init__()
        self.weight = linear.weight
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.pad = -self.out_features % multiple
        self.original = [linear]  # a list keeps it out of the module tree (no duplicate parameters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = F.pad(self.weight, (0, 0, 0, self.pad))
        bias = None if self.bias is None else F.pad(self.bias, (0, self.pad))
        return F.linear(x, weight, bias)[..., : self.out_features]


def _output_head(model: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """The module holding the LM head (the decoder, or the model itself) and the head, None if it has none."""
    owner = getattr(model, "decoder", model)
    return owner, getattr(owner, "output_projection", None)


def pad_output_projection(model: nn.Module, multiple: int = 64) -> int:
    """Compute the LM head with a vocabulary padded to ``multiple`` rows; returns the rows of padding added."""
    owner, head = _output_head(model)
    if head is None:
        raise TypeError(f"{type(model).__name__} has no decoder.output_projection (not a TrOCR-style model)")
    if isinstance(head, PaddedOutputProjection):
        return head.pad
    if not isinstance(head, nn.Linear):
        raise TypeError(f"decoder.output_projection is a {type(head).__name__}, not an nn.Linear")
    padded = PaddedOutputProjection(head, multiple)
    if padded.pad:
        owner.output_projection = padded
    return padded.pad


def restore_output_projection(model: nn.Module) -> None:
    """Undo :func:`pad_output_projection` (before saving); a no-op when nothing was padded, including models
    without an ``output_projection`` (a BERT-style decoder)."""
    owner, head = _output_head(model)
    if isinstance(head, PaddedOutputProjection):
        original = head.original[0]
        original.weight, original.bias = head.weight, head.bias
        owner.output_projection = original


def speed_up_training(model: nn.Module, *, sdpa_attention: bool = True, pad_vocab_to: int | None = 64) -> dict:
    """Apply both speed-ups where the model has the parts; returns what was changed (for logs and rows).

    A decoder without TrOCR attention or without a linear ``output_projection`` (a BERT-style decoder, say)
    is left as it is for that part.
    """
    done = {"sdpa_decoder_attention": sdpa_decoder_attention(model) if sdpa_attention else 0, "vocab_padding": 0}
    if pad_vocab_to and isinstance(_output_head(model)[1], nn.Linear | PaddedOutputProjection):
        done["vocab_padding"] = pad_output_projection(model, pad_vocab_to)
    return done
