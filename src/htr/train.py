"""Train a line recogniser (one stage of the two-stage recipe): what every model family shares.

``python scripts/train_htr.py experiment=<name> [out_dir=<dir>]``; stage 2 names stage 1's saved model
as its start (``model.init_from=<stage 1 run>/model``). Runs on one GPU, on several through
``accelerate launch scripts/train_htr.py ...`` (DDP), or on the CPU. :func:`run` picks the loop of the
model's family:

* encoder-decoder models (``model.kind`` ``vit_char``, ``vit_minilm``, ``trocr_*``):
  :mod:`htr.train_seq2seq` (``Seq2SeqTrainer``); their own options are ``trainer.seq2seq``
  (:class:`Seq2SeqOptions`);
* CTC models (``ppocr_ctc``, ``crnn_ctc``, or ``init_from`` a saved CTC model): :mod:`htr.train_ctc`;
  their own options are ``trainer.ctc`` (:class:`CTCOptions`).

Each family's options are checked against its schema before anything runs: an unknown key, or a key of
the other family's block, is a ``ConfigError`` naming it. Everything else in ``trainer`` is read by both.

The run folder (``out_dir``) holds ``config.yaml``/``run.json`` (:mod:`inkbase.runs`), ``checkpoints/``
(saved at every evaluation, so a rerun with the same ``out_dir`` resumes from the last one),
``history.jsonl`` (one row per epoch: train loss, validation loss, CER, WER), ``model/`` (model +
processor + tokenizer + config, reloadable on its own), ``table.md``/``table.csv``/``curve.png`` (the
Lanke et al. Table II layout, generated from ``history.jsonl``) and ``metrics.json`` once finished.

``trainer.time_budget_min`` plans the number of steps from the measured step rate so that the
learning-rate schedule (warm-up, then linear decay to zero) ends when the budget does; "epochs" are then
equal slices of the planned steps, each closed by a validation. ``trainer.gpu_augment`` distorts every
line of a batch anew on the device (affine + elastic warp, stroke width, blur, fading, noise).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from htr.data import SyntheticLineDataset, read_manifest, steps_per_epoch, usable_records
from htr.model import CTC_KINDS, HTRBundle
from inkbase.errors import ConfigError, check_range, config_dataclass
from inkbase.jsonio import read_jsonl, write_json
from inkbase.runs import RunFolder

PLAN_FILE = "step_plan.json"


# ------------------------------------------------------------------------------------- family options
@dataclass(frozen=True)
class Seq2SeqOptions:
    """``trainer.seq2seq``: options only the encoder-decoder loop reads."""

    fast_attention: bool = True  # SDPA decoder attention + LM head padded to 64 rows while training (same arithmetic)
    ctc_weight: float = 0.0  # auxiliary CTC loss on the encoder's columns (joint CTC-attention; vit_char only)
    replay_size: int = 0  # lines kept in a device buffer and mixed into each batch (0: off)
    replay_batch_size: int = 0  # lines per step after mixing
    save_total_limit: int = 2  # checkpoints kept

    def __post_init__(self) -> None:
        check_range("trainer.seq2seq.ctc_weight", self.ctc_weight, 0.0, 10.0)
        check_range("trainer.seq2seq.replay_size", self.replay_size, 0, 10**8)
        check_range("trainer.seq2seq.save_total_limit", self.save_total_limit, 1, 10**6)


@dataclass(frozen=True)
class CTCOptions:
    """``trainer.ctc``: options only the CTC loop reads (fine-tuning that does not forget its start)."""

    l2sp: float = 0.0  # weight of the L2-SP penalty sum ||w - w_start||^2 towards the start weights
    freeze_backbone: float = 0.0  # share of the backbone's weights, from the input side, kept frozen (1: classifier only)
    layer_decay: float = 1.0  # learning-rate factor per band of backbone layers, compounding towards the input
    patience: int | None = None  # stop after this many validations without a better data.select_manifest CER

    def __post_init__(self) -> None:
        check_range("trainer.ctc.l2sp", self.l2sp, 0.0, 1e6)
        check_range("trainer.ctc.freeze_backbone", self.freeze_backbone, 0.0, 1.0)
        check_range("trainer.ctc.layer_decay", self.layer_decay, 0.01, 1.0)
        if self.patience is not None:
            check_range("trainer.ctc.patience", self.patience, 1, 10**6)


FAMILIES = {"seq2seq": Seq2SeqOptions, "ctc": CTCOptions}


def family(cfg: DictConfig) -> str:
    """"ctc" for CTC models (by kind, or a saved CTC model to start from), else "seq2seq"."""
    from htr.ctc import CTCRecognizer

    if cfg.model.kind in CTC_KINDS or (cfg.model.init_from and CTCRecognizer.is_saved_in(cfg.model.init_from)):
        return "ctc"
    return "seq2seq"


def family_options(cfg: DictConfig, name: str):
    """The checked options of family ``name``; a key set in another family's block is a ConfigError."""
    for other in FAMILIES:
        block = cfg.trainer.get(other)
        block = OmegaConf.to_container(block, resolve=True) if block is not None else {}
        if other != name and block:
            key = next(iter(block))
            raise ConfigError(f"trainer.{other}.{key}", f"only the {other} models read it; model.kind="
                              f"{cfg.model.kind} trains with the {name} loop (set trainer.{name}.* instead)")
    return config_dataclass(FAMILIES[name], cfg.trainer.get(name) or {}, f"trainer.{name}")


