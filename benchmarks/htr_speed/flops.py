"""Matrix-multiply FLOPs of a TrOCR-architecture training step, for model FLOPs utilisation (MFU).

Counted exactly, per sample: every matrix product of the forward pass at 2 FLOPs per multiply-add
(ViT patch embedding, q/k/v/out projections, attention scores and weighted sums over all key
positions, FFNs; the decoder's self-attention, cross-attention with keys/values projected from all
encoder tokens, FFNs, the encoder-to-decoder projection if present, and the LM head over the whole
vocabulary). A training step costs 3x the forward pass (backward = 2x forward). Element-wise work
(norms, softmax, activations, optimiser) is not counted, as usual for MFU.
"""

from __future__ import annotations


def forward_flops_per_sample(config, target_tokens: int) -> dict[str, float]:
    """Forward FLOPs of one sample of a ``VisionEncoderDecoderConfig`` (ViT encoder, TrOCR decoder)."""
    enc, dec = config.encoder, config.decoder
    patches = (enc.image_size // enc.patch_size) ** 2
    n = patches + 1  # class token
    d, ff = enc.hidden_size, enc.intermediate_size
    encoder = 2 * patches * (enc.num_channels * enc.patch_size ** 2) * d
    encoder += enc.num_hidden_layers * (2 * n * d * (4 * d + 2 * ff) + 4 * n * n * d)

    t, dd, f = target_tokens, dec.d_model, dec.decoder_ffn_dim
    cross_in = dec.cross_attention_hidden_size or dd
    decoder = 0.0
    if dec.cross_attention_hidden_size is None and d != dd:
        decoder += 2 * n * d * dd  # enc_to_dec_proj
    per_layer = (2 * t * dd * (4 * dd + 2 * dd + 2 * f)  # self q/k/v/o, cross q/o, FFN
                 + 2 * n * cross_in * dd * 2  # cross k/v from every encoder token
                 + 4 * t * t * dd + 4 * t * n * dd)  # self- and cross-attention products
    decoder += dec.decoder_layers * per_layer
    lm_head = 2 * t * dd * dec.vocab_size
    total = encoder + decoder + lm_head
    return {"encoder": encoder, "decoder": decoder, "lm_head": lm_head, "total": total}


def train_flops_per_sample(config, target_tokens: int) -> float:
    return 3.0 * forward_flops_per_sample(config, target_tokens)["total"]
