"""Write rendered synthetic handwriting to disk as JSONL manifests (``data_prep/synthetic/prepare.py``).

The split is decided here, once: train and val use the same (training) fonts but different text, split
by sentence with :func:`htr.synth.text.text_split`. Held-out fonts (``fonts=heldout`` or ``heldout_extra``) render a test set only
(``n_train=0``): their lines are the val split's text in hands no training run sees. Item ``i`` of a split is a
pure function of ``(seed, split, i)``, so the output does not depend on the number of workers, and an
interrupted run resumes where it stopped (manifest lines are written, fsynced, as images are finished).

Output folder::

    train.jsonl, val.jsonl   {"image": "images/train/line_0000000.png", "text": ..., "font": ...}
    images/<split>/line_*.png, images/<split>/para_*.png (paragraphs: text lines joined by "\\n",
                                                           plus "lines": ink boxes [x, y, w, h])
    config.yaml, run.json, metrics.json (inkbase.runs)
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tqdm import tqdm

from htr.synth.fonts import Font, get_font, list_fonts
from htr.synth.lines import (
    AugmentConfig,
    degrade,
    ink_on_paper,
    paper,
    render_line,
    render_paragraph,
    sample_style,
)
from htr.synth.text import line_texts
from inkbase.errors import ConfigError, check_range
from inkbase.jsonio import JsonlAppender, read_jsonl
from inkbase.runs import RunFolder, start_run

SPLIT_IDS = {"train": 0, "val": 1}


@dataclass(frozen=True)
class Job:
    split: str
    kind: str  # "line" or "para"
    index: int
    texts: tuple[str, ...]  # one text for a line, several for a paragraph
    font: str

    @property
    def image(self) -> str:
        return f"images/{self.split}/{self.kind}_{self.index:07d}.png"


def plan(cfg: DictConfig, fonts: list[Font], split: str, n_lines: int, n_paragraphs: int) -> Iterator[Job]:
    """Texts and fonts of one split, drawn in a fixed order from ``(seed, split)``."""
    rng = np.random.default_rng([int(cfg.seed), SPLIT_IDS[split]])
    sources = {k: float(v) for k, v in OmegaConf.to_container(cfg.text.sources).items() if float(v) > 0}
    texts = line_texts(int(cfg.text.max_chars), rng, sources=sources, data_dir=cfg.text.data_dir,
                       sample_exam_dir=cfg.text.sample_exam_dir, split=split,
                       val_fraction=float(cfg.text.val_fraction))
    lo, hi = (int(v) for v in cfg.paragraphs.lines)
    for kind, count in (("line", n_lines), ("para", n_paragraphs)):
        for index in range(count):
            lines = [next(texts) for _ in range(1 if kind == "line" else int(rng.integers(lo, hi + 1)))]
            font = _pick_font(fonts, lines, rng, cfg.uppercase_fonts)
            if font.uppercase_only:
                lines = [t.upper() for t in lines]
            yield Job(split, kind, index, tuple(lines), font.name)


def _pick_font(fonts: list[Font], lines: list[str], rng: np.random.Generator, uppercase: str) -> Font:
    usable = [f for f in fonts if uppercase == "upper" or not f.uppercase_only]
    for _ in range(20):
        font = usable[int(rng.integers(len(usable)))]
        label = [t.upper() for t in lines] if font.uppercase_only else lines
        if not any(font.missing(t) for t in label):
            return font
    raise ConfigError("fonts", f"no font has all glyphs of {lines!r}")


_WORKER: dict[str, Any] = {}


def _init_worker(out_dir: str, seed: int, augment: dict[str, Any], line_pitch: tuple[float, float]) -> None:
    _WORKER.update(out_dir=Path(out_dir), seed=seed, augment=AugmentConfig.from_dict(augment), pitch=line_pitch)


def render_job(job: Job) -> dict[str, Any]:
    """Render and save one job's image; returns its manifest record."""
    rng = np.random.default_rng([_WORKER["seed"], SPLIT_IDS[job.split], 1 if job.kind == "para" else 0, job.index])
    font = get_font(job.font)
    augment: AugmentConfig = _WORKER["augment"]
    path = _WORKER["out_dir"] / job.image
    record: dict[str, Any] = {"image": job.image, "text": "\n".join(job.texts), "font": job.font}
    if job.kind == "line":
        image = render_line(job.texts[0], font, rng, augment)
        image.save(path)
        return record
    style = sample_style(font, rng, augment)
    para = render_paragraph(list(job.texts), style, rng, line_pitch=style.size * rng.uniform(*_WORKER["pitch"]))
    img = degrade(ink_on_paper(paper(para.mask.shape, rng, augment), para.mask, style.ink), rng, augment)
    Image.fromarray(img, mode="L").save(path)
    record["lines"] = [[b[0], b[1], b[2] - b[0], b[3] - b[1]] if b else None for b in para.boxes]
    return record