def check(cfg: DictConfig) -> None:
    """Range checks of the keys every family reads."""
    t = cfg.trainer
    check_range("trainer.learning_rate", t.learning_rate, 0.0, 1.0)
    check_range("trainer.weight_decay", t.weight_decay, 0.0, 1.0)
    check_range("trainer.epochs", t.epochs, 1, 10**6)
    check_range("trainer.batch_size", t.batch_size, 1, 10**5)
    check_range("trainer.grad_accum", t.grad_accum, 1, 10**4)
    check_range("trainer.max_target_length", t.max_target_length, 1, 1024)
    if t.precision not in ("no", "fp16", "bf16"):
        raise ConfigError("trainer.precision", f"{t.precision!r} is not one of no, fp16, bf16")
    if t.time_budget_min is not None:
        check_range("trainer.time_budget_min", t.time_budget_min, 0.01, 10**6)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train with the loop of the model's family; see the module docstring."""
    name = family(cfg)
    options = family_options(cfg, name)
    check(cfg)
    if name == "ctc":
        from htr import train_ctc

        return train_ctc.run(cfg, options)
    from htr import train_seq2seq

    return train_seq2seq.run(cfg, options)


# ------------------------------------------------------------------------------------------ step plan
@dataclass
class StepPlan:
    """How many optimizer steps the run takes, and the learning-rate factor at each step.

    Without a time budget ``total`` is ``epochs x steps per epoch``. With one, ``total`` is re-estimated
    from the measured step rate, so that training (validations included) ends within the budget.
    """

    max_total: int
    warmup: int
    epochs: int
    budget_s: float | None
    total: int = 0
    elapsed_s: float = 0.0  # training time spent up to the checkpoint this plan was saved with
    epochs_done: int = 0

    def __post_init__(self) -> None:
        self.total = self.total or self.max_total

    def lr_factor(self, step: int) -> float:
        warmup = min(self.warmup, max(1, self.total // 2))
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (self.total - step) / max(1, self.total - warmup))

    def replan(self, step: int, rate: float, elapsed: float, eval_seconds: list[float]) -> bool:
        """Re-estimate ``total`` from the step rate (steps/s), the training time spent and the time one
        validation takes, so that training ends within the budget; True when the budget is spent."""
        left = self.budget_s - elapsed - float(np.mean(eval_seconds or [0.0])) * (self.epochs - self.epochs_done)
        self.total = int(min(self.max_total, max(step + 1, step + left * rate)))
        return elapsed >= self.budget_s

    def epoch_end(self, k: int) -> int:
        """The step that closes epoch ``k`` (1-based); a validation and a checkpoint follow it."""
        return max(1, round(self.total * k / self.epochs))

    def save(self, path: Path, **override: Any) -> None:
        write_json(path, {**dataclasses.asdict(self), **override})

    @classmethod
    def load(cls, path: Path) -> StepPlan:
        return cls(**json.loads(path.read_text()))




@dataclass
class GpuAugment:
    """Per-line random distortions of ink maps (floats in [0, 1], ink = 1) on the GPU."""

    enabled: bool
    shear: float
    scale_x: tuple[float, float]
    scale_y: tuple[float, float]
    rotate_deg: float
    shift_y: float
    elastic_px: float
    stroke_prob: float
    blur_prob: float
    fade: tuple[float, float]
    noise: float

    def __call__(self, ink: torch.Tensor) -> torch.Tensor:
        b, _, h, w = ink.shape
        dev = ink.device

        def uniform(lo, hi):
            return torch.rand(b, device=dev) * (hi - lo) + lo

        sx, sy = uniform(*self.scale_x), uniform(*self.scale_y)
        shear = uniform(-self.shear, self.shear) * (h / w)
        rot = uniform(-self.rotate_deg, self.rotate_deg) * math.pi / 180
        # Output -> input sampling in normalised coordinates. Lines stay anchored at the left edge and
        # are moved right by the largest leftward displacement of the shear, so no ink is cut off there.
        theta = torch.zeros(b, 2, 3, device=dev)
        theta[:, 0, 0] = torch.cos(rot) / sx
        theta[:, 0, 1] = (shear - torch.sin(rot) * (h / w)) / sx
        theta[:, 0, 2] = 1 / sx - 1 - theta[:, 0, 1].abs()
        theta[:, 1, 0] = torch.sin(rot) * (w / h) / sy
        theta[:, 1, 1] = torch.cos(rot) / sy
        theta[:, 1, 2] = uniform(-self.shift_y, self.shift_y) * 2
        grid = F.affine_grid(theta, list(ink.shape), align_corners=False)
        if self.elastic_px > 0:
            coarse = torch.randn(b, 2, max(2, h // 16), max(2, w // 32), device=dev) * self.elastic_px
            field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
            grid = grid + torch.stack([field[:, 0] * 2 / w, field[:, 1] * 2 / h], dim=-1)
        ink = F.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        r = torch.rand(b, 1, 1, 1, device=dev)
        thick = F.max_pool2d(ink, 3, 1, 1)
        thin = -F.max_pool2d(-ink, 3, 1, 1)
        ink = torch.where(r < self.stroke_prob / 2, thick, torch.where(r < self.stroke_prob, thin, ink))
        blur_k = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], device=dev, dtype=ink.dtype)[None, None] / 16
        blurred = F.conv2d(ink, blur_k, padding=1)
        ink = torch.where(torch.rand(b, 1, 1, 1, device=dev) < self.blur_prob, blurred, ink)
        ink = ink * uniform(*self.fade)[:, None, None, None]
        ink = ink + torch.randn_like(ink) * (self.noise * torch.rand(b, 1, 1, 1, device=dev))
        return ink.clamp_(0, 1)


# -------------------------------------------------------------------------------------------- datasets
def synthetic_lines(cfg: DictConfig, bundle: HTRBundle, split: str, length: int, seed: int, max_len: int,
               augment: bool = True, printed_prob: float = 0.0) -> SyntheticLineDataset:
    from htr.synth.fonts import list_fonts, printed_fonts
    from htr.synth.lines import AugmentConfig
    from htr.synth.text import load_sources

    sources = {k: float(v) for k, v in OmegaConf.to_container(cfg.text.sources).items() if v > 0}
    texts = load_sources(sources, cfg.text.data_dir, cfg.text.sample_exam_dir)
    aug = AugmentConfig.from_dict(cfg.augment) if augment else None
    return SyntheticLineDataset(length, list_fonts(split), texts, sources, cfg.text.max_chars, aug,
                                bundle.image_processor, bundle.tokenizer, max_len, bundle.decoder_start_token_id, seed,
                                printed_fonts(), printed_prob)


class CachedDataset(torch.utils.data.Dataset):
    """A validation set rendered once and kept in memory (it is read at every epoch)."""

    def __init__(self, dataset, desc: str = "rendering validation lines"):
        from tqdm import tqdm

        self.items = [dataset[i] for i in tqdm(range(len(dataset)), desc=desc)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.items[idx]


def manifest_records(data: DictConfig, folder: RunFolder) -> list[list]:
    """The readable records of ``data.train_manifest`` and ``data.val_manifest`` (skips are logged)."""
    out = []
    for key in ("train_manifest", "val_manifest"):
        records, _ = usable_records(read_manifest(data[key]), folder.file("skipped.jsonl"))
        if not records:
            raise ConfigError(f"data.{key}", "no readable line images")
        out.append(records)
    return out



def planned_steps(cfg: DictConfig, lines_per_epoch: int, world: int) -> int:
    """Optimizer steps of the whole run before any time budget: epochs x steps per epoch, capped by
    ``trainer.max_steps``."""
    t = cfg.trainer
    if cfg.data.kind == "synthetic":
        lines_per_epoch = cfg.data.train_lines
    per_epoch = steps_per_epoch(lines_per_epoch, t.batch_size, t.grad_accum, world)
    return per_epoch * t.epochs if t.max_steps is None else min(t.max_steps, per_epoch * t.epochs)


def new_plan(cfg: DictConfig, max_total: int) -> StepPlan:
    t = cfg.trainer
    budget = None if t.time_budget_min is None else 60.0 * t.time_budget_min
    return StepPlan(max_total=max_total, warmup=t.warmup_steps, epochs=t.epochs, budget_s=budget)


def truncate_history(folder: RunFolder, step: int) -> None:
    """Drop history rows after ``step`` (a resumed run repeats the validations after its checkpoint)."""
    rows = [r for r in read_jsonl(folder.file("history.jsonl")) if r["step"] <= step]
    folder.file("history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def logging_setup(cfg: DictConfig, folder: RunFolder) -> list[str]:
    if cfg.logger.name == "wandb":
        # Offline unless the user asked to sync (no network here); runs land in the run folder.
        os.environ.setdefault("WANDB_MODE", cfg.logger.mode)
        os.environ.setdefault("WANDB_PROJECT", cfg.logger.project)
        os.environ.setdefault("WANDB_DIR", str(folder.path))
        return ["wandb"]
    return []


def finish(folder: RunFolder, metrics: dict[str, Any], num_beams: int) -> None:
    """Write the history table and curve, then ``metrics.json``; print the headline."""
    metrics["final_num_beams"] = num_beams
    write_report(folder.path)
    folder.finish(metrics)
    print(f"val CER {metrics['val_cer']:.4f}  WER {metrics['val_wer']:.4f} (beam {num_beams})"
          f"  -> {folder.file('model')}")


# --------------------------------------------------------------------------------------------- report
def write_report(run_dir: str | os.PathLike) -> None:
    """``table.md``, ``table.csv`` and ``curve.png`` of a run folder, from its ``history.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from tabulate import tabulate

    run_dir = Path(run_dir)
    rows = read_jsonl(run_dir / "history.jsonl")
    if not rows:
        return
    columns = ["epoch", "step", "lines_seen", "train_loss", "val_loss", "cer", "wer"]
    headers = ["Epoch", "Step", "Lines seen", "Training Loss", "Validation Loss", "CER", "WER"]
    if any(r.get("select_cer") is not None for r in rows):  # real selection lines (data.select_manifest)
        columns.append("select_cer")
        headers.append("Selection CER (greedy)")
    df = pd.DataFrame(rows)[columns]
    df[["epoch", "step", "lines_seen"]] = df[["epoch", "step", "lines_seen"]].astype(int)
    df.to_csv(run_dir / "table.csv", index=False, float_format="%.4f")
    # Row-wise object values keep the integer columns integer in the Markdown table.
    table = tabulate(df.astype(object).values.tolist(), headers=headers, floatfmt=".4f", tablefmt="pipe")
    (run_dir / "table.md").write_text(table + "\n")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax1.plot(df["epoch"], df["train_loss"], marker="o", label="train")
    ax1.plot(df["epoch"], df["val_loss"], marker="o", label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(df["epoch"], df["cer"], marker="o", label="CER")
    ax2.plot(df["epoch"], df["wer"], marker="o", label="WER")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("error rate (validation)")
    ax2.legend()
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    fig.savefig(run_dir / "curve.png", dpi=120)
    plt.close(fig)
