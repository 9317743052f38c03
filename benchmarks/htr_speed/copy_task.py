"""A small TrOCR-architecture model trained to read a synthetic code, for equivalence checks.

Random weights give near-flat or artificially scaled distributions, where beam search meets near-ties
that one rounding step can flip. A trained model has clear margins, as a real recogniser does. Each
image shows a short sequence of symbols, one per patch in reading order, each symbol drawn as its own
fixed random pattern; the target text is that sequence followed by EOS. A few hundred steps teach it.
"""

from __future__ import annotations

import torch
from transformers import TrOCRConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig

FIRST_SYMBOL = 3  # ids 0-2 are TrOCR's bos, pad and eos


def copy_model_config(symbols: int) -> VisionEncoderDecoderConfig:
    enc = ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=128)
    dec = TrOCRConfig(vocab_size=FIRST_SYMBOL + symbols, d_model=64, decoder_layers=2, decoder_attention_heads=4,
                      decoder_ffn_dim=128, max_position_embeddings=64, dropout=0.0)
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = 2, 1, 2
    return cfg


class CopyTask:
    """Batches of (images, labels): up to ``max_len`` symbols, one 8x8 patch each, EOS-terminated labels."""

    def __init__(self, symbols: int = 10, max_len: int = 8, noise: float = 0.1, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.codebook = torch.randint(0, 2, (symbols, 3, 8, 8), generator=g).float() * 2 - 1
        self.symbols, self.max_len, self.noise = symbols, max_len, noise

    def batch(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.randint(1, self.max_len + 1, (n,), generator=generator)
        seqs = torch.randint(0, self.symbols, (n, self.max_len), generator=generator)
        images = torch.zeros(n, 3, 32, 32)
        labels = torch.full((n, self.max_len + 1), -100, dtype=torch.long)
        for i in range(n):
            for j in range(int(lengths[i])):
                r, c = divmod(j, 4)
                images[i, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8] = self.codebook[seqs[i, j]]
            labels[i, :lengths[i]] = seqs[i, :lengths[i]] + FIRST_SYMBOL
            labels[i, lengths[i]] = 2
        images += self.noise * torch.randn(images.shape, generator=generator)
        return images.clamp_(-1, 1), labels


def train_copy_model(steps: int, device: torch.device, batch_size: int = 64, lr: float = 5e-3,
                     seed: int = 0) -> tuple[VisionEncoderDecoderModel, CopyTask, float]:
    """Train from scratch in float32; returns the model (eval mode), the task and the last loss."""
    task = CopyTask(seed=seed)
    torch.manual_seed(seed)
    with torch.device(device):
        model = VisionEncoderDecoderModel(config=copy_model_config(task.symbols))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed + 1)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        images, labels = task.batch(batch_size, g)
        loss = model(pixel_values=images.to(device), labels=labels.to(device), use_cache=False).loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return model.eval(), task, loss.item()
