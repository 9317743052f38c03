"""The CTC family's loop (``model.kind`` ``ppocr_ctc`` or ``crnn_ctc``), run by :func:`htr.train.run`.

A plain PyTorch loop through ``accelerate`` (one device, or DDP under ``accelerate launch``) rather than
``Seq2SeqTrainer``, whose evaluation is built around ``generate``. It keeps the run-folder contract of
:mod:`htr.train`: ``history.jsonl`` with one row per epoch (train loss, validation loss, CER, WER),
``table.md``/``table.csv``/``curve.png``, ``model/`` and ``metrics.json``. An "epoch" is a 1 /
``trainer.epochs`` slice of the planned steps; each ends with a validation and a checkpoint
(``checkpoints/last``: weights, optimizer, step plan), and a rerun with the same ``out_dir`` resumes
from it. Lines are variable-width ink maps (:meth:`LineImageProcessor.line`); each batch is distorted
anew on the device (``trainer.gpu_augment``); ``trainer.grad_accum`` batches make one optimizer step.

Fine-tuning that does not forget its start (``trainer.ctc``, :class:`htr.train.CTCOptions`): an L2-SP
penalty towards the start weights, a frozen share of the backbone, layer-wise learning-rate decay; and
``data.select_manifest``: real lines scored at the start and at every validation, the best checkpoint
(the start included) becoming the run's model, with early stopping after ``patience`` validations.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from htr.ctc import batch_ink
from htr.data import SyntheticLineDataset, open_image, read_manifest, usable_records
from htr.evaluate import error_rates
from htr.model import HTRBundle, build_model, count_parameters
from htr.train import (
    PLAN_FILE,
    CachedDataset,
    CTCOptions,
    GpuAugment,
    StepPlan,
    finish,
    logging_setup,
    manifest_records,
    new_plan,
    planned_steps,
    synthetic_lines,
    truncate_history,
)
from inkbase.errors import ConfigError
from inkbase.jsonio import JsonlAppender, read_jsonl
from inkbase.runs import RunFolder, start_run

log = logging.getLogger(__name__)
CHECKPOINT = "last"
BEST = "best"
LAYER_BANDS = 8


class CTCLines(torch.utils.data.Dataset):
    """(ink map, label ids, text) per line, from rendered synthetic lines or a manifest's images."""

    def __init__(self, bundle: HTRBundle, synthetic: SyntheticLineDataset | None = None, records=None):
        self.processor = bundle.image_processor
        self.tokenizer = bundle.tokenizer
        self.synthetic = synthetic
        self.records = records

    def __len__(self) -> int:
        return len(self.synthetic) if self.synthetic is not None else len(self.records)

    def __getitem__(self, idx: int) -> tuple[np.ndarray, list[int], str]:
        if self.synthetic is not None:
            image, text = self.synthetic.sample(idx)
        else:
            rec = self.records[idx]
            image, _ = open_image(rec.image)
            text = rec.text
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        return self.processor.line(image), ids, text


def collate(items: list[tuple[np.ndarray, list[int], str]], multiple: int = 8) -> dict[str, Any]:
    ink, widths = batch_ink([it[0] for it in items], multiple)
    longest = max(1, max(len(it[1]) for it in items))
    labels = torch.full((len(items), longest), -100, dtype=torch.long)
    for i, it in enumerate(items):
        labels[i, :len(it[1])] = torch.tensor(it[1], dtype=torch.long)
    return {"ink": ink, "widths": widths, "labels": labels, "texts": [it[2] for it in items]}


def build_datasets(cfg: DictConfig, bundle: HTRBundle, folder: RunFolder) -> tuple[Any, Any, dict[str, Any]]:
    data = cfg.data
    max_len = cfg.trainer.max_target_length
    if data.kind == "synthetic":
        def lines(fonts: str, n: int, seed: int) -> CTCLines:
            return CTCLines(bundle, synthetic_lines(data, bundle, fonts, n, seed, max_len))

        train = CTCLines(bundle, synthetic_lines(data, bundle, data.fonts, data.train_lines * cfg.trainer.epochs,
                                                 cfg.seed, max_len, printed_prob=data.printed_prob))
        val = CachedDataset(lines(data.fonts, data.val_lines, data.val_seed))
        tests = {}
        if data.heldout_lines > 0:
            tests["heldout"] = CachedDataset(lines("heldout", data.heldout_lines, data.val_seed + 1),
                                             "rendering held-out-font lines")
        return train, val, tests
    if data.kind == "manifest":
        train_records, val_records = manifest_records(data, folder)
        return CTCLines(bundle, records=train_records), CachedDataset(CTCLines(bundle, records=val_records),
                                                                      "reading validation lines"), {}
    raise ConfigError("data.kind", f"{data.kind!r} is not one of synthetic, manifest")


