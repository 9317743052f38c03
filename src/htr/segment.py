"""Line segmentation by horizontal projection profile (Lanke et al.).

Binary foreground pixels are summed row by row, the profile is smoothed with a sliding-window mean,
and lines are the runs where it stays above ``threshold`` (2 %) of its maximum; every box is padded by
``padding`` (8 px) to keep ascenders and descenders, and trimmed to the columns that hold ink.

Two additions beyond the paper, each switchable in ``configs/segmenter/``:

* ``split_prominence``: with tight line spacing, descenders of one line touch ascenders of the next and
  the profile never drops below 2 % between them; a run is then split at the lowest point between
  profile peaks that stand out by at least this fraction of the maximum (``null`` = the paper's behaviour);
* ``remove_rules``: printed box borders and ruled lines (long straight ink) are removed before
  profiling, so that a crop that includes part of an answer box's frame does not become a "line".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.signal import find_peaks

from htr.preprocess import to_gray
from inkbase.errors import ConfigError, check_range, config_dataclass


@dataclass(frozen=True)
class SegmenterConfig:
    binarize: str = "otsu"  # "otsu" or "adaptive" (uneven illumination)
    adaptive_block: int = 31  # odd neighbourhood size of the adaptive threshold, px
    adaptive_c: float = 15.0
    min_contrast: float = 30.0  # grey levels between ink and paper below which the image is blank
    min_ink_frac: float = 0.0005  # below this fraction of ink pixels the image is blank
    denoise: bool = True  # median filter before binarising: salt noise would otherwise count as ink
    flatten: int = 21  # px; threshold ink against the paper around it (grey closing this wide), so a few
    #                    words on a shaded page are not lost to Otsu splitting the shading; 0 = off
    remove_rules: bool = True
    rule_length: float = 0.5  # a straight run longer than this fraction of the width/height is a rule,
    rule_chars: float = 4.0  # ... and so is one longer than this many median character heights
    window: int = 9  # sliding-window size of the profile smoothing, rows
    threshold: float = 0.02  # fraction of the profile maximum below which a row is a gap
    split_prominence: float | None = 0.15  # see module docstring; None = off
    split_depth: float = 0.4  # ... and only where the valley is below this fraction of both peaks: the
    #                           dip between a line's x-height and baseline rows is shallower than that
    padding: int = 8  # px added above and below each line
    padding_x: int = 8  # px added left and right after trimming blank columns
    min_line_height: int = 8  # runs shorter than this (before padding) are dropped, px
    merge_fragments: float = 0.25  # a run with less ink than this fraction of the median run, lower
    #                                than 0.6 of it and almost touching a neighbour joins that neighbour
    #                                (a long descender or ascender poking into the gap); 0 = off
    trim_columns: bool = True
    core_band: float = 0.5  # the horizontal extent is taken from rows above this fraction of the line's
    #                         profile peak, so another line's descenders do not widen the box; 0 = all rows

    def __post_init__(self) -> None:
        if self.binarize not in ("otsu", "adaptive"):
            raise ConfigError("segmenter.binarize", f"{self.binarize!r} is not 'otsu' or 'adaptive'")
        if self.adaptive_block < 3 or self.adaptive_block % 2 == 0:
            raise ConfigError("segmenter.adaptive_block", f"{self.adaptive_block} must be odd and >= 3")
        check_range("segmenter.min_contrast", self.min_contrast, 0, 255)
        check_range("segmenter.min_ink_frac", self.min_ink_frac, 0, 1)
        check_range("segmenter.rule_length", self.rule_length, 0.05, 1)
        check_range("segmenter.rule_chars", self.rule_chars, 1, 1000)
        if self.flatten and (self.flatten < 3 or self.flatten % 2 == 0):
            raise ConfigError("segmenter.flatten", f"{self.flatten} must be 0 or odd and >= 3")
        check_range("segmenter.window", self.window, 1, 1000)
        check_range("segmenter.threshold", self.threshold, 0, 1)
        if self.split_prominence is not None:
            check_range("segmenter.split_prominence", self.split_prominence, 0.001, 1)
        check_range("segmenter.split_depth", self.split_depth, 0, 1)
        check_range("segmenter.padding", self.padding, 0, 1000)
        check_range("segmenter.padding_x", self.padding_x, 0, 1000)
        check_range("segmenter.min_line_height", self.min_line_height, 1, 10000)
        check_range("segmenter.merge_fragments", self.merge_fragments, 0, 1)
        check_range("segmenter.core_band", self.core_band, 0, 1)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> SegmenterConfig:
        """Build from a (Hydra) mapping; unknown keys are an error."""
        return config_dataclass(cls, cfg, "segmenter")


@dataclass(frozen=True)
class LineBox:
    x: int
    y: int
    width: int
    height: int

    @property
    def x1(self) -> int:
        return self.x + self.width

    @property
    def y1(self) -> int:
        return self.y + self.height

    def crop(self, image: np.ndarray) -> np.ndarray:
        return image[self.y:self.y1, self.x:self.x1]

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def binarize(image: np.ndarray, cfg: SegmenterConfig) -> np.ndarray:
    """Ink mask (uint8 0/1); all zeros when the image holds no ink (too little contrast or ink)."""
    gray = to_gray(image)
    if cfg.denoise:
        gray = cv2.medianBlur(gray, 3)
    if cfg.flatten:
        ink = _ink_above_paper(gray, cfg)
    elif cfg.binarize == "otsu":
        _, ink = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    else:
        ink = cv2.adaptiveThreshold(gray, 1, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY_INV,
                                    cfg.adaptive_block, cfg.adaptive_c)
    n_ink = int(ink.sum())
    if n_ink < cfg.min_ink_frac * ink.size or n_ink == ink.size:
        return np.zeros_like(ink)
    # Otsu always splits, even a blank sheet's noise; real ink is much darker than the paper.
    if float(gray[ink == 0].mean()) - float(gray[ink == 1].mean()) < cfg.min_contrast:
        return np.zeros_like(ink)
    if cfg.remove_rules:
        ink = _remove_rules(ink, cfg.rule_length, cfg.rule_chars)
    return ink


def _ink_above_paper(gray: np.ndarray, cfg: SegmenterConfig) -> np.ndarray:
    """Threshold how much darker each pixel is than the paper around it (a grey closing removes strokes
    narrower than ``cfg.flatten``). With a few words in a big box, Otsu alone splits the paper's noise, so
    the threshold is at least the paper's noise level (median + 4 robust SDs) above it."""
    paper = cv2.morphologyEx(gray, cv2.MORPH_CLOSE, np.ones((cfg.flatten, cfg.flatten), np.uint8))
    dark = cv2.subtract(paper, gray)
    if cfg.binarize == "adaptive":
        return cv2.adaptiveThreshold(255 - dark, 1, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY_INV,
                                     cfg.adaptive_block, cfg.adaptive_c)
    otsu, _ = cv2.threshold(dark, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    median = float(np.median(dark))
    noise = 1.4826 * float(np.median(np.abs(dark.astype(np.float32) - median)))
    return (dark > max(float(otsu), median + 4.0 * noise + 1.0)).astype(np.uint8)


def _remove_rules(ink: np.ndarray, rule_length: float, rule_chars: float) -> np.ndarray:
    """Drop long straight runs of ink (frames, ruled lines): longer than ``rule_length`` of the image or
    than ``rule_chars`` median character heights, whichever is shorter (on a whole page, a box frame is
    short next to the page but long next to the writing)."""
    h, w = ink.shape
    _, _, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    heights = stats[1:, cv2.CC_STAT_HEIGHT][stats[1:, cv2.CC_STAT_AREA] >= 10]
    char_h = float(np.median(heights)) if heights.size else float(max(h, w))
    along_x = int(min(w * rule_length, rule_chars * char_h))
    along_y = int(min(h * rule_length, rule_chars * char_h))
    horizontal = cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((1, max(15, along_x)), np.uint8))
    vertical = cv2.morphologyEx(ink, cv2.MORPH_OPEN, np.ones((max(15, along_y), 1), np.uint8))
    rules = cv2.dilate(horizontal | vertical, np.ones((3, 3), np.uint8))
    return ink & (1 - rules)


