"""Train a line recogniser (one stage of the two-stage recipe) with ``Seq2SeqTrainer``.

``python scripts/train_htr.py experiment=<name> [out_dir=<dir>]``; stage 2 names stage 1's saved model
as its start (``model.init_from=<stage 1 run>/model``). Runs on one GPU, on several through
``accelerate launch scripts/train_htr.py ...`` (DDP), or on the CPU.

The run folder (``out_dir``) holds ``config.yaml``/``run.json`` (:mod:`inkbase.runs`), ``checkpoints/``
(saved at every evaluation, so a rerun with the same ``out_dir`` resumes from the last one),
``history.jsonl`` (one row per epoch: train loss, validation loss, CER, WER), ``model/`` (model +
processor + tokenizer + config, reloadable on its own), ``table.md``/``table.csv``/``curve.png`` (the
seed-003 Table II layout, generated from ``history.jsonl``) and ``metrics.json`` once finished.

Two knobs serve training on lines rendered on the fly on a GPU:

* ``trainer.time_budget_min``: the number of steps is planned from the measured step rate so that the
  learning-rate schedule (warm-up, then linear decay to zero) ends when the budget does; "epochs" are
  then equal slices of the planned steps, each closed by a validation.
* ``trainer.replay``: each step mixes the freshly rendered lines with lines kept in a GPU buffer, and
  ``trainer.gpu_augment`` distorts every line of the batch anew on the GPU (affine + elastic warp,
  stroke width, blur, fading, noise), so the GPU is not held back by the rendering workers.

``trainer.ctc_weight > 0`` adds an auxiliary CTC loss on the encoder's patch columns (joint
CTC-attention); its classifier is dropped before the model is saved.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

from htr.data import (
    LineCollator,
    LineImageProcessor,
    ManifestLineDataset,
    SyntheticLineDataset,
    read_manifest,
    steps_per_epoch,
    usable_records,
)
from htr.evaluate import error_rates
from htr.fast_train import restore_output_projection, speed_up_training
from htr.model import HTRBundle, build_model, count_parameters
from inkbase.errors import ConfigError, check_range
from inkbase.jsonio import JsonlAppender, read_jsonl, write_json
from inkbase.runs import RunFolder, start_run

log = logging.getLogger(__name__)
PLAN_FILE = "step_plan.json"


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


class PlanCallback(TrainerCallback):
    """Drives the validation/checkpoint cadence from the plan and, under a time budget, re-plans the
    total from the measured step rate (rank 0's decision is broadcast, so DDP ranks stay in step)."""

    def __init__(self, plan: StepPlan, measure_every: int = 20):
        self.plan = plan
        self.measure_every = measure_every
        self.t_start = 0.0
        self.rate_origin: tuple[int, float] | None = None
        self.eval_started = 0.0
        self.eval_seconds: list[float] = []

    def elapsed(self) -> float:
        return self.plan.elapsed_s + time.perf_counter() - self.t_start

    def on_train_begin(self, args, state, control, **kwargs):
        self.t_start = time.perf_counter()

    def _replan(self, step: int, now: float) -> bool:
        """Re-estimate ``plan.total``; True when the budget is spent."""
        plan = self.plan
        stop = False
        if self.rate_origin is not None and step > self.rate_origin[0]:
            rate = (step - self.rate_origin[0]) / (now - self.rate_origin[1])
            stop = plan.replan(step, rate, self.elapsed(), self.eval_seconds)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            shared = torch.tensor([plan.total, int(stop)], device=args_device())
            torch.distributed.broadcast(shared, src=0)
            plan.total, stop = int(shared[0]), bool(shared[1])
        return stop

    def on_step_end(self, args, state, control, **kwargs):
        step, plan = state.global_step, self.plan
        now = time.perf_counter()
        if plan.budget_s is not None:
            if self.rate_origin is None:
                self.rate_origin = (step, now)  # the step after start-up or a validation is not typical
            if step % self.measure_every == 0 and self._replan(step, now):
                control.should_training_stop = True
        if step >= plan.total:
            control.should_training_stop = True
        if step >= plan.epoch_end(plan.epochs_done + 1) or control.should_training_stop:
            plan.epochs_done += 1
            control.should_evaluate = True
            control.should_save = True
            self.eval_started = now
        return control

    def on_evaluate(self, args, state, control, **kwargs):
        self.eval_seconds.append(time.perf_counter() - self.eval_started)
        self.rate_origin = None

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir() and state.is_world_process_zero:
            self.plan.save(folder / PLAN_FILE, elapsed_s=self.elapsed(), total=max(self.plan.total, state.global_step))
        return control


def args_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


class HistoryCallback(TrainerCallback):
    """Appends one row per validation to ``history.jsonl``: the Table II columns plus step and lr."""

    def __init__(self, path: Path, plan: StepPlan, lines_per_step: int):
        self.path = path
        self.plan = plan
        self.lines_per_step = lines_per_step
        self.losses: list[float] = []
        self.lr = 0.0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))
            self.lr = float(logs.get("learning_rate", self.lr))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics:
            return
        row = {"epoch": self.plan.epochs_done, "step": state.global_step,
               "lines_seen": state.global_step * self.lines_per_step,
               "train_loss": float(np.mean(self.losses)) if self.losses else None,
               "val_loss": metrics.get("eval_loss"), "cer": metrics.get("eval_cer"),
               "wer": metrics.get("eval_wer"), "learning_rate": self.lr}
        with JsonlAppender(self.path) as out:
            out.write(row)
        self.losses = []


