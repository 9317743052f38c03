"""Rendering speed of synthetic lines on one core: default augmentation side by side with clean rendering
(the floor: font rasterisation alone), in interleaved rounds, so a loaded machine slows both alike.

``python scripts/benchmark_synth_rendering.py [lines=500] [rounds=3]`` (configs/benchmark_synth_rendering.yaml);
writes ``results.json`` into the run folder.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from htr.synth.fonts import list_fonts
from htr.synth.lines import AugmentConfig, render_line
from htr.synth.text import line_texts
from inkbase.errors import check_range
from inkbase.jsonio import write_json
from inkbase.runs import start_run


def lines_per_second(n: int, augment: AugmentConfig | None, seed: int = 0,
                     sources: tuple[str, ...] = ("sample_exam", "generic")) -> float:
    rng = np.random.default_rng(seed)
    fonts = [f for f in list_fonts("train") if not f.uppercase_only]
    texts = line_texts(64, rng, sources=sources)
    jobs = [(next(texts), fonts[int(rng.integers(len(fonts)))]) for _ in range(n)]
    jobs = [(t, f) for t, f in jobs if not f.missing(t)]
    started = time.perf_counter()
    for text, font in jobs:
        render_line(text, font, rng, augment)
    return len(jobs) / (time.perf_counter() - started)


def run(cfg: DictConfig) -> dict[str, Any]:
    check_range("lines", cfg.lines, 1, 1_000_000)
    check_range("rounds", cfg.rounds, 1, 1000)
    folder = start_run(cfg.out_dir, cfg)
    sources = tuple(cfg.sources)
    lines_per_second(20, AugmentConfig(), sources=sources)  # warm the font caches
    augmented, clean = [], []
    for r in tqdm(range(cfg.rounds), desc="rounds"):  # interleaved, so both see the same machine load
        augmented.append(lines_per_second(cfg.lines, AugmentConfig(), seed=r, sources=sources))
        clean.append(lines_per_second(cfg.lines, None, seed=r, sources=sources))
    result = {"lines_per_round": cfg.lines, "rounds": cfg.rounds, "sources": list(sources),
              "fonts": len(list_fonts("train")),
              "augmented_lines_per_s": round(float(np.median(augmented)), 1),
              "clean_lines_per_s": round(float(np.median(clean)), 1),
              "augmented_over_clean": round(float(np.median(augmented) / np.median(clean)), 3)}
    write_json(folder.file("results.json"), result)
    folder.finish({k: result[k] for k in ("augmented_lines_per_s", "clean_lines_per_s", "augmented_over_clean")})
    print(result, flush=True)
    return result