@torch.inference_mode()
def evaluate(model, dataset, tokenizer, batch_size: int, num_beams: int, device) -> dict[str, float]:
    """Mean CTC loss per character, CER and WER over a cached dataset."""
    was_training = model.training
    model.eval()
    refs, hyps, loss_sum, chars = [], [], 0.0, 0
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    for batch in loader:
        out = model(batch["ink"].to(device), batch["widths"], batch["labels"].to(device))
        n = int((batch["labels"] >= 0).sum())
        loss_sum += float(out["loss"]) * n
        chars += n
        ids = model.decode_outputs(out, num_beams)  # the loss's forward pass serves decoding too
        hyps += [tokenizer.decode(row, skip_special_tokens=True) for row in ids]
        refs += batch["texts"]
    model.train(was_training)
    rates = error_rates(refs, hyps)
    return {"loss": loss_sum / max(1, chars), "cer": rates["cer"], "wer": rates["wer"]}


def selection_set(cfg: DictConfig, bundle: HTRBundle, folder: RunFolder):
    """The lines of ``data.select_manifest`` (real handwriting kept for choosing checkpoints), or None."""
    if not cfg.data.get("select_manifest"):
        return None
    records, _ = usable_records(read_manifest(cfg.data.select_manifest), folder.file("skipped.jsonl"))
    if not records:
        raise ConfigError("data.select_manifest", "no readable line images")
    return CachedDataset(CTCLines(bundle, records=records), "reading selection lines")


class StartAnchor:
    """L2-SP (Li et al., 2018): a penalty ``weight * sum ||w - w_start||^2`` over the trained weights pulls
    the fine-tuned model towards its pretrained start, so it learns the new data without forgetting."""

    def __init__(self, model: torch.nn.Module, weight: float):
        self.weight = weight
        self.start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def penalty(self, model: torch.nn.Module) -> torch.Tensor:
        terms = [(p - self.start[n]).pow(2).sum() for n, p in model.named_parameters() if n in self.start]
        return self.weight * torch.stack(terms).sum()