class EpochCallback(TrainerCallback):
    """Tells an on-the-fly dataset which epoch it is rendering, so epochs differ."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.epoch = int(round(state.epoch or 0))


# ---------------------------------------------------------------------------------- GPU-side batches
class ReplayPool:
    """A ring buffer of uint8 ink maps (and their labels) on the training device."""

    def __init__(self, size: int, batch_size: int, shape: tuple[int, int, int], max_len: int,
                 device: torch.device):
        self.images = torch.zeros((size, *shape), dtype=torch.uint8, device=device)
        self.labels = torch.full((size, max_len), -100, dtype=torch.long, device=device)
        self.batch_size = batch_size
        self.count = 0
        self.next = 0

    def mix(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the fresh lines and return them plus lines drawn from the buffer, ``batch_size`` in all."""
        size = self.images.shape[0]
        n = min(images.shape[0], size)
        images, labels = images[:n], labels[:n, :self.labels.shape[1]]
        slots = (self.next + torch.arange(n, device=images.device)) % size
        self.images[slots] = images
        self.labels[slots] = -100
        self.labels[slots, :labels.shape[1]] = labels
        self.next = (self.next + n) % size
        self.count = min(self.count + n, size)
        extra = self.batch_size - n
        if extra <= 0 or self.count <= n:
            return images, labels
        picks = torch.randint(0, self.count, (extra,), device=images.device)
        out_labels = torch.cat([self.labels[slots], self.labels[picks]])
        longest = int((out_labels != -100).sum(1).max())
        return torch.cat([images, self.images[picks]]), out_labels[:, :max(1, longest)]


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


class HTRTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer that turns uint8 ink maps into model input on the device (with the replay pool
    and GPU augmentation while training) and follows a :class:`StepPlan` learning-rate schedule."""

    def __init__(self, *args, plan: StepPlan, pool_cfg: DictConfig, gpu_augment: GpuAugment,
                 image_shape: tuple[int, int, int], max_target_length: int, ctc_weight: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.ctc_weight = ctc_weight
        self.plan = plan
        self.pool_cfg = pool_cfg
        self.gpu_augment = gpu_augment
        self.image_shape = image_shape
        self.max_target_length = max_target_length
        self.pool: ReplayPool | None = None
        # Losses are per-batch token means: the replay pool changes the batch after it was counted.
        self.model_accepts_loss_kwargs = False

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, self.plan.lr_factor)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.ctc_weight == 0 or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs = model(**inputs)
        loss = outputs.loss + self.ctc_weight * ctc_loss(self.accelerator.unwrap_model(model), outputs,
                                                         inputs["labels"], self.image_shape)
        return (loss, outputs) if return_outputs else loss

    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        inputs = super()._prepare_inputs(inputs)
        pixels = inputs.get("pixel_values")
        if pixels is None or pixels.dtype != torch.uint8:
            return inputs
        if self.model.training:
            labels = inputs["labels"]
            if self.pool_cfg.size > 0:
                if self.pool is None:
                    self.pool = ReplayPool(self.pool_cfg.size, self.pool_cfg.batch_size, self.image_shape,
                                           self.max_target_length + 1, pixels.device)
                pixels, labels = self.pool.mix(pixels, labels)
            if self.gpu_augment.enabled:
                ink = self.gpu_augment(pixels.float().div_(255))
                pixels = ink.mul_(255)
            inputs = {**inputs, "labels": labels}
        inputs["pixel_values"] = LineImageProcessor.to_pixel_values(pixels)
        return inputs


def attach_ctc_head(model, patch: tuple[int, int]) -> None:
    """Add the auxiliary CTC classifier over encoder columns (saved with the model, unused at inference)."""
    if getattr(model, "ctc_head", None) is None:
        model.ctc_head = torch.nn.Linear(model.config.encoder.hidden_size, model.config.decoder.vocab_size)
    model.ctc_patch = patch


def ctc_loss(model, outputs, labels: torch.Tensor, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """Joint CTC-attention training (Kim et al., 2017): a CTC loss on the encoder's patch columns teaches
    the encoder to locate characters, which the attention decoder otherwise learns slowly from scratch.
    Token 0 (``<pad>``, never a target) is the CTC blank; the end token is not a target."""
    rows = image_shape[1] // model.ctc_patch[0]
    hidden = outputs.encoder_last_hidden_state[:, 1:]  # drop [CLS]
    b, n, d = hidden.shape
    columns = hidden.reshape(b, rows, n // rows, d).mean(1)
    log_probs = model.ctc_head(columns).float().log_softmax(-1).transpose(0, 1)
    keep = (labels > 0) & (labels != model.config.eos_token_id)
    targets = labels.masked_fill(~keep, 0)
    return F.ctc_loss(log_probs, targets, torch.full((b,), n // rows, device=labels.device), keep.sum(1),
                      blank=0, zero_infinity=True)


# -------------------------------------------------------------------------------------------- datasets
def _synthetic(cfg: DictConfig, bundle: HTRBundle, split: str, length: int, seed: int, max_len: int,
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


def build_datasets(cfg: DictConfig, bundle: HTRBundle, folder: RunFolder) -> tuple[Any, Any, dict[str, Any]]:
    """(train, validation, extra test sets) for the ``data`` config."""
    max_len = cfg.trainer.max_target_length
    data = cfg.data
    if data.kind == "synthetic":
        check_range("data.train_lines", data.train_lines, 1, 10**9)
        train = _synthetic(data, bundle, data.fonts, data.train_lines * cfg.trainer.epochs, cfg.seed, max_len)
        val = CachedDataset(_synthetic(data, bundle, data.fonts, data.val_lines, data.val_seed, max_len))
        tests = {}
        if data.heldout_lines > 0:
            tests["heldout"] = CachedDataset(_synthetic(data, bundle, "heldout", data.heldout_lines,
                                                        data.val_seed + 1, max_len))
        return train, val, tests
    if data.kind == "manifest":
        sets = [ManifestLineDataset(records, bundle.image_processor, bundle.tokenizer, max_len,
                                    bundle.decoder_start_token_id) for records in manifest_records(data, folder)]
        return sets[0], sets[1], {}
    raise ConfigError("data.kind", f"{data.kind!r} is not one of synthetic, manifest")


# ------------------------------------------------------------------------------------------------ run
def _check(cfg: DictConfig) -> None:
    t = cfg.trainer
    check_range("trainer.learning_rate", t.learning_rate, 0.0, 1.0)
    check_range("trainer.weight_decay", t.weight_decay, 0.0, 1.0)
    check_range("trainer.epochs", t.epochs, 1, 10**6)
    check_range("trainer.batch_size", t.batch_size, 1, 10**5)
    check_range("trainer.max_target_length", t.max_target_length, 1, 1024)
    check_range("trainer.ctc_weight", t.ctc_weight, 0.0, 10.0)
    if t.precision not in ("no", "fp16", "bf16"):
        raise ConfigError("trainer.precision", f"{t.precision!r} is not one of no, fp16, bf16")
    if t.time_budget_min is not None:
        check_range("trainer.time_budget_min", t.time_budget_min, 0.01, 10**6)
    if t.replay.size > 0 and t.replay.batch_size < t.batch_size:
        raise ConfigError("trainer.replay.batch_size", "must be >= trainer.batch_size")


def _metrics_fn(tokenizer):
    def compute(pred) -> dict[str, float]:
        preds, labels = pred.predictions, pred.label_ids
        preds = np.where(preds < 0, tokenizer.pad_token_id, preds)
        labels = np.where(labels < 0, tokenizer.pad_token_id, labels)
        hyp = tokenizer.batch_decode(preds, skip_special_tokens=True)
        ref = tokenizer.batch_decode(labels, skip_special_tokens=True)
        rates = error_rates(ref, hyp)
        return {"cer": rates["cer"], "wer": rates["wer"]}

    return compute


def _last_checkpoint(folder: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    return Path(last) if folder.is_dir() and (last := get_last_checkpoint(str(folder))) else None


def _logging_setup(cfg: DictConfig, folder: RunFolder) -> list[str]:
    if cfg.logger.name == "wandb":
        # Offline unless the user asked to sync (no network here); runs land in the run folder.
        os.environ.setdefault("WANDB_MODE", cfg.logger.mode)
        os.environ.setdefault("WANDB_PROJECT", cfg.logger.project)
        os.environ.setdefault("WANDB_DIR", str(folder.path))
        return ["wandb"]
    return []


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train, save the model into ``<out_dir>/model``, write the history table and curve."""
    from htr.ctc import CTCRecognizer
    from htr.model import CTC_KINDS

    if cfg.model.kind in CTC_KINDS or (cfg.model.init_from and CTCRecognizer.is_saved_in(cfg.model.init_from)):
        from htr import train_ctc

        return train_ctc.run(cfg)
    _check(cfg)
    folder = start_run(cfg.out_dir, cfg)
    t = cfg.trainer
    torch.manual_seed(cfg.seed)
    bundle = build_model(cfg.model)
    log.info("model %s: %.2fM parameters", bundle.source, count_parameters(bundle.model) / 1e6)
    positions = getattr(bundle.model.config.decoder, "max_position_embeddings", None)
    if positions is not None and t.max_target_length + 1 > positions - 2:
        raise ConfigError("trainer.max_target_length", f"{t.max_target_length} tokens do not fit the decoder's "
                          f"{positions} positions (raise model.max_length)")
    train_ds, val_ds, tests = build_datasets(cfg, bundle, folder)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    per_epoch = steps_per_epoch(len(train_ds), t.batch_size, t.grad_accum, world)
    if cfg.data.kind == "synthetic":
        per_epoch = steps_per_epoch(cfg.data.train_lines, t.batch_size, t.grad_accum, world)
    max_total = per_epoch * t.epochs if t.max_steps is None else min(t.max_steps, per_epoch * t.epochs)
    ckpt_dir = folder.file("checkpoints")
    last = _last_checkpoint(ckpt_dir)
    if last is not None and (last / PLAN_FILE).is_file():
        plan = StepPlan.load(last / PLAN_FILE)
        step = int(last.name.split("-")[-1])
        rows = [r for r in read_jsonl(folder.file("history.jsonl")) if r["step"] <= step]
        folder.file("history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"resuming from {last} (step {step})")
    else:
        budget = None if t.time_budget_min is None else 60.0 * t.time_budget_min
        plan = StepPlan(max_total=max_total, warmup=t.warmup_steps, epochs=t.epochs, budget_s=budget)
    if t.precision != "no" and not cuda:
        log.warning("trainer.precision=%s needs CUDA; training in fp32 on the CPU", t.precision)

    args = Seq2SeqTrainingArguments(
        output_dir=str(ckpt_dir), per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size, gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate, weight_decay=t.weight_decay, adam_beta1=0.9, adam_beta2=0.999,
        optim="adamw_torch", max_grad_norm=t.max_grad_norm, max_steps=plan.max_total,
        eval_strategy="no", save_strategy="no", logging_strategy="steps", logging_steps=t.logging_steps,
        save_total_limit=t.save_total_limit, predict_with_generate=True,
        generation_num_beams=t.eval_num_beams, fp16=cuda and t.precision == "fp16",
        bf16=cuda and t.precision == "bf16", dataloader_num_workers=cfg.data.num_workers,
        dataloader_persistent_workers=False, dataloader_pin_memory=cuda, seed=cfg.seed,
        report_to=_logging_setup(cfg, folder),
        remove_unused_columns=False, ddp_find_unused_parameters=False,
        # Lines rendered on the fly have no order to restore, so a resumed run need not replay them.
        ignore_data_skip=cfg.data.kind == "synthetic", disable_tqdm=False)
    gpu_aug = GpuAugment(**OmegaConf.to_container(t.gpu_augment))
    shape = (1, bundle.image_processor.height, bundle.image_processor.width) \
        if isinstance(bundle.image_processor, LineImageProcessor) else (0, 0, 0)
    if (t.replay.size > 0 or gpu_aug.enabled or t.ctc_weight > 0) and shape[0] == 0:
        raise ConfigError("trainer.replay", "the replay pool, GPU augmentation and CTC loss need the project's "
                          "line processor (model.kind=vit_char)")
    if t.ctc_weight > 0:
        attach_ctc_head(bundle.model, tuple(bundle.model.config.encoder.patch_size))
    if t.fast_attention:
        log.info("training speed-ups: %s", speed_up_training(bundle.model))
    callbacks = [PlanCallback(plan), HistoryCallback(folder.file("history.jsonl"), plan,
                                                     max(t.batch_size, t.replay.batch_size if t.replay.size else 0))]
    if isinstance(train_ds, SyntheticLineDataset):
        callbacks.append(EpochCallback(train_ds))
    trainer = HTRTrainer(
        model=bundle.model, args=args, train_dataset=train_ds, eval_dataset=val_ds, data_collator=LineCollator(),
        processing_class=bundle.tokenizer, compute_metrics=_metrics_fn(bundle.tokenizer), callbacks=callbacks,
        plan=plan, pool_cfg=t.replay, gpu_augment=gpu_aug, image_shape=shape, max_target_length=t.max_target_length,
        ctc_weight=t.ctc_weight)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    train_seconds = time.perf_counter() - started
    for callback in (PlanCallback, HistoryCallback):  # the final validations below are not epochs
        trainer.remove_callback(callback)

    metrics: dict[str, Any] = {"steps": trainer.state.global_step, "planned_steps": plan.total,
                               "train_seconds_this_process": round(train_seconds, 1),
                               "parameters": count_parameters(bundle.model)}
    if getattr(bundle.model, "ctc_head", None) is not None:
        del bundle.model.ctc_head  # a training aid only; the saved model is a plain VisionEncoderDecoder
    restore_output_projection(bundle.model)  # the saved model has transformers' own LM head
    if trainer.is_world_process_zero():
        bundle.save(folder.file("model"), half=t.save_half)
    for name, dataset in {"val": val_ds, **tests}.items():
        out = trainer.evaluate(dataset, metric_key_prefix=name, num_beams=t.final_num_beams)
        metrics[f"{name}_cer"] = out[f"{name}_cer"]
        metrics[f"{name}_wer"] = out[f"{name}_wer"]
        metrics[f"{name}_loss"] = out[f"{name}_loss"]
    metrics["final_num_beams"] = t.final_num_beams
    if trainer.is_world_process_zero():
        write_report(folder.path)
        folder.finish(metrics)
        print(f"val CER {metrics['val_cer']:.4f}  WER {metrics['val_wer']:.4f} (beam {t.final_num_beams})"
              f"  -> {folder.file('model')}")
    return metrics


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
    df = pd.DataFrame(rows)[["epoch", "step", "lines_seen", "train_loss", "val_loss", "cer", "wer"]]
    df[["epoch", "step", "lines_seen"]] = df[["epoch", "step", "lines_seen"]].astype(int)
    df.to_csv(run_dir / "table.csv", index=False, float_format="%.4f")
    headers = ["Epoch", "Step", "Lines seen", "Training Loss", "Validation Loss", "CER", "WER"]
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
