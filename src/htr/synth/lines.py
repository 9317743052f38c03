"""Render one line of text as synthetic handwriting (grey ink on paper), with augmentation.

The work is split in three steps so that pages (:mod:`htr.synth.pages`) can reuse the first two:

1. :func:`sample_style` draws a writer's hand (:class:`HandStyle`: size, slant, stroke, jitter, ink)
   from an :class:`AugmentConfig`;
2. :func:`render_ink` draws the text with that hand as an ink-coverage mask (0 = paper, 255 = ink),
   with per-word or per-character jitter, slant, rotation and elastic distortion;
3. :func:`render_line` crops the mask, lays it on paper and degrades it (noise, blur, JPEG).

All randomness comes from the ``numpy.random.Generator`` passed in, so a seed reproduces an image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from htr.synth.fonts import Font
from inkbase.errors import ConfigError, check_range, config_dataclass

Range = tuple[float, float]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation ranges. Every ``*_prob`` is the chance a line gets that effect (0 switches it off);
    ranges are ``(low, high)`` sampled uniformly. Lengths are in pixels unless said otherwise; ``em``
    means a fraction of the font size."""

    font_size: Range = (30.0, 64.0)  # em size in px; ink x-height is roughly 0.4-0.5 of it
    char_mode_prob: float = 0.6  # per-character jitter (else per word: keeps cursive joins intact)
    baseline_jitter: Range = (0.0, 0.05)  # em, per character / word (std dev)
    size_jitter: Range = (0.0, 0.10)  # relative std dev of each character's / word's size
    spacing_jitter: Range = (0.0, 0.05)  # em, std dev of extra space after each character
    word_spacing: Range = (1.0, 1.8)  # multiple of the font's space width
    slant_prob: float = 0.8
    slant: Range = (-0.3, 0.4)  # horizontal shear per unit height; > 0 leans right
    rotation_prob: float = 0.5
    rotation: Range = (-2.0, 2.0)  # degrees
    stroke_prob: float = 0.5
    stroke: Range = (-1.0, 2.0)  # dilate (> 0) or erode (< 0) the ink by this many px (rounded)
    stroke_vary_prob: float = 0.0
    stroke_vary: Range = (1.0, 2.0)  # px: the pen's width swells and thins along the line by up to this
    letter_spacing_prob: float = 0.0
    letter_spacing: Range = (-0.06, 0.12)  # em added after every character: tight (< 0) or loose writing
    baseline_drift_prob: float = 0.0
    baseline_drift: Range = (0.02, 0.12)  # em, amplitude of a slow wave of the baseline along the line
    elastic_prob: float = 0.4
    elastic_alpha: Range = (0.01, 0.05)  # em, std dev of the smooth displacement field
    ink: Range = (0.0, 110.0)  # grey level of the ink (0 = black)
    ink_fade_prob: float = 0.4
    ink_fade: Range = (0.55, 1.0)  # lowest ink opacity along the line (pen pressure, dry ink)
    paper: Range = (195.0, 255.0)  # grey level of the paper
    gradient_prob: float = 0.4
    gradient: Range = (0.0, 40.0)  # grey levels of a linear illumination ramp across the image
    texture_prob: float = 0.5
    texture: Range = (0.0, 8.0)  # std dev of low-frequency paper blotches, grey levels
    ruled_prob: float = 0.1  # a printed ruled line under the writing
    bleed_prob: float = 0.0
    bleed: Range = (0.6, 1.6)  # px, gaussian spread of ink soaking into the paper around strokes
    invert_prob: float = 0.0  # a light-on-dark image (negative scans; readers must normalise polarity)
    underline_prob: float = 0.04  # the writer underlines a stretch of the line
    noise_prob: float = 0.5
    noise: Range = (0.0, 12.0)  # std dev of gaussian pixel noise, grey levels
    blur_prob: float = 0.4
    blur: Range = (0.3, 1.2)  # gaussian sigma, px
    jpeg_prob: float = 0.3
    jpeg_quality: Range = (30.0, 90.0)
    margin: Range = (2.0, 14.0)  # px of paper left around the ink on each side

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            key = f"augment.{f.name}"
            if f.name.endswith("_prob"):
                check_range(key, value, 0.0, 1.0)
                continue
            if isinstance(value, list):
                value = tuple(value)
                object.__setattr__(self, f.name, value)
            if not (isinstance(value, tuple) and len(value) == 2 and value[0] <= value[1]):
                raise ConfigError(key, f"{value!r} must be a [low, high] pair with low <= high")
            lo, hi = _LIMITS[f.name]
            check_range(key, value[0], lo, hi)
            check_range(key, value[1], lo, hi)
        if self.ink[1] >= self.paper[0]:
            raise ConfigError("augment.ink", f"ink {self.ink} must be darker than paper {self.paper}")

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> AugmentConfig:
        """Build from a (Hydra) mapping; unknown keys are an error."""
        return config_dataclass(cls, cfg, "augment")

    @classmethod
    def clean(cls, font_size: float = 48.0) -> AugmentConfig:
        """No augmentation: one size, no jitter, black ink on white paper, fixed margins."""
        off = {f.name: 0.0 for f in dataclasses.fields(cls) if f.name.endswith("_prob")}
        zero = (0.0, 0.0)
        return cls(**off, font_size=(font_size, font_size), baseline_jitter=zero, size_jitter=zero,
                   spacing_jitter=zero, word_spacing=(1.0, 1.0), ink=zero, paper=(255.0, 255.0),
                   margin=(8.0, 8.0))


