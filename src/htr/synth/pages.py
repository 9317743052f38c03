"""Synthetic exam scripts: a printed exam layout, handwriting in its boxes, and scanner artefacts.

:func:`layout_exam` turns an exam's questions (id, text, points) into pages (A4 at 150 dpi by default): a header with the exam title
and NAME / ID / CLASS boxes, then each question's printed text and an answer box sized for about six
handwritten lines, with four filled corner squares on every page for registration. Its region
template uses Wong's format (``{"0": [{"x", "y", "width", "height", "label"}, ...]}``).

:func:`render_exam` writes one student's answers into the boxes with one hand (one font, size and
slant for the whole script, small changes per line), then scans each page: slight rotation, shift and
scale, uneven illumination, noise, blur and JPEG. The truth keeps, per region, the written text and
each handwritten line's box in clean-layout coordinates, and per page the scan's affine matrix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from htr.regions import IDENTITY_LABELS
from htr.synth.fonts import Font
from htr.synth.lines import (
    AugmentConfig,
    HandStyle,
    ink_bbox,
    ink_on_paper,
    pil_font,
    render_ink,
    sample_style,
    vary_style,
)
from htr.synth.text import to_charset
from inkbase.errors import ConfigError, check_range


def printed_font_path(bold: bool = False) -> str:
    """DejaVu Sans from matplotlib's data folder: a dependency already, so present wherever we run."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name)


@dataclass(frozen=True)
class PageConfig:
    width: int = 1240  # A4 at 150 dpi
    height: int = 1754
    margin: int = 115  # printed content stays this far from the page edges
    mark_size: int = 30  # registration squares, px
    mark_inset: int = 72  # from the page edges: a +-2 deg, 15 px scan moves corners up to ~60 px
    title_size: int = 30  # printed font sizes, px
    text_size: int = 21
    box_lines: int = 6  # handwritten lines an answer box is sized for
    line_pitch: int = 52  # px between handwritten baselines in a box
    box_padding: int = 12  # px inside the frame before writing starts
    identity_height: int = 70
    gap: int = 26  # vertical space between blocks, px

    def __post_init__(self) -> None:
        check_range("page.width", self.width, 300, 20000)
        check_range("page.height", self.height, 300, 20000)
        check_range("page.margin", self.margin, self.mark_inset + self.mark_size, min(self.width, self.height) / 4)
        check_range("page.box_lines", self.box_lines, 1, 50)
        check_range("page.line_pitch", self.line_pitch, 10, 500)


