"""The encoder-decoder family's loop (``model.kind`` ``vit_char``, ``vit_minilm``, ``trocr_*``):
``Seq2SeqTrainer`` with the shared step plan, run folder and report of :mod:`htr.train`.

Its own options (``trainer.seq2seq``, :class:`htr.train.Seq2SeqOptions`):

* ``replay_size``/``replay_batch_size``: each step mixes the freshly rendered lines with lines kept in a
  device buffer, so the GPU is not held back by the rendering workers (``trainer.gpu_augment`` distorts
  every line anew);
* ``ctc_weight > 0`` adds an auxiliary CTC loss on the encoder's patch columns (joint CTC-attention);
  its classifier is dropped before the model is saved;
* ``fast_attention``: SDPA decoder attention and a padded LM head while training (:mod:`htr.fast_train`);
* ``save_total_limit``: checkpoints kept.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

from htr.data import LineCollator, LineImageProcessor, ManifestLineDataset, SyntheticLineDataset
from htr.evaluate import error_rates
from htr.fast_train import restore_output_projection, speed_up_training
from htr.model import HTRBundle, build_model, count_parameters
from htr.train import (
    PLAN_FILE,
    CachedDataset,
    GpuAugment,
    Seq2SeqOptions,
    StepPlan,
    finish,
    logging_setup,
    manifest_records,
    new_plan,
    planned_steps,
    synthetic_lines,
    truncate_history,
)
from inkbase.errors import ConfigError, check_range
from inkbase.jsonio import JsonlAppender
from inkbase.runs import RunFolder, start_run

log = logging.getLogger(__name__)


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



class HTRTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer that turns uint8 ink maps into model input on the device (with the replay pool
    and GPU augmentation while training) and follows a :class:`StepPlan` learning-rate schedule."""

    def __init__(self, *args, plan: StepPlan, replay: tuple[int, int], gpu_augment: GpuAugment,
                 image_shape: tuple[int, int, int], max_target_length: int, ctc_weight: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.ctc_weight = ctc_weight
        self.plan = plan
        self.replay = replay  # (buffer size, lines per step after mixing)
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
            if self.replay[0] > 0:
                if self.pool is None:
                    self.pool = ReplayPool(*self.replay, self.image_shape,
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
def build_datasets(cfg: DictConfig, bundle: HTRBundle, folder: RunFolder) -> tuple[Any, Any, dict[str, Any]]:
    """(train, validation, extra test sets) for the ``data`` config."""
    max_len = cfg.trainer.max_target_length
    data = cfg.data
    if data.kind == "synthetic":
        check_range("data.train_lines", data.train_lines, 1, 10**9)
        train = synthetic_lines(data, bundle, data.fonts, data.train_lines * cfg.trainer.epochs, cfg.seed, max_len,
                                printed_prob=data.printed_prob)
        val = CachedDataset(synthetic_lines(data, bundle, data.fonts, data.val_lines, data.val_seed, max_len))
        tests = {}
        if data.heldout_lines > 0:
            tests["heldout"] = CachedDataset(synthetic_lines(data, bundle, "heldout", data.heldout_lines,
                                                             data.val_seed + 1, max_len))
        return train, val, tests
    if data.kind == "manifest":
        sets = [ManifestLineDataset(records, bundle.image_processor, bundle.tokenizer, max_len,
                                    bundle.decoder_start_token_id) for records in manifest_records(data, folder)]
        return sets[0], sets[1], {}
    raise ConfigError("data.kind", f"{data.kind!r} is not one of synthetic, manifest")


# ------------------------------------------------------------------------------------------------ run
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



def run(cfg: DictConfig, opts: Seq2SeqOptions) -> dict[str, Any]:
    """Train, save the model into ``<out_dir>/model``, write the history table and curve."""
    if opts.replay_size > 0 and opts.replay_batch_size < cfg.trainer.batch_size:
        raise ConfigError("trainer.seq2seq.replay_batch_size", "must be >= trainer.batch_size")
    if cfg.data.get("select_manifest"):
        raise ConfigError("data.select_manifest", "only the CTC loop chooses checkpoints on selection lines")
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
    ckpt_dir = folder.file("checkpoints")
    last = _last_checkpoint(ckpt_dir)
    if last is not None and (last / PLAN_FILE).is_file():
        plan = StepPlan.load(last / PLAN_FILE)
        step = int(last.name.split("-")[-1])
        truncate_history(folder, step)
        print(f"resuming from {last} (step {step})")
    else:
        plan = new_plan(cfg, planned_steps(cfg, len(train_ds), world))
    if t.precision != "no" and not cuda:
        log.warning("trainer.precision=%s needs CUDA; training in fp32 on the CPU", t.precision)

    args = Seq2SeqTrainingArguments(
        output_dir=str(ckpt_dir), per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size, gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate, weight_decay=t.weight_decay, adam_beta1=0.9, adam_beta2=0.999,
        optim="adamw_torch", max_grad_norm=t.max_grad_norm, max_steps=plan.max_total,
        eval_strategy="no", save_strategy="no", logging_strategy="steps", logging_steps=t.logging_steps,
        save_total_limit=opts.save_total_limit, predict_with_generate=True,
        generation_num_beams=t.eval_num_beams, fp16=cuda and t.precision == "fp16",
        bf16=cuda and t.precision == "bf16", dataloader_num_workers=cfg.data.num_workers,
        dataloader_persistent_workers=False, dataloader_pin_memory=cuda, seed=cfg.seed,
        report_to=logging_setup(cfg, folder),
        remove_unused_columns=False, ddp_find_unused_parameters=False,
        # Lines rendered on the fly have no order to restore, so a resumed run need not replay them.
        ignore_data_skip=cfg.data.kind == "synthetic", disable_tqdm=False)
    gpu_aug = GpuAugment(**OmegaConf.to_container(t.gpu_augment))
    shape = (1, bundle.image_processor.height, bundle.image_processor.width) \
        if isinstance(bundle.image_processor, LineImageProcessor) else (0, 0, 0)
    if (opts.replay_size > 0 or gpu_aug.enabled or opts.ctc_weight > 0) and shape[0] == 0:
        raise ConfigError("trainer.seq2seq.replay_size", "the replay pool, GPU augmentation and CTC loss need the "
                          "project's line processor (model.kind=vit_char)")
    if opts.ctc_weight > 0:
        attach_ctc_head(bundle.model, tuple(bundle.model.config.encoder.patch_size))
    if opts.fast_attention:
        log.info("training speed-ups: %s", speed_up_training(bundle.model))
    callbacks = [PlanCallback(plan), HistoryCallback(folder.file("history.jsonl"), plan,
                                                     max(t.batch_size, opts.replay_batch_size if opts.replay_size else 0))]
    if isinstance(train_ds, SyntheticLineDataset):
        callbacks.append(EpochCallback(train_ds))
    trainer = HTRTrainer(
        model=bundle.model, args=args, train_dataset=train_ds, eval_dataset=val_ds, data_collator=LineCollator(),
        processing_class=bundle.tokenizer, compute_metrics=_metrics_fn(bundle.tokenizer), callbacks=callbacks,
        plan=plan, replay=(opts.replay_size, opts.replay_batch_size), gpu_augment=gpu_aug, image_shape=shape,
        max_target_length=t.max_target_length, ctc_weight=opts.ctc_weight)
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
    if trainer.is_world_process_zero():
        finish(folder, metrics, t.final_num_beams)
    return metrics