_LIMITS: dict[str, tuple[float, float]] = {
    "font_size": (6, 400), "baseline_jitter": (0, 0.5), "size_jitter": (0, 0.5), "spacing_jitter": (0, 0.5),
    "word_spacing": (0.2, 5), "slant": (-1, 1), "rotation": (-45, 45), "stroke": (-3, 6),
    "elastic_alpha": (0, 0.5), "stroke_vary": (0, 6), "letter_spacing": (-0.3, 0.5),
    "baseline_drift": (0, 0.5), "bleed": (0, 5), "ink": (0, 254), "ink_fade": (0, 1), "paper": (1, 255), "gradient": (0, 255),
    "texture": (0, 100), "noise": (0, 100), "blur": (0, 10), "jpeg_quality": (1, 100), "margin": (0, 500),
}


@dataclass(frozen=True)
class HandStyle:
    """One writer's hand: everything about the ink that stays fixed across a line (or a script)."""

    font: Font
    size: float
    char_mode: bool
    baseline_jitter: float
    size_jitter: float
    spacing_jitter: float
    word_spacing: float
    slant: float
    rotation: float
    stroke: int
    elastic_alpha: float
    ink: float
    ink_fade: float
    stroke_vary: float = 0.0
    letter_spacing: float = 0.0
    baseline_drift: float = 0.0


@dataclass
class InkLine:
    """An ink mask (uint8, 255 = full ink) and the y of the (warped) baseline at the mask's left and
    right edges."""

    mask: np.ndarray
    baseline: tuple[float, float]
    size: float


def _uniform(rng: np.random.Generator, r: Range) -> float:
    return float(r[0]) if r[0] == r[1] else float(rng.uniform(r[0], r[1]))


def _maybe(rng: np.random.Generator, prob: float, r: Range, off: float) -> float:
    return _uniform(rng, r) if prob > 0 and rng.random() < prob else off