@dataclass(frozen=True)
class ScanConfig:
    """Scanner / phone-scan artefacts applied per page. Ranges are ``(low, high)``; probabilities gate
    the optional effects. ``ScanConfig.none()`` leaves pages untouched."""

    rotation: tuple[float, float] = (-2.0, 2.0)  # degrees
    shift: tuple[float, float] = (-15.0, 15.0)  # px, each axis
    scale: tuple[float, float] = (0.98, 1.02)
    background: float = 235.0  # grey the scanner shows outside the moved page
    illumination_prob: float = 0.7
    illumination: tuple[float, float] = (10.0, 45.0)  # grey levels of light falloff across the page
    noise_prob: float = 0.7
    noise: tuple[float, float] = (2.0, 8.0)
    blur_prob: float = 0.5
    blur: tuple[float, float] = (0.3, 1.0)
    jpeg_prob: float = 0.6
    jpeg_quality: tuple[float, float] = (45.0, 90.0)

    def __post_init__(self) -> None:
        for name in ("illumination_prob", "noise_prob", "blur_prob", "jpeg_prob"):
            check_range(f"scan.{name}", getattr(self, name), 0, 1)
        for name in ("rotation", "shift", "scale", "illumination", "noise", "blur", "jpeg_quality"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ConfigError(f"scan.{name}", f"[{lo}, {hi}]: low must not exceed high")
        check_range("scan.rotation", max(abs(v) for v in self.rotation), 0, 15)
        check_range("scan.scale", min(self.scale), 0.5, 2.0)

    @classmethod
    def none(cls) -> ScanConfig:
        return cls(rotation=(0.0, 0.0), shift=(0.0, 0.0), scale=(1.0, 1.0), illumination_prob=0.0, noise_prob=0.0,
                   blur_prob=0.0, jpeg_prob=0.0)


@dataclass(frozen=True)
class Region:
    x: int
    y: int
    width: int
    height: int
    label: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PrintedText:
    x: int
    y: int
    text: str
    size: int
    bold: bool = False


@dataclass
class PageLayout:
    index: int
    regions: list[Region] = field(default_factory=list)
    texts: list[PrintedText] = field(default_factory=list)
    frames: list[tuple[int, int, int, int]] = field(default_factory=list)  # (x, y, w, h) printed boxes
    marks: list[tuple[int, int, int, int]] = field(default_factory=list)  # (x, y, w, h) filled squares


@dataclass
class ExamLayout:
    exam_id: str
    config: PageConfig
    pages: list[PageLayout]

    def template(self) -> dict[str, list[dict[str, Any]]]:
        """Region template in Wong's format, keyed by page index."""
        return {str(p.index): [r.as_dict() for r in p.regions] for p in self.pages}

    def region(self, label: str) -> tuple[int, Region]:
        for page in self.pages:
            for r in page.regions:
                if r.label == label:
                    return page.index, r
        raise KeyError(label)


@lru_cache(maxsize=32)
def _printed(size: int, bold: bool) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(printed_font_path(bold), size)


def _wrap_printed(text: str, size: int, width: int, bold: bool = False) -> list[str]:
    font = _printed(size, bold)
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


@dataclass(frozen=True)
class QuestionBox:
    """What the page shows of one question: its id, printed text and points; the answer box below it is
    ``box_lines`` ruled lines high (``PageConfig.box_lines`` when not given)."""

    id: str
    text: str
    max_points: float
    box_lines: int | None = None


def layout_exam(exam_id: str, questions: Sequence[QuestionBox], cfg: PageConfig | None = None) -> ExamLayout:
    """Place the header, identity boxes, questions and answer boxes on as many pages as needed."""
    cfg = cfg or PageConfig()
    content_w = cfg.width - 2 * cfg.margin
    line_h = int(cfg.text_size * 1.35)
    box_h = cfg.box_lines * cfg.line_pitch + 2 * cfg.box_padding
    pages: list[PageLayout] = []

    def new_page() -> tuple[PageLayout, int]:
        page = PageLayout(index=len(pages))
        s, i = cfg.mark_size, cfg.mark_inset
        page.marks = [(i, i, s, s), (cfg.width - i - s, i, s, s), (i, cfg.height - i - s, s, s),
                      (cfg.width - i - s, cfg.height - i - s, s, s)]
        pages.append(page)
        y = cfg.margin
        if page.index > 0:
            page.texts.append(PrintedText(cfg.margin, y, f"{exam_id} (continued)", cfg.text_size, bold=True))
            y += line_h + cfg.gap
        return page, y

    page, y = new_page()
    page.texts.append(PrintedText(cfg.margin, y, f"Exam: {exam_id}", cfg.title_size, bold=True))
    y += int(cfg.title_size * 1.6)
    # Identity boxes on one row: NAME takes half the width, ID and CLASS share the rest.
    widths = {"NAME": content_w // 2 - cfg.gap, "ID": content_w // 4}
    widths["CLASS"] = content_w - widths["NAME"] - widths["ID"] - 2 * cfg.gap
    captions = {"NAME": "Name", "ID": "Student ID", "CLASS": "Class"}
    x = cfg.margin
    for label in IDENTITY_LABELS:
        page.texts.append(PrintedText(x, y, captions[label], cfg.text_size))
        frame = (x, y + line_h, widths[label], cfg.identity_height)
        page.frames.append(frame)
        page.regions.append(_inner(frame, label))
        x += widths[label] + cfg.gap
    y += line_h + cfg.identity_height + 2 * cfg.gap
    bottom = cfg.height - cfg.margin - line_h  # keep the footer line free

    for q in questions:
        points = f"{q.max_points:g} point{'s' if q.max_points != 1 else ''}"
        header = f"{q.id} ({points})"
        body = _wrap_printed(q.text, cfg.text_size, content_w)
        q_box_h = box_h if q.box_lines is None else q.box_lines * cfg.line_pitch + 2 * cfg.box_padding
        block_h = line_h * (1 + len(body)) + cfg.gap // 2 + q_box_h
        if y + block_h > bottom:
            if block_h > bottom - cfg.margin:
                raise ConfigError("page.box_lines", f"question {q.id} does not fit on one page")
            page, y = new_page()
        page.texts.append(PrintedText(cfg.margin, y, header, cfg.text_size, bold=True))
        y += line_h
        for line in body:
            page.texts.append(PrintedText(cfg.margin, y, line, cfg.text_size))
            y += line_h
        y += cfg.gap // 2
        frame = (cfg.margin, y, content_w, q_box_h)
        page.frames.append(frame)
        page.regions.append(_inner(frame, q.id))
        y += q_box_h + cfg.gap
    for p in pages:
        p.texts.append(PrintedText(cfg.width // 2 - 50, cfg.height - cfg.margin, f"Page {p.index + 1} / {len(pages)}",
                                   cfg.text_size))
    return ExamLayout(exam_id=exam_id, config=cfg, pages=pages)


def _inner(frame: tuple[int, int, int, int], label: str, inset: int = 3) -> Region:
    """The writable inside of a printed frame (the frame's own line is left out)."""
    x, y, w, h = frame
    return Region(x + inset, y + inset, w - 2 * inset, h - 2 * inset, label)


def printed_mask(layout: ExamLayout, page_index: int) -> np.ndarray:
    """Coverage mask (uint8, 255 = printed ink) of one page's printed content and marks."""
    cfg = layout.config
    page = layout.pages[page_index]
    canvas = Image.new("L", (cfg.width, cfg.height), 0)
    draw = ImageDraw.Draw(canvas)
    for t in page.texts:
        draw.text((t.x, t.y), t.text, font=_printed(t.size, t.bold), fill=255)
    for x, y, w, h in page.frames:
        draw.rectangle((x, y, x + w - 1, y + h - 1), outline=255, width=2)
    for x, y, w, h in page.marks:
        draw.rectangle((x, y, x + w - 1, y + h - 1), fill=255)
    return np.asarray(canvas)


def render_blank(layout: ExamLayout, page_index: int, paper_level: float = 255.0) -> np.ndarray:
    """The printed page without handwriting (uint8 grey): the reference for page alignment."""
    background = np.full((layout.config.height, layout.config.width), paper_level, np.float32)
    return np.clip(ink_on_paper(background, printed_mask(layout, page_index), 15.0), 0, 255).astype(np.uint8)


@dataclass
class RenderedExam:
    pages: list[Image.Image]
    truth: dict[str, Any]


def writer_style(font: Font, rng: np.random.Generator, line_pitch: int, augment: AugmentConfig | None = None) -> HandStyle:
    """One writer's hand for a whole script, sized to the box's line pitch (x-height about a third)."""
    augment = augment or AugmentConfig()
    style = sample_style(font, rng, augment)
    return dataclasses.replace(style, size=float(line_pitch * rng.uniform(0.62, 0.8)),
                               rotation=float(rng.uniform(-0.8, 0.8)), ink=float(rng.uniform(10, 90)))


def _text_width(text: str, style: HandStyle) -> float:
    font = pil_font(style.font.path, max(6, int(round(style.size))))
    spaces = text.count(" ")
    return font.getlength(text) + spaces * font.getlength(" ") * (style.word_spacing - 1) + abs(style.slant) * style.size


def wrap_handwriting(text: str, style: HandStyle, width: float) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and _text_width(f"{lines[-1]} {word}", style) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def write_in_box(text: str, region: Region, style: HandStyle, rng: np.random.Generator, line_pitch: int,
                 padding: int, mask: np.ndarray) -> dict[str, Any]:
    """Write ``text`` into ``region`` of the page-sized ink ``mask`` (in place): wrap to the box width,
    shrink the hand (and pitch) until the lines fit the height, cut what still does not fit.
    Returns the truth for the region: written text, lines with their ink boxes, whether text was cut."""
    inner_w = region.width - 2 * padding
    inner_h = region.height - 2 * padding
    words = text.split()
    pitch, hand = float(line_pitch), style
    lines = wrap_handwriting(text, hand, inner_w * 0.97)
    while len(lines) * pitch > inner_h and hand.size > 0.55 * style.size:
        hand = dataclasses.replace(hand, size=hand.size * 0.9)
        pitch *= 0.9
        lines = wrap_handwriting(text, hand, inner_w * 0.97)
    capacity = max(1, int(inner_h // pitch))
    truncated = len(lines) > capacity
    lines = lines[:capacity]
    out_lines = []
    for i, line in enumerate(lines):
        ink = render_ink(line, vary_style(hand, rng, 0.5), rng)
        box = ink_bbox(ink.mask)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        piece = ink.mask[y0:y1, x0:x1]
        baseline = ink.baseline[0] - y0
        if piece.shape[1] > inner_w:  # the estimate was short: squeeze the line into the box
            piece = cv2.resize(piece, (inner_w, piece.shape[0]), interpolation=cv2.INTER_AREA)
        left = region.x + padding + int(rng.integers(0, max(1, min(20, inner_w - piece.shape[1]) + 1)))
        top = int(round(region.y + padding + (i + 0.78) * pitch - baseline))
        top = int(np.clip(top, region.y, region.y + region.height - piece.shape[0]))
        h, w = piece.shape
        h = min(h, region.y + region.height - top)
        target = mask[top:top + h, left:left + w]
        np.maximum(target, piece[:h], out=target)
        out_lines.append({"text": line, "box": [left, top, w, h]})
    written = " ".join(line["text"] for line in out_lines)
    return {"text": written, "lines": out_lines, "truncated": truncated or len(written.split()) < len(words)}


def scan_page(image: np.ndarray, rng: np.random.Generator, scan: ScanConfig) -> tuple[np.ndarray, np.ndarray]:
    """Move the page as a scanner would (rotation, shift, scale about the centre) and degrade it.
    Returns the scan (uint8) and the 2x3 affine matrix from clean-layout to scan coordinates."""
    h, w = image.shape
    angle = float(rng.uniform(*scan.rotation))
    scale = float(rng.uniform(*scan.scale))
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[:, 2] += rng.uniform(*scan.shift, size=2)
    out = cv2.warpAffine(image.astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=scan.background)
    if rng.random() < scan.illumination_prob:
        # Light falls off from a random point (a lamp or the scanner lid), smoothly across the page.
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        dist = np.hypot(xx - cx, yy - cy) / np.hypot(w, h)
        out -= float(rng.uniform(*scan.illumination)) * dist
    if rng.random() < scan.noise_prob:
        out += rng.normal(0, rng.uniform(*scan.noise), out.shape).astype(np.float32)
    if rng.random() < scan.blur_prob:
        out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(*scan.blur)))
    result = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < scan.jpeg_prob:
        ok, buf = cv2.imencode(".jpg", result, [cv2.IMWRITE_JPEG_QUALITY, int(rng.uniform(*scan.jpeg_quality))])
        if ok:
            result = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return result, m


def render_exam(layout: ExamLayout, student: dict[str, str], answers: dict[str, str], font: Font,
                rng: np.random.Generator, scan: ScanConfig | None = None,
                augment: AugmentConfig | None = None) -> RenderedExam:
    """Fill in one student's script. ``student`` has keys ``name``, ``id``, ``class``; ``answers`` maps
    question ids to text (missing or empty: the box stays blank). ``augment`` supplies the writer's
    hand ranges (stroke, slant, jitter); paper and scan effects come from the page and ``scan``."""
    scan = scan or ScanConfig()
    missing = [k for k in ("name", "id", "class") if k not in student]
    if missing:
        raise ConfigError("student", f"missing key(s) {', '.join(missing)}")
    cfg = layout.config
    style = writer_style(font, rng, cfg.line_pitch, augment)
    values = {"NAME": student["name"], "ID": student["id"], "CLASS": student["class"], **answers}
    paper_level = float(rng.uniform(232, 252))
    pages, regions, page_truth = [], {}, []
    for page in layout.pages:
        hand = np.zeros((cfg.height, cfg.width), np.uint8)
        for region in page.regions:
            text = to_charset(str(values.get(region.label) or ""))
            if font.uppercase_only:
                text = text.upper()
            text = "".join(ch for ch in text if ch not in font.missing(text))
            truth = {"page": page.index, "text": "", "lines": [], "truncated": False}
            if text.strip():
                single = region.label in IDENTITY_LABELS
                pitch = region.height - 2 * cfg.box_padding if single else cfg.line_pitch
                truth.update(write_in_box(text, region, style, rng, min(pitch, int(cfg.line_pitch * 1.1)),
                                          cfg.box_padding, hand))
                truth["page"] = page.index
            regions[region.label] = truth
        clean = np.full((cfg.height, cfg.width), paper_level, np.float32)
        clean += cv2.resize(rng.normal(0, 2.0, (cfg.height // 40, cfg.width // 40)).astype(np.float32),
                            (cfg.width, cfg.height), interpolation=cv2.INTER_CUBIC)  # paper fibre
        clean = ink_on_paper(clean, printed_mask(layout, page.index), 15.0)
        clean = ink_on_paper(clean, hand, style.ink)
        scanned, m = scan_page(clean, rng, scan)
        pages.append(Image.fromarray(scanned, mode="L"))
        page_truth.append({"index": page.index, "scan_matrix": m.tolist()})
    truth = {"exam_id": layout.exam_id, "student": dict(student), "font": font.name, "regions": regions,
             "pages": page_truth}
    return RenderedExam(pages=pages, truth=truth)
