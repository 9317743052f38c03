"""Measure line segmentation on rendered paragraphs whose line boxes are known.

Each case is a paragraph written with one hand (:func:`htr.synth.lines.render_paragraph`), laid on
augmented paper, optionally rotated (and deskewed with :mod:`htr.preprocess`); the truth is every
line's own ink box, carried through the same rotations. The cases are used by the tests too. The report
compares the project's segmenter with the seed's rules alone on the same cases, per setting::

    python scripts/benchmark_segmentation.py [cases=60] [seed=0]

writes ``rows.jsonl`` (one row per setting and segmenter as it finishes) and ``results.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from htr.preprocess import estimate_skew, rotate
from htr.segment import LineBox, SegmenterConfig, segment_lines
from htr.synth.fonts import Font, list_fonts
from htr.synth.lines import (
    AugmentConfig,
    degrade,
    ink_bbox,
    ink_on_paper,
    paper,
    render_paragraph,
    sample_style,
)
from htr.synth.text import line_texts
from inkbase.errors import ConfigError, check_range
from inkbase.jsonio import JsonlAppender
from inkbase.runs import start_run

Box = tuple[int, int, int, int]


@dataclass
class Case:
    image: np.ndarray
    truth: list[Box]  # (x0, y0, x1, y1), exclusive ends
    rotation: float = 0.0  # degrees applied (positive = downhill to the right)
    estimated: float | None = None  # skew estimated by deskew, when applied


def box_iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def match_ious(pred: list[LineBox], truth: list[Box]) -> list[float]:
    """For each true line, the IoU of the best predicted box."""
    boxes = [(p.x, p.y, p.x1, p.y1) for p in pred]
    return [max((box_iou(t, b) for b in boxes), default=0.0) for t in truth]


def make_case(rng: np.random.Generator, fonts: list[Font], texts, n_lines: int, pitch: float,
              rotation: float = 0.0, deskew: bool = False) -> Case:
    """One paragraph of ``n_lines`` lines, baselines ``pitch`` font sizes apart (< 1.2: lines touch)."""
    font = fonts[int(rng.integers(len(fonts)))]
    style = sample_style(font, rng, AugmentConfig(rotation_prob=0, elastic_prob=0, font_size=(36, 56)))
    lines = [next(texts) for _ in range(n_lines)]
    if font.uppercase_only:
        lines = [t.upper() for t in lines]
    para = render_paragraph(lines, style, rng, line_pitch=style.size * pitch, vary=0)
    aug = AugmentConfig()
    image = degrade(ink_on_paper(paper(para.mask.shape, rng, aug), para.mask, rng.uniform(0, 80)), rng, aug)
    masks = para.line_masks
    estimated = None
    if rotation:
        image, m = rotate(image, -rotation)
        masks = [cv2.warpAffine(k, m, image.shape[::-1]) for k in masks]
    if deskew:
        estimated = estimate_skew(image)
        image, m = rotate(image, estimated)
        masks = [cv2.warpAffine(k, m, image.shape[::-1]) for k in masks]
    return Case(image=image, truth=[ink_bbox(k, threshold=127) for k in masks], rotation=rotation,
                estimated=estimated)


def make_cases(seed: int, n: int, pitch: tuple[float, float], rotation: float = 0.0, deskew: bool = False,
               fonts: list[Font] | None = None) -> list[Case]:
    rng = np.random.default_rng(seed)
    fonts = fonts or list_fonts("train")
    texts = line_texts(45, rng, sources=("sample_exam", "generic"), min_chars=25)
    return [make_case(rng, fonts, texts, int(rng.integers(3, 7)), float(rng.uniform(*pitch)),
                      rotation * float(rng.choice([-1, 1])), deskew) for _ in range(n)]


def evaluate(cases: list[Case], cfg: SegmenterConfig) -> dict[str, float]:
    """Share of cases with the right line count, mean and minimum best-match IoU over all lines."""
    counts, ious = [], []
    for case in cases:
        pred = segment_lines(case.image, cfg)
        counts.append(len(pred) == len(case.truth))
        ious += match_ious(pred, case.truth)
    return {"count_accuracy": float(np.mean(counts)), "mean_iou": float(np.mean(ious)),
            "min_iou": float(np.min(ious)), "cases": len(cases), "lines": len(ious)}


def run(cfg) -> list[dict[str, Any]]:
    check_range("cases", cfg.cases, 1, 100_000)
    folder = start_run(cfg.out_dir, cfg)
    # IoU against tight ink boxes, so the boxes are compared without Lanke et al.'s 8 px padding.
    tight = SegmenterConfig(padding=0, padding_x=0)
    segmenters = {"ours": tight, "Lanke rules only": dataclasses.replace(
        tight, split_prominence=None, merge_fragments=0.0, core_band=0.0)}
    fonts = [f for f in list_fonts("train") if cfg.font_source in ("any", f.source)]
    if not fonts:
        raise ConfigError("font_source", f"no training font from {cfg.font_source!r} is installed")
    rows, lines = [], []
    with JsonlAppender(folder.file("rows.jsonl")) as out:
        for name, setting in cfg.settings.items():
            cases = make_cases(cfg.seed, cfg.cases, tuple(setting.pitch), setting.get("rotation", 0.0),
                               setting.get("deskew", False), fonts=fonts)
            for label, seg in segmenters.items():
                row = {"setting": name, "segmenter": label, **evaluate(cases, seg)}
                if setting.get("deskew"):
                    err = [abs(c.estimated - c.rotation) for c in cases]
                    row.update(deskew_error_mean=float(np.mean(err)), deskew_error_max=float(np.max(err)))
                out.write(row)
                rows.append(row)
                lines.append(f"| {name} | {label} | {row['count_accuracy']:.3f} | {row['mean_iou']:.3f} | "
                             f"{row['min_iou']:.3f} | {row['cases']} | {row['lines']} |")
                print(lines[-1], flush=True)
    folder.file("results.md").write_text(
        "| setting | segmenter | line count right | mean IoU | min IoU | paragraphs | lines |\n"
        "|---|---|---:|---:|---:|---:|---:|\n" + "\n".join(lines) + "\n", encoding="utf-8")
    folder.finish({f"{r['setting']}/{r['segmenter']}/{k}": r[k] for r in rows for k in ("count_accuracy", "mean_iou")})
    return rows