def line_runs(profile: np.ndarray, cfg: SegmenterConfig) -> list[tuple[int, int]]:
    """(start, end) row ranges of text lines in a smoothed row profile (end exclusive)."""
    peak = float(profile.max()) if profile.size else 0.0
    if peak <= 0:
        return []
    above = np.concatenate([[False], profile > cfg.threshold * peak, [False]])
    edges = np.flatnonzero(np.diff(above.astype(np.int8)))
    runs = list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))
    if cfg.split_prominence is not None:
        runs = [part for run in runs for part in _split_run(profile, run, cfg.split_prominence * peak,
                                                             cfg.split_depth, cfg.min_line_height)]
    runs = [(a, b) for a, b in runs if b - a >= cfg.min_line_height]
    if cfg.merge_fragments > 0 and len(runs) > 1:
        runs = _merge_fragments(profile, runs, cfg.merge_fragments)
    return runs


def _split_run(profile: np.ndarray, run: tuple[int, int], prominence: float, depth: float,
               min_height: int) -> list[tuple[int, int]]:
    a, b = run
    peaks, _ = find_peaks(np.concatenate([[0.0], profile[a:b], [0.0]]), prominence=prominence,
                          distance=max(1, min_height))
    peaks = list(peaks - 1 + a)
    cuts = []
    while len(peaks) >= 2:
        p, q = peaks[0], peaks[1]
        cut = int(p + np.argmin(profile[p:q]))
        if profile[cut] <= depth * min(profile[p], profile[q]):
            cuts.append(cut)
            peaks.pop(0)
        else:  # one line: keep the higher peak as its representative
            peaks.pop(0 if profile[p] < profile[q] else 1)
    bounds = [a, *cuts, b]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _merge_fragments(profile: np.ndarray, runs: list[tuple[int, int]], frac: float) -> list[tuple[int, int]]:
    runs = list(runs)
    while len(runs) > 1:
        mass = np.array([profile[a:b].sum() for a, b in runs])
        height = np.array([b - a for a, b in runs])
        gaps = np.diff(np.array(runs).ravel())[1::2]
        nearest = np.minimum(np.concatenate([[np.inf], gaps]), np.concatenate([gaps, [np.inf]]))
        # A fragment is little ink, low, and almost touching a line; a short word on its own line is
        # separated from its neighbours by a real gap.
        small = ((mass < frac * np.median(mass)) & (height < 0.6 * np.median(height))
                 & (nearest < 0.25 * np.median(height)))
        if not small.any():
            break
        i = int(np.flatnonzero(small)[np.argmin(mass[small])])
        gap_above = runs[i][0] - runs[i - 1][1] if i > 0 else np.inf
        gap_below = runs[i + 1][0] - runs[i][1] if i + 1 < len(runs) else np.inf
        j = i - 1 if gap_above <= gap_below else i + 1
        lo, hi = min(i, j), max(i, j)
        runs[lo:hi + 1] = [(runs[lo][0], runs[hi][1])]
    return runs


def segment_lines(image: np.ndarray, cfg: SegmenterConfig | None = None) -> list[LineBox]:
    """Text line boxes, top to bottom, in the image's pixel coordinates; [] for a blank image."""
    cfg = cfg or SegmenterConfig()
    ink = binarize(image, cfg)
    if not ink.any():
        return []
    h, w = ink.shape
    profile = uniform_filter1d(ink.sum(axis=1).astype(np.float64), size=cfg.window, mode="constant")
    boxes = []
    for start, end in line_runs(profile, cfg):
        y0, y1 = max(0, start - cfg.padding), min(h, end + cfg.padding)
        x0, x1 = 0, w
        if cfg.trim_columns:
            band = profile[start:end]
            core = start + np.flatnonzero(band >= cfg.core_band * band.max())
            cols = np.flatnonzero(ink[core.min():core.max() + 1].any(axis=0))
            if cols.size == 0:
                continue
            x0, x1 = max(0, int(cols[0]) - cfg.padding_x), min(w, int(cols[-1]) + 1 + cfg.padding_x)
        boxes.append(LineBox(x0, y0, x1 - x0, y1 - y0))
    return boxes