def sample_style(font: Font, rng: np.random.Generator, augment: AugmentConfig | None = None) -> HandStyle:
    """Draw one hand from the augmentation ranges (``None``: the clean, unaugmented hand)."""
    a = augment or AugmentConfig.clean()
    return HandStyle(
        font=font,
        size=_uniform(rng, a.font_size),
        char_mode=bool(a.char_mode_prob > 0 and rng.random() < a.char_mode_prob),
        baseline_jitter=_uniform(rng, a.baseline_jitter),
        size_jitter=_uniform(rng, a.size_jitter),
        spacing_jitter=_uniform(rng, a.spacing_jitter),
        word_spacing=_uniform(rng, a.word_spacing),
        slant=_maybe(rng, a.slant_prob, a.slant, 0.0),
        rotation=_maybe(rng, a.rotation_prob, a.rotation, 0.0),
        stroke=int(round(_maybe(rng, a.stroke_prob, a.stroke, 0.0))),
        elastic_alpha=_maybe(rng, a.elastic_prob, a.elastic_alpha, 0.0),
        ink=_uniform(rng, a.ink),
        ink_fade=_maybe(rng, a.ink_fade_prob, a.ink_fade, 1.0),
        stroke_vary=_maybe(rng, a.stroke_vary_prob, a.stroke_vary, 0.0),
        letter_spacing=_maybe(rng, a.letter_spacing_prob, a.letter_spacing, 0.0),
        baseline_drift=_maybe(rng, a.baseline_drift_prob, a.baseline_drift, 0.0),
    )


def vary_style(style: HandStyle, rng: np.random.Generator, amount: float = 1.0) -> HandStyle:
    """The same writer on another line: small changes of size, slant, rotation and ink."""
    return dataclasses.replace(
        style,
        size=style.size * float(1 + rng.normal(0, 0.03 * amount)),
        slant=style.slant + float(rng.normal(0, 0.03 * amount)),
        rotation=style.rotation + float(rng.normal(0, 0.4 * amount)),
        ink=float(np.clip(style.ink + rng.normal(0, 6 * amount), 0, 254)),
    )


@lru_cache(maxsize=2048)
def pil_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def render_ink(text: str, style: HandStyle, rng: np.random.Generator, underline: bool = False) -> InkLine:
    """Draw ``text`` as an ink mask with the hand's jitter and geometric distortions applied."""
    size = max(6, int(round(style.size)))
    base_font = pil_font(style.font.path, size)
    ascent, descent = base_font.getmetrics()
    pad = int(0.6 * size) + 4
    space = base_font.getlength(" ") * style.word_spacing
    pieces = _layout(text, style, rng, base_font, size, space)
    width = int(max((x + adv for x, _, _, _, adv in pieces), default=size)) + 2 * pad
    height = ascent + descent + 2 * pad
    baseline = pad + ascent
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for x, dy, piece, font, _ in pieces:
        draw.text((pad + x, baseline + dy), piece, font=font, fill=255, anchor="ls")
    mask = np.asarray(canvas).copy()
    if underline and pieces:
        _draw_underline(mask, pieces, pad, baseline, size, rng)
    mask = _stroke(mask, style.stroke)
    if style.stroke_vary > 0:
        mask = _vary_stroke(mask, style.stroke_vary, rng, size)
    mask, ends = _warp(mask, baseline, style, rng, size)
    return InkLine(mask=mask, baseline=ends, size=size)


def _layout(text: str, style: HandStyle, rng: np.random.Generator, base_font: ImageFont.FreeTypeFont,
            size: int, space: float) -> list[tuple[float, float, str, ImageFont.FreeTypeFont, float]]:
    """(x, baseline offset, text piece, font, advance) for each character or word."""
    jitter = style.size_jitter > 0 or style.baseline_jitter > 0 or style.spacing_jitter > 0 or style.letter_spacing
    if not jitter and style.word_spacing == 1.0:
        return [(0.0, 0.0, text, base_font, base_font.getlength(text))] if text.strip() else []
    out = []
    x = 0.0
    words = text.split(" ")
    for w_index, word in enumerate(words):
        if w_index:
            x += space
        if not word:
            continue
        word_dy = float(rng.normal(0, style.baseline_jitter * size * 0.5))
        units = list(word) if style.char_mode or style.letter_spacing else [word]
        for unit in units:
            scale = float(np.clip(1 + rng.normal(0, style.size_jitter), 0.7, 1.4))
            font = pil_font(style.font.path, max(6, int(round(size * scale))))
            dy = word_dy + float(rng.normal(0, style.baseline_jitter * size * (1.0 if style.char_mode else 0.5)))
            adv = font.getlength(unit)
            out.append((x, dy, unit, font, adv))
            if style.char_mode or style.letter_spacing:
                adv += style.letter_spacing * size + float(rng.normal(0, style.spacing_jitter * size))
            x += adv
    return out


