"""Rendering speed of synthetic lines on one core: default augmentation side by side with clean rendering
(the floor: font rasterisation alone), in one run, so a loaded machine slows both alike::

    python -m htr.synth.benchmark --lines 500 --out outputs/synth_speed.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from htr.synth.fonts import list_fonts
from htr.synth.lines import AugmentConfig, render_line
from htr.synth.text import line_texts


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sources", default="sample_exam,generic", help="htr.synth.text sources, comma-separated")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    sources = tuple(args.sources.split(","))
    lines_per_second(20, AugmentConfig(), sources=sources)  # warm the font caches
    augmented, clean = [], []
    for r in range(args.rounds):  # interleaved, so both see the same machine load
        augmented.append(lines_per_second(args.lines, AugmentConfig(), seed=r, sources=sources))
        clean.append(lines_per_second(args.lines, None, seed=r, sources=sources))
    result = {"lines_per_round": args.lines, "rounds": args.rounds, "sources": list(sources),
              "fonts": len(list_fonts("train")),
              "augmented_lines_per_s": round(float(np.median(augmented)), 1),
              "clean_lines_per_s": round(float(np.median(clean)), 1),
              "augmented_over_clean": round(float(np.median(augmented) / np.median(clean)), 3)}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