def param_groups(model, t: DictConfig, opts: CTCOptions) -> list[dict[str, Any]]:
    """AdamW groups: the first ``opts.freeze_backbone`` share of the backbone's weights (in graph order,
    from the input) frozen; the rest in ``LAYER_BANDS`` bands whose learning rate falls by
    ``opts.layer_decay`` per band towards the input (layer-wise decay); the classifier at the full rate."""
    backbone = list(model.backbone.named_parameters())
    n_frozen = int(round(opts.freeze_backbone * len(backbone)))
    for _, p in backbone[:n_frozen]:
        p.requires_grad_(False)
    groups: dict[tuple[float, float], list] = {}
    trained = backbone[n_frozen:]
    for i, (_, p) in enumerate(trained):
        band = LAYER_BANDS - int(i * LAYER_BANDS / len(trained))  # LAYER_BANDS at the input .. 1 at the top
        key = (t.learning_rate * opts.layer_decay ** band, t.weight_decay if p.ndim > 1 else 0.0)
        groups.setdefault(key, []).append(p)
    for p in model.classifier.parameters():
        groups.setdefault((t.learning_rate, t.weight_decay if p.ndim > 1 else 0.0), []).append(p)
    return [{"params": ps, "lr": lr, "initial_lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def _best_so_far(history: Path) -> dict[str, Any]:
    """The history row with the lowest selection CER (a resumed run keeps choosing among all epochs)."""
    rows = [r for r in read_jsonl(history) if r.get("select_cer") is not None]
    best = min(rows, key=lambda r: r["select_cer"], default=None)
    return best or {"epoch": 0, "step": 0, "select_cer": math.inf}


def _save_checkpoint(path: Path, model, optimizer, plan, step: int, elapsed: float) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save(tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    plan.save(tmp / PLAN_FILE, elapsed_s=elapsed, total=max(plan.total, step))
    (tmp / "state.json").write_text(json.dumps({"step": step}))
    if path.exists():
        import shutil

        shutil.rmtree(path)
    tmp.rename(path)  # a crash mid-save leaves the previous checkpoint intact


def run(cfg: DictConfig, opts: CTCOptions) -> dict[str, Any]:
    from accelerate import Accelerator

    folder = start_run(cfg.out_dir, cfg)
    t = cfg.trainer
    torch.manual_seed(cfg.seed)
    bundle = build_model(cfg.model)
    model = bundle.model
    log.info("model %s: %.2fM parameters", bundle.source, count_parameters(model) / 1e6)
    train_ds, val_ds, tests = build_datasets(cfg, bundle, folder)
    trackers = logging_setup(cfg, folder)
    accelerator = Accelerator(mixed_precision=t.precision if torch.cuda.is_available() else "no",
                              log_with=trackers or None, project_dir=str(folder.path))
    if trackers:
        accelerator.init_trackers(cfg.logger.project, config=OmegaConf.to_container(cfg, resolve=True))
    device = accelerator.device

    ckpt = folder.file("checkpoints") / CHECKPOINT
    best_dir = folder.file("checkpoints") / BEST
    # The anchor is the model this run started from (PP-OCR's weights, or init_from), also on resume.
    anchor = StartAnchor(model, opts.l2sp) if opts.l2sp > 0 else None
    select_ds = selection_set(cfg, bundle, folder)
    step = 0
    world = accelerator.num_processes
    plan = new_plan(cfg, planned_steps(cfg, len(train_ds), world))
    if (ckpt / "state.json").is_file():
        from htr.ctc import CTCRecognizer

        model.load_state_dict(CTCRecognizer.load(ckpt).state_dict())
        plan = StepPlan.load(ckpt / PLAN_FILE)
        step = json.loads((ckpt / "state.json").read_text())["step"]
        truncate_history(folder, step)
        print(f"resuming from {ckpt} (step {step})")
    optimizer = torch.optim.AdamW(param_groups(model, t, opts), lr=t.learning_rate)
    if anchor is not None:
        trained = {n for n, p in model.named_parameters() if p.requires_grad}
        anchor.start = {n: v for n, v in anchor.start.items() if n in trained}
    if step:
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    start_step = step
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: plan.lr_factor(s + start_step))
    reduction = model.reduction
    sampler_seed = cfg.seed * 1000 + step  # a resumed run draws new lines rather than replaying old ones
    generator = torch.Generator().manual_seed(sampler_seed + accelerator.process_index)
    loader = torch.utils.data.DataLoader(
        train_ds, batch_size=t.batch_size, shuffle=True, generator=generator, num_workers=cfg.data.num_workers,
        collate_fn=lambda items: collate(items, reduction), drop_last=False,
        persistent_workers=cfg.data.num_workers > 0)
    model, optimizer = accelerator.prepare(model, optimizer)
    augment = GpuAugment(**OmegaConf.to_container(t.gpu_augment))
    raw = accelerator.unwrap_model(model)
    if anchor is not None:
        anchor.start = {n: v.to(device) for n, v in anchor.start.items()}
    model.train()
    best = _best_so_far(folder.file("history.jsonl"))
    if select_ds is not None and step == 0 and accelerator.is_main_process:
        # The start is a candidate too: training that never beats it on the selection lines keeps it.
        m = evaluate(raw, select_ds, bundle.tokenizer, t.eval_batch_size, t.eval_num_beams, device)
        best = {"epoch": 0, "step": 0, "select_cer": m["cer"]}
        with JsonlAppender(folder.file("history.jsonl")) as fh:
            fh.write({"epoch": 0, "step": 0, "lines_seen": 0, "train_loss": None, "val_loss": None, "cer": None,
                      "wer": None, "learning_rate": 0.0, "select_cer": m["cer"], "select_wer": m["wer"]})
        raw.save(best_dir)
        log.info("start: selection CER %.4f", m["cer"])

    history = folder.file("history.jsonl")
    started = time.perf_counter()
    elapsed0 = plan.elapsed_s
    rate_origin: tuple[int, float] | None = None
    eval_seconds: list[float] = []
    losses: list[float] = []
    bar = tqdm(total=plan.total, initial=step, desc="training", disable=not accelerator.is_main_process)
    stop = False

    def batches():  # manifests are shorter than the planned steps: go round them again
        while True:
            yield from loader

    micro_batches = batches()
    while True:
        for _ in range(t.grad_accum):  # grad_accum batches make one optimizer step
            batch = next(micro_batches)
            ink = batch["ink"].to(device).float()
            if augment.enabled:
                ink = augment(ink / 255.0) * 255.0
            with accelerator.autocast():
                out = model(ink, batch["widths"], batch["labels"].to(device))
            loss = out["loss"] + anchor.penalty(raw) if anchor is not None else out["loss"]
            accelerator.backward(loss / t.grad_accum)
            losses.append(float(out["loss"].detach()))
        if t.max_grad_norm:
            accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        now = time.perf_counter()
        elapsed = elapsed0 + now - started
        if plan.budget_s is not None:
            if rate_origin is None:
                rate_origin = (step, now)
            elif step % 10 == 0 and step > rate_origin[0]:
                stop = plan.replan(step, (step - rate_origin[0]) / (now - rate_origin[1]), elapsed, eval_seconds)
                bar.total = plan.total
        if step % t.logging_steps == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-t.logging_steps:]):.3f}",
                            lr=f"{max(scheduler.get_last_lr()):.2e}")
        if step >= plan.total:
            stop = True
        if step >= plan.epoch_end(plan.epochs_done + 1) or stop:
            t_eval = time.perf_counter()
            plan.epochs_done += 1
            if accelerator.is_main_process:
                metrics = evaluate(raw, val_ds, bundle.tokenizer, t.eval_batch_size, t.eval_num_beams, device)
                row = {"epoch": plan.epochs_done, "step": step,
                       "lines_seen": step * t.batch_size * t.grad_accum * world,
                       "train_loss": float(np.mean(losses)) if losses else None, "val_loss": metrics["loss"],
                       "cer": metrics["cer"], "wer": metrics["wer"], "learning_rate": max(scheduler.get_last_lr())}
                if select_ds is not None:
                    m = evaluate(raw, select_ds, bundle.tokenizer, t.eval_batch_size, t.eval_num_beams, device)
                    row.update(select_cer=m["cer"], select_wer=m["wer"])
                    if m["cer"] < best["select_cer"]:
                        best = {"epoch": plan.epochs_done, "step": step, "select_cer": m["cer"]}
                        raw.save(best_dir)
                    elif opts.patience is not None and plan.epochs_done - best["epoch"] >= opts.patience:
                        log.info("early stop: no better selection CER for %d epochs", opts.patience)
                        stop = True
                with JsonlAppender(history) as fh:
                    fh.write(row)
                accelerator.log(row, step=step)
                log.info("epoch %d: step %d, train loss %.3f, val loss %.3f, CER %.4f, WER %.4f", plan.epochs_done,
                         step, row["train_loss"] or float("nan"), metrics["loss"], metrics["cer"], metrics["wer"])
                losses = []
                _save_checkpoint(ckpt, raw, optimizer, plan, step, elapsed0 + time.perf_counter() - started)
            accelerator.wait_for_everyone()
            eval_seconds.append(time.perf_counter() - t_eval)
            rate_origin = None
        if stop:
            break
    bar.close()
    train_seconds = time.perf_counter() - started

    result: dict[str, Any] = {"steps": step, "planned_steps": plan.total,
                              "train_seconds_this_process": round(train_seconds, 1),
                              "parameters": count_parameters(raw)}
    if accelerator.is_main_process:
        if select_ds is not None:
            from htr.ctc import CTCRecognizer

            raw.load_state_dict(CTCRecognizer.load(best_dir).state_dict())
            result.update(chosen_epoch=best["epoch"], chosen_step=best["step"],
                          select_cer_greedy=best["select_cer"], select_manifest=str(cfg.data.select_manifest))
        bundle.model = raw
        bundle.save(folder.file("model"), half=t.save_half)
        saved = type(raw).load(folder.file("model")).to(device)  # score the weights as saved (fp16 if save_half)
        finals = {"val": val_ds, **tests, **({"select": select_ds} if select_ds is not None else {})}
        for name, dataset in finals.items():
            m = evaluate(saved, dataset, bundle.tokenizer, t.eval_batch_size, t.final_num_beams, device)
            for key in ("cer", "wer", "loss"):
                result[f"{name}_{key}"] = m[key]
        finish(folder, result, t.final_num_beams)
    accelerator.end_training()
    return result