def _draw_underline(mask: np.ndarray, pieces: list, pad: int, baseline: int, size: int,
                    rng: np.random.Generator) -> None:
    i = int(rng.integers(0, len(pieces)))
    j = int(rng.integers(i, min(len(pieces), i + 12)))
    x0 = int(pad + pieces[i][0])
    x1 = int(pad + pieces[j][0] + pieces[j][4])
    y = baseline + int(0.22 * size)
    wobble = rng.normal(0, 0.02 * size, size=2)
    thickness = max(1, int(round(size / 24)))
    cv2.line(mask, (x0, int(y + wobble[0])), (x1, int(y + wobble[1])), 255, thickness, lineType=cv2.LINE_AA)


def _stroke(mask: np.ndarray, stroke: int) -> np.ndarray:
    if stroke > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (stroke + 1, stroke + 1))
        return cv2.dilate(mask, kernel)
    if stroke < 0:
        thinner = cv2.erode(mask, np.ones((2, 2), np.uint8), iterations=-stroke)
        # Thin fonts at small sizes vanish when eroded; keep the original stroke then.
        if int(thinner.sum()) > 0.45 * int(mask.sum()):
            return thinner
    return mask


def _vary_stroke(mask: np.ndarray, amount: float, rng: np.random.Generator, size: int) -> np.ndarray:
    """Pen pressure: the stroke swells (dilation) and thins (erosion) smoothly along the line."""
    r = max(1, int(round(amount)))
    thick = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (r + 1, r + 1)))
    thin = cv2.erode(mask, np.ones((2, 2), np.uint8))
    h, w = mask.shape
    knots = rng.uniform(-1.0, 1.0, max(2, int(w / max(8.0, 1.5 * size)) + 2)).astype(np.float32)
    weight = cv2.resize(knots[None, :], (w, 1), interpolation=cv2.INTER_CUBIC)
    out = np.where(weight > 0, mask + (thick.astype(np.float32) - mask) * weight,
                   mask + (mask.astype(np.float32) - thin) * weight)
    return np.clip(out, 0, 255).astype(np.uint8)


