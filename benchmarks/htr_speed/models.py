"""TrOCR-architecture models built from configs (no hub access) for speed and equivalence checks.

``base`` is TrOCR-base as the benchmark issue states it: a ViT-base encoder at 384x384 (patch 16, 577
tokens) and transformers' default ``TrOCRConfig`` decoder (12 layers, d_model 1024, 16 heads, FFN 4096,
vocabulary 50265), 341 M parameters; ``cross_attention_hidden_size=768`` gives the published
microsoft/trocr-base-handwritten wiring (334 M, no encoder-to-decoder projection). ``tiny`` has the
same structure at toy size for CPU tests.
"""

from __future__ import annotations

import torch
from transformers import TrOCRConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig

ARCHITECTURES = {
    "base": dict(
        encoder=dict(image_size=384, patch_size=16, hidden_size=768, num_hidden_layers=12,
                     num_attention_heads=12, intermediate_size=3072),
        decoder=dict(vocab_size=50265, d_model=1024, decoder_layers=12, decoder_attention_heads=16,
                     decoder_ffn_dim=4096, max_position_embeddings=512),
    ),
    "tiny": dict(
        encoder=dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64),
        decoder=dict(vocab_size=64, d_model=48, decoder_layers=2, decoder_attention_heads=4,
                     decoder_ffn_dim=96, max_position_embeddings=64),
    ),
}


def build_trocr(size: str = "base", *, seed: int = 0, logit_scale: float = 1.0,
                cross_attention_hidden_size: int | None = None, tie_word_embeddings: bool = True,
                eos_logit: float = 0.0, cross_gain: float = 1.0, device="cpu") -> VisionEncoderDecoderModel:
    """A randomly initialised TrOCR-architecture model in float32, eval mode, built on ``device``.

    Random weights give nearly flat next-token distributions, where beam search meets many near-ties;
    ``logit_scale`` multiplies the output projection so that distributions are peaked and the search has
    one clear answer, as a trained model's would (with tied embeddings the input embeddings scale too,
    which ``layernorm_embedding`` undoes). ``eos_logit`` raises the EOS logit by about that much, by a
    fixed direction in the last layer norm's bias that only the EOS output row reads, with a context-
    dependent part of +-25 %, so that EOS wins at varied steps as in real lines of varied length.
    ``cross_gain`` multiplies the cross-attention value and output projections (and the query by a
    quarter of it): at random initialisation the image contributes ~1 % of the decoder's residual
    stream, so every image would get the same text.
    """
    if size not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {size!r}; choose from {sorted(ARCHITECTURES)}")
    arch = ARCHITECTURES[size]
    torch.manual_seed(seed)
    dec = TrOCRConfig(**arch["decoder"], cross_attention_hidden_size=cross_attention_hidden_size,
                      tie_word_embeddings=tie_word_embeddings)
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(ViTConfig(**arch["encoder"]), dec)
    cfg.decoder_start_token_id = dec.decoder_start_token_id
    cfg.pad_token_id = dec.pad_token_id
    cfg.eos_token_id = dec.eos_token_id
    with torch.device(device):  # initialising 341 M parameters is much faster on a GPU
        model = VisionEncoderDecoderModel(config=cfg)
    with torch.no_grad():
        head = model.decoder.output_projection.weight
        if logit_scale != 1.0:
            head.mul_(logit_scale)
        if cross_gain != 1.0:
            for layer in model.decoder.model.decoder.layers:
                layer.encoder_attn.q_proj.weight.mul_(cross_gain / 4)
                layer.encoder_attn.v_proj.weight.mul_(cross_gain)
                layer.encoder_attn.out_proj.weight.mul_(cross_gain)
        if eos_logit:
            direction = torch.randn(head.shape[1], device=head.device)
            direction /= direction.norm()
            model.decoder.model.decoder.layers[-1].final_layer_norm.bias += 4.0 * direction
            head[dec.eos_token_id] += eos_logit / 4.0 * direction
    return model.eval()


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def random_pixels(model: VisionEncoderDecoderModel, n: int, seed: int = 0, device="cpu",
                  dtype=torch.float32) -> torch.Tensor:
    """Random images in the processor's [-1, 1] range at the encoder's input size.

    Each image gets its own colour offset besides pixel noise: a random encoder's near-uniform attention
    averages the noise away, and the offsets keep the images distinguishable to the decoder.
    """
    size = model.config.encoder.image_size
    g = torch.Generator().manual_seed(seed)
    offset = torch.rand(n, 3, 1, 1, generator=g) * 1.6 - 0.8
    noise = torch.randn(n, 3, size, size, generator=g) * 0.3
    return (offset + noise).clamp_(-1, 1).to(device, dtype)
