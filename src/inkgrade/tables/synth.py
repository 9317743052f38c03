"""Rendered exam pages with filled-in answer tables, for tests and the evaluation.

A page is drawn in layout coordinates (white paper, printed grids, a printed label above each table),
the answers are written into the cells (a handwriting font or given ink masks, e.g. real digits;
``""`` leaves a cell empty, ``"~X"`` writes X and crosses it out), then the whole page is shifted,
scaled and rotated like a scan and degraded (noise, blur, JPEG).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from htr.cells.data import _strike, font_glyph
from htr.synth.fonts import Font
from inkgrade.tables.layout import Layout, Table

Glyph = Callable[[str, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class ScanWarp:
    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    angle: float = 0.0  # degrees, counter-clockwise

    def matrix(self, size: tuple[int, int]) -> np.ndarray:
        w, h = size
        m = cv2.getRotationMatrix2D((w / 2, h / 2), self.angle, self.scale)
        m[:, 2] += (self.dx, self.dy)
        return m


def random_warp(rng: np.random.Generator, shift: float = 25, scale: float = 0.03, angle: float = 3.0) -> ScanWarp:
    return ScanWarp(float(rng.uniform(-shift, shift)), float(rng.uniform(-shift, shift)),
                    float(rng.uniform(1 - scale, 1 + scale)), float(rng.uniform(-angle, angle)))


def font_writer(font: Font) -> Glyph:
    return lambda ch, rng: font_glyph(ch, font, rng)


def _page_size(layout: Layout, page: int) -> tuple[int, int]:
    t = next(t for t in layout.tables if t.page == page)
    return int(t.page_size[0]), int(t.page_size[1])


def render_page(layout: Layout, page: int, answers: dict[str, list[str]], write: Glyph,
                rng: np.random.Generator, warp: ScanWarp = ScanWarp(), degrade: bool = True,
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One scanned page (grey uint8) and the true corners (TL, TR, BR, BL) of each table on it."""
    w, h = _page_size(layout, page)
    printed = np.zeros((h, w), np.uint8)
    hand = np.zeros((h, w), np.uint8)
    corners = {}
    tables: list[Table] = [t for t in layout.tables if t.page == page]
    for t in tables:
        b = t.box
        x0, y0, bw, bh = int(b.x), int(b.y), int(b.width), int(b.height)
        n = len(t.cells)
        cv2.rectangle(printed, (x0, y0), (x0 + bw, y0 + bh), 255, 2)
        for i in range(1, n):
            xi = int(round(x0 + i * bw / n))
            cv2.line(printed, (xi, y0), (xi, y0 + bh), 255, 2)
        cv2.putText(printed, f"Table {t.id}", (x0, max(y0 - 12, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 1)
        corners[t.id] = np.float32([[x0, y0], [x0 + bw, y0], [x0 + bw, y0 + bh], [x0, y0 + bh]])
        cw = bw / n
        for i, ans in enumerate(answers.get(t.id, [])):
            if not ans:
                continue
            crossed = ans.startswith("~")
            glyph = write(ans.lstrip("~"), rng)
            fit = min(bh * rng.uniform(0.45, 0.75) / max(glyph.shape[0], 1), 0.85 * cw / max(glyph.shape[1], 1))
            g = cv2.resize(glyph, None, fx=fit, fy=fit, interpolation=cv2.INTER_AREA)
            gh, gw = g.shape
            cx = x0 + (i + 0.5) * cw + rng.normal(0, 0.06 * cw)
            cy = y0 + 0.5 * bh + rng.normal(0, 0.06 * bh)
            left, top = int(round(cx - gw / 2)), int(round(cy - gh / 2))
            hand[top:top + gh, left:left + gw] = np.maximum(hand[top:top + gh, left:left + gw], g)
            if crossed:
                _strike(hand, (left, top, left + gw, top + gh), rng, int(rng.integers(2, 4)))
    page_img = np.full((h, w), 250.0, np.float32)
    page_img += (20.0 - page_img) * printed / 255.0
    page_img += (float(rng.uniform(10, 90)) - page_img) * hand / 255.0
    m = warp.matrix((w, h))
    page_img = cv2.warpAffine(page_img, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=250.0)
    if degrade:
        page_img += rng.normal(0, 4, page_img.shape).astype(np.float32)
        page_img = cv2.GaussianBlur(page_img, (0, 0), 0.6)
    out = np.clip(page_img, 0, 255).astype(np.uint8)
    if degrade:
        out = cv2.imdecode(cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, 80])[1], cv2.IMREAD_GRAYSCALE)
    moved = {k: cv2.transform(c[None], m)[0] for k, c in corners.items()}
    return out, moved


def demo_layout(n_items: int = 10, id_digits: int = 6, alphabet: str = "ABCDEFGH", page_size=(1240, 1754)) -> dict:
    """A one-page layout: a ``student_id`` table (``id_digits`` cells) and one answers table."""
    tables = []
    if id_digits:
        tables.append({"id": "sid", "page": 1, "role": "student_id", "page_size": list(page_size),
                       "box": {"x": 640, "y": 120, "width": 60 * id_digits, "height": 64},
                       "cells": [{"item_id": f"id{i + 1}", "points": 0} for i in range(id_digits)]})
    tables.append({"id": "t1", "page": 1, "role": "answers", "page_size": list(page_size),
                   "box": {"x": 100, "y": 520, "width": 72 * n_items, "height": 72},
                   "cells": [{"item_id": f"q{i + 1}", "points": 1 + i % 2} for i in range(n_items)]})
    return {"exam_id": "demo", "alphabet": alphabet, "tables": tables}


def write_scans(folder: str | Path, layout: Layout, scripts: list[dict[str, list[str]]], write: Glyph | list[Glyph],
                rng: np.random.Generator, warp: bool = True, ext: str = ".png") -> list[Path]:
    """Render ``scripts`` (per script: table id -> cell entries) as PNG pages named in reading order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s, answers in enumerate(scripts):
        hand = write[s % len(write)] if isinstance(write, list) else write
        for page in range(1, layout.pages_per_script + 1):
            if not any(t.page == page for t in layout.tables):
                continue
            img, _ = render_page(layout, page, answers, hand, rng, random_warp(rng) if warp else ScanWarp())
            path = folder / f"scan_{s + 1:03d}_{page}{ext}"
            cv2.imwrite(str(path), img)
            paths.append(path)
    return paths
