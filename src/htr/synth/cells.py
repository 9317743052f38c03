"""Handwritten letters in answer-table cells (Grabowski & Canz): one letter A-Z written into a printed cell.

The crop shows the cell's printed border and, with a small margin, a bit of the neighbouring cells;
the letter is written off-centre by a random amount and sometimes touches or crosses the border, as
students do.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
from PIL import Image

from htr.synth.fonts import Font
from htr.synth.lines import AugmentConfig, degrade, ink_bbox, ink_on_paper, paper, render_ink, sample_style


def render_letter_cell(letter: str, font: Font, rng: np.random.Generator, size: tuple[int, int] = (64, 64),
                       augment: AugmentConfig | None = None) -> Image.Image:
    """A ``size`` (width, height) cell with ``letter`` handwritten in it, cropped with 0-6 px of the
    surroundings; mode "L". ``augment`` gives the hand and paper ranges (default: ``AugmentConfig()``)."""
    if len(letter) != 1 or letter.isspace():
        raise ValueError(f"expected one letter, got {letter!r}")
    a = augment or AugmentConfig()
    w, h = size
    margin = int(rng.integers(0, 7))
    canvas_h, canvas_w = h + 2 * margin, w + 2 * margin
    printed = np.zeros((canvas_h, canvas_w), np.uint8)
    thickness = int(rng.integers(1, 4))
    cv2.rectangle(printed, (margin, margin), (margin + w - 1, margin + h - 1), 255, thickness)

    style = sample_style(font, rng, a)
    style = dataclasses.replace(style, size=float(h), char_mode=False)
    ink = render_ink(letter, style, rng)
    box = ink_bbox(ink.mask)
    hand = np.zeros_like(printed)
    if box is not None:
        x0, y0, x1, y1 = box
        glyph = ink.mask[y0:y1, x0:x1]
        # Fonts differ in how tall their capitals are; students fill a similar share of the cell.
        fit = min(h * rng.uniform(0.4, 0.75) / glyph.shape[0], 0.9 * w / glyph.shape[1])
        glyph = cv2.resize(glyph, None, fx=fit, fy=fit, interpolation=cv2.INTER_AREA)
        gh, gw = glyph.shape
        # Mostly near the centre; now and then far enough off to touch or cross the border.
        spread = 0.25 if rng.random() < 0.08 else 0.08
        cx = margin + w / 2 + rng.normal(0, spread * w)
        cy = margin + h / 2 + rng.normal(0, spread * h)
        left = int(np.clip(round(cx - gw / 2), 0, canvas_w - gw))
        top = int(np.clip(round(cy - gh / 2), 0, canvas_h - gh))
        hand[top:top + gh, left:left + gw] = glyph
    img = ink_on_paper(paper((canvas_h, canvas_w), rng, a), printed, float(rng.uniform(0, 70)))
    img = ink_on_paper(img, hand, style.ink)
    return Image.fromarray(degrade(img, rng, a), mode="L")