def _warp(mask: np.ndarray, baseline: float, style: HandStyle, rng: np.random.Generator,
          size: int) -> tuple[np.ndarray, tuple[float, float]]:
    """Shear (slant) about the baseline, rotate, then displace smoothly (elastic); the canvas grows to
    hold the result, and the baseline's y at the left and right edges is tracked."""
    h, w = mask.shape
    ends = (float(baseline), float(baseline))
    if style.slant or style.rotation:
        shear = np.array([[1.0, -style.slant, style.slant * baseline], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        rot = np.vstack([cv2.getRotationMatrix2D((w / 2, baseline), style.rotation, 1.0), [0, 0, 1]])
        m = rot @ shear
        corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], float) @ m.T
        x0, y0 = np.floor(corners[:, :2].min(0))
        x1, y1 = np.ceil(corners[:, :2].max(0))
        m[0, 2] -= x0
        m[1, 2] -= y0
        mask = cv2.warpAffine(mask, m[:2], (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR,
                              borderValue=0)
        (xa, ya), (xb, yb) = (m @ np.array([0.0, baseline, 1.0]))[:2], (m @ np.array([w, baseline, 1.0]))[:2]
        slope = (yb - ya) / max(1e-6, xb - xa)
        ends = (float(ya - slope * xa), float(ya + slope * (mask.shape[1] - xa)))
    if style.elastic_alpha > 0:
        h, w = mask.shape
        cell = max(8.0, 0.7 * size)
        gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
        sigma = style.elastic_alpha * size
        dx = cv2.resize(rng.normal(0, sigma, (gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        dy = cv2.resize(rng.normal(0, sigma, (gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        mask = cv2.remap(mask, gx + dx, gy + dy, interpolation=cv2.INTER_LINEAR, borderValue=0)
    if style.baseline_drift > 0:
        # The writer drifts off the line: a slow wave (one or two periods) moves the baseline up and down.
        h, w = mask.shape
        amp = style.baseline_drift * size
        periods, phase = rng.uniform(0.5, 2.0), rng.uniform(0, 2 * np.pi)
        drift = (amp * np.sin(phase + 2 * np.pi * periods * np.arange(w) / max(1, w))).astype(np.float32)
        pad = int(np.ceil(amp)) + 1
        mask = cv2.copyMakeBorder(mask, pad, pad, 0, 0, cv2.BORDER_CONSTANT, value=0)
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h + 2 * pad, dtype=np.float32))
        mask = cv2.remap(mask, gx, gy + drift[None, :], interpolation=cv2.INTER_LINEAR, borderValue=0)
        ends = (ends[0] + pad - float(drift[0]), ends[1] + pad - float(drift[-1]))
    return mask, ends


def ink_bbox(mask: np.ndarray, threshold: int = 24) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), exclusive ends, of the pixels above ``threshold``; None when there is no ink."""
    rows = np.flatnonzero((mask > threshold).any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero((mask > threshold).any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def paper(shape: tuple[int, int], rng: np.random.Generator, augment: AugmentConfig) -> np.ndarray:
    """A float32 paper background: a base grey with optional illumination ramp and blotches."""
    h, w = shape
    level = _uniform(rng, augment.paper)
    out = np.full((h, w), level, np.float32)
    if augment.gradient_prob > 0 and rng.random() < augment.gradient_prob:
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :] + \
            np.sin(angle) * np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
        out -= _uniform(rng, augment.gradient) * (ramp + 0.5)
    if augment.texture_prob > 0 and rng.random() < augment.texture_prob:
        coarse = rng.normal(0, _uniform(rng, augment.texture), (max(2, h // 24), max(2, w // 24)))
        out += cv2.resize(coarse.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return out


def degrade(img: np.ndarray, rng: np.random.Generator, augment: AugmentConfig) -> np.ndarray:
    """Gaussian noise, blur and JPEG artefacts on a float32 grey image; returns uint8."""
    if augment.noise_prob > 0 and rng.random() < augment.noise_prob:
        img = img + rng.normal(0, _uniform(rng, augment.noise), img.shape).astype(np.float32)
    if augment.blur_prob > 0 and rng.random() < augment.blur_prob:
        img = cv2.GaussianBlur(img, (0, 0), _uniform(rng, augment.blur))
    out = np.clip(img, 0, 255).astype(np.uint8)
    if augment.jpeg_prob > 0 and rng.random() < augment.jpeg_prob:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(_uniform(rng, augment.jpeg_quality))])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return out


def ink_on_paper(background: np.ndarray, mask: np.ndarray, ink: float, opacity: np.ndarray | float = 1.0) -> np.ndarray:
    """Lay ink of grey level ``ink`` over ``background`` with coverage ``mask`` (0..255)."""
    alpha = mask.astype(np.float32) * (np.float32(1 / 255) * opacity)
    return background + (np.float32(ink) - background) * alpha


def render_line(text: str, font: Font, rng: np.random.Generator, augment: AugmentConfig | None = None,
                style: HandStyle | None = None) -> Image.Image:
    """Render ``text`` in ``font`` as a handwritten line: mode "L", dark ink on light paper, cropped to
    the ink with a small margin.

    ``augment=None`` renders clean (one size, no jitter, black on white); pass ``AugmentConfig()`` for
    the default training augmentation. ``style`` fixes the hand (e.g. one writer across lines) instead
    of drawing it from ``augment``.
    """
    a = augment or AugmentConfig.clean()
    style = style or sample_style(font, rng, a)
    underline = a.underline_prob > 0 and rng.random() < a.underline_prob
    ink = render_ink(text, style, rng, underline=underline)
    box = ink_bbox(ink.mask)
    if box is None:
        side = int(ink.size)
        return Image.fromarray(np.full((side, side), int(_uniform(rng, a.paper)), np.uint8), mode="L")
    x0, y0, x1, y1 = box
    top, bottom, left, right = (int(round(_uniform(rng, a.margin))) for _ in range(4))
    big = max(top, bottom, left, right)
    padded = cv2.copyMakeBorder(ink.mask, big, big, big, big, cv2.BORDER_CONSTANT, value=0)
    mask = padded[big + y0 - top:big + y1 + bottom, big + x0 - left:big + x1 + right]
    h, w = mask.shape
    bg = paper((h, w), rng, a)
    if a.ruled_prob > 0 and rng.random() < a.ruled_prob:
        # A printed ruling under the writing, following the baseline's direction.
        (ya, yb), full_w = ink.baseline, ink.mask.shape[1]
        ys = [ya + (yb - ya) * x / full_w - y0 + top + 0.04 * ink.size for x in (x0 - left, x1 + right)]
        cv2.line(bg, (0, int(ys[0])), (w - 1, int(ys[1])), float(bg.mean() - rng.uniform(25, 70)), 1)
    opacity: np.ndarray | float = 1.0
    if style.ink_fade < 1.0:
        # Pen pressure: opacity drifts smoothly along the line between ink_fade and 1.
        knots = rng.uniform(style.ink_fade, 1.0, max(2, w // 80)).astype(np.float32)
        opacity = cv2.resize(knots[None, :], (w, h), interpolation=cv2.INTER_LINEAR)
    if a.bleed_prob > 0 and rng.random() < a.bleed_prob:
        # Ink soaking into the paper: a faint halo around the strokes, under the stroke itself.
        halo = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), _uniform(rng, a.bleed))
        mask = np.maximum(mask.astype(np.float32), np.minimum(255.0, 1.6 * halo) * 0.6)
    img = ink_on_paper(bg, mask, style.ink, opacity)
    out = degrade(img, rng, a)
    if a.invert_prob > 0 and rng.random() < a.invert_prob:
        out = 255 - out
    return Image.fromarray(out, mode="L")


@dataclass
class Paragraph:
    """Lines of ink stacked on one canvas: the combined mask, one mask per line (same size, for exact
    per-line truth under later warps) and each line's ink box (x0, y0, x1, y1; exclusive ends)."""

    mask: np.ndarray
    line_masks: list[np.ndarray]
    boxes: list[tuple[int, int, int, int]]


def render_paragraph(lines: list[str], style: HandStyle, rng: np.random.Generator, line_pitch: float,
                     margin: int = 20, vary: float = 1.0) -> Paragraph:
    """Write ``lines`` one under another, baselines ``line_pitch`` px apart (a pitch below ~1.2 font sizes
    makes descenders and ascenders of neighbouring lines touch). Each line varies the hand slightly."""
    inks = [render_ink(t, vary_style(style, rng, vary) if vary else style, rng) for t in lines]
    boxes = [ink_bbox(ink.mask) for ink in inks]
    top = max([ink.baseline[0] - b[1] for ink, b in zip(inks, boxes, strict=True) if b is not None], default=0.0)
    width = max([b[2] - b[0] for b in boxes if b is not None], default=1) + 2 * margin
    height = int(top + (len(lines) - 1) * line_pitch + max(
        [b[3] - ink.baseline[0] for ink, b in zip(inks, boxes, strict=True) if b is not None], default=1)) + 2 * margin
    line_masks, out_boxes = [], []
    for i, (ink, box) in enumerate(zip(inks, boxes, strict=True)):
        canvas = np.zeros((height, width), np.uint8)
        if box is not None:
            x0, y0, x1, y1 = box
            dy = int(round(margin + top + i * line_pitch - ink.baseline[0] + y0))
            canvas[dy:dy + y1 - y0, margin:margin + x1 - x0] = ink.mask[y0:y1, x0:x1]
        line_masks.append(canvas)
        out_boxes.append(ink_bbox(canvas))
    mask = np.maximum.reduce(line_masks) if line_masks else np.zeros((2 * margin, 2 * margin), np.uint8)
    return Paragraph(mask=mask, line_masks=line_masks, boxes=out_boxes)