def _check(cfg: DictConfig) -> None:
    if cfg.fonts not in ("train", "heldout", "heldout_extra"):
        raise ConfigError("fonts", f"{cfg.fonts!r} is not one of train, heldout, heldout_extra")
    if cfg.fonts != "train" and (cfg.n_train or cfg.paragraphs.n_train):
        raise ConfigError("fonts", "'heldout': training data is rendered in the 'train' fonts only (set n_train=0)")
    if cfg.uppercase_fonts not in ("upper", "skip"):
        raise ConfigError("uppercase_fonts", f"{cfg.uppercase_fonts!r} is not 'upper' or 'skip'")
    for key in ("n_train", "n_val", "paragraphs.n_train", "paragraphs.n_val"):
        check_range(key, OmegaConf.select(cfg, key), 0, 10**9)
    check_range("num_workers", cfg.num_workers, 1, 256)
    lo, hi = cfg.paragraphs.lines
    if not 1 <= lo <= hi:
        raise ConfigError("paragraphs.lines", f"[{lo}, {hi}] must satisfy 1 <= low <= high")


def run(cfg: DictConfig) -> dict[str, Any]:
    _check(cfg)
    augment = OmegaConf.to_container(cfg.render, resolve=True)
    AugmentConfig.from_dict(augment)  # range-check before any work starts
    fonts = list_fonts(cfg.fonts)
    if not fonts:
        raise ConfigError("fonts", "no handwriting font is available")
    folder: RunFolder = start_run(cfg.out_dir, cfg)
    counts = {}
    started = time.perf_counter()
    rendered = 0
    for split in ("train", "val"):
        (folder.path / "images" / split).mkdir(parents=True, exist_ok=True)
        manifest = folder.file(f"{split}.jsonl")
        done = {r["image"] for r in read_jsonl(manifest)}
        n_lines, n_paras = int(cfg[f"n_{split}"]), int(cfg.paragraphs[f"n_{split}"])
        jobs = [j for j in plan(cfg, fonts, split, n_lines, n_paras) if j.image not in done]
        init = (str(folder.path), int(cfg.seed), augment, tuple(float(v) for v in cfg.paragraphs.pitch))
        with JsonlAppender(manifest) as out, tqdm(total=n_lines + n_paras, initial=len(done), desc=split,
                                                  unit="img") as bar:
            if int(cfg.num_workers) == 1:
                _init_worker(*init)
                results = map(render_job, jobs)
                pool = None
            else:
                pool = mp.get_context("spawn").Pool(int(cfg.num_workers), _init_worker, init)
                results = pool.imap(render_job, jobs, chunksize=int(cfg.chunk_size))
            try:
                for record in results:
                    out.write(record)
                    bar.update()
                    rendered += 1
            finally:
                if pool is not None:
                    pool.close()
                    pool.join()
        counts[split] = len(read_jsonl(manifest))
    elapsed = time.perf_counter() - started
    metrics = {"train_images": counts["train"], "val_images": counts["val"], "fonts": [f.name for f in fonts],
               "rendered_now": rendered, "seconds": round(elapsed, 1),
               "images_per_second": round(rendered / elapsed, 1) if elapsed > 0 else None}
    folder.finish(metrics)
    return metrics
