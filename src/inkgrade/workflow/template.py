"""The exam's region template, its blank reference pages, and what a scanned page is.

The template is Wong's ``{"<page>": [{"x", "y", "width", "height", "label"}]}``; registering a scan
needs the blank (unfilled) page it was printed from. These come from ``blank=`` (a PDF or images, one
page per template page), else ``blank.pdf`` next to the template, else, when the template is exactly
the one :func:`htr.synth.pages.layout_exam` prints for the rubric, from that layout.

Which template page a scan is gets decided from the page itself: it is aligned to every template page
and the one whose printed content (everything outside the answer and identity regions) correlates best
with the aligned scan wins. A page may also carry a printed booklet code (a row of filled and empty
squares in the bottom margin, :class:`PageCode`), which ties a page without an ID region to its
booklet's ID page when a whole class is scanned into one PDF in any order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from grading.rubric import Rubric
from htr.regions import IDENTITY_LABELS, AlignmentError, align_page, load_template
from inkbase.errors import InputError

_SCORE_SCALE = 0.25  # page comparison runs on a quarter-size image: printed text is still distinct


@dataclass(frozen=True)
class PageCode:
    """Where the booklet code sits on a page (template pixels): a filled guard square, ``bits`` data
    squares (the booklet number, most significant first), 4 check squares, a filled guard square."""

    x: int = 150
    y: int = 1640
    size: int = 14
    pitch: int = 22
    bits: int = 12

    def squares(self) -> list[tuple[int, int]]:
        return [(self.x + i * self.pitch, self.y) for i in range(self.bits + 6)]

    def encode(self, booklet: int) -> list[int]:
        if not 0 <= booklet < 2 ** self.bits:
            raise ValueError(f"booklet {booklet} does not fit in {self.bits} bits")
        data = [(booklet >> (self.bits - 1 - i)) & 1 for i in range(self.bits)]
        check = _check(booklet)
        return [1, *data, *[(check >> (3 - i)) & 1 for i in range(4)], 1]

    def draw(self, page: np.ndarray, booklet: int, ink: int = 20) -> None:
        """Print the code onto a clean page (in place)."""
        for (x, y), bit in zip(self.squares(), self.encode(booklet), strict=True):
            if bit:
                page[y:y + self.size, x:x + self.size] = ink

    def read(self, aligned: np.ndarray) -> int | None:
        """The booklet number on an aligned page, or None (no code, or its check squares disagree)."""
        h, w = aligned.shape[:2]
        squares = self.squares()
        if squares[-1][0] + self.size > w or self.y + self.size > h:
            return None
        inset = self.size // 4
        means = np.array([aligned[y + inset:y + self.size - inset, x + inset:x + self.size - inset].mean()
                          for x, y in squares])
        strip = aligned[max(0, self.y - self.size):self.y + 2 * self.size,
                        max(0, self.x - self.pitch):squares[-1][0] + self.size + self.pitch]
        paper = float(np.percentile(strip, 90))
        bits = (means < 0.55 * paper).astype(int)
        if bits[0] != 1 or bits[-1] != 1:
            return None
        data = bits[1:1 + self.bits]
        booklet = int("".join(map(str, data)), 2)
        check = int("".join(map(str, bits[1 + self.bits:-1])), 2)
        return booklet if check == _check(booklet) else None


def _check(booklet: int) -> int:
    # A 4-bit checksum so that one misread square never yields another booklet's number.
    return (booklet ^ (booklet >> 4) ^ (booklet >> 8) ^ 0b1010) & 0xF


@dataclass
class TemplatePage:
    key: str
    regions: list[dict[str, Any]]
    reference: np.ndarray  # the blank page, uint8 grey, in template pixels
    _mask: np.ndarray | None = None
    _small: np.ndarray | None = None

    @property
    def labels(self) -> list[str]:
        return [r["label"] for r in self.regions]

    @property
    def has_identity(self) -> bool:
        return "ID" in self.labels or "NAME" in self.labels

    def printed_similarity(self, aligned: np.ndarray) -> float:
        """Correlation of the aligned scan with this blank page outside the writable regions."""
        if self._mask is None:
            h, w = self.reference.shape
            mask = np.ones((h, w), np.uint8)
            for r in self.regions:
                mask[max(0, r["y"] - 8):r["y"] + r["height"] + 8, max(0, r["x"] - 8):r["x"] + r["width"] + 8] = 0
            self._mask = cv2.resize(mask, None, fx=_SCORE_SCALE, fy=_SCORE_SCALE,
                                    interpolation=cv2.INTER_NEAREST).astype(bool)
            self._small = _small(self.reference)
        a, b = _small(aligned)[self._mask], self._small[self._mask]
        if a.std() < 1e-6 or b.std() < 1e-6:
            return 0.0
        return float(np.corrcoef(a, b)[0, 1])


def _small(image: np.ndarray) -> np.ndarray:
    small = cv2.resize(image, None, fx=_SCORE_SCALE, fy=_SCORE_SCALE, interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(small.astype(np.float32), (3, 3), 0)


def load_exam_template(template: str | Path, rubric: Rubric, blank: str | Path | None = None,
                       dpi: float = 150.0) -> list[TemplatePage]:
    """Template pages with their blank references, checked against the rubric and the page size."""
    template = Path(template)
    regions = load_template(template)
    labels = {r["label"] for page in regions.values() for r in page}
    for q in rubric.questions:
        if q.id not in labels:
            raise InputError(template, q.id, "the rubric's question has no region in the template")
    questions = {q.id for q in rubric.questions}
    for key, page in regions.items():
        for i, r in enumerate(page):
            if r["label"] not in questions and r["label"] not in IDENTITY_LABELS:
                raise InputError(template, f'"{key}"[{i}].label', f"{r['label']!r} is neither a rubric question "
                                 f"nor one of {', '.join(IDENTITY_LABELS)}")
    references = blank_pages(template, regions, rubric, blank, dpi)
    pages = []
    for key, page in sorted(regions.items(), key=lambda kv: int(kv[0])):
        ref = references[key]
        h, w = ref.shape
        for i, r in enumerate(page):
            if r["x"] + r["width"] > w or r["y"] + r["height"] > h:
                raise InputError(template, f'"{key}"[{i}] ({r["label"]})',
                                 f"region x={r['x']} y={r['y']} {r['width']}x{r['height']} lies outside the "
                                 f"{w}x{h} page")
        pages.append(TemplatePage(key, page, ref))
    return pages


def blank_pages(template: Path, regions: dict[str, list[dict[str, Any]]], rubric: Rubric,
                blank: str | Path | None, dpi: float) -> dict[str, np.ndarray]:
    keys = sorted(regions, key=int)
    if blank is None and (template.parent / "blank.pdf").is_file():
        blank = template.parent / "blank.pdf"
    if blank is not None:
        from inkgrade.workflow.scans import check_scans, iter_pages

        images = [p for p in iter_pages(check_scans(blank), dpi)]
        if len(images) != len(keys):
            raise InputError(blank, "(pages)", f"holds {len(images)} page(s); the template has {len(keys)}")
        for p in images:
            if p.image is None:
                raise InputError(p.source, "(page)", p.problem)
        return {k: p.image for k, p in zip(keys, images, strict=True)}
    from htr.synth.pages import QuestionBox, layout_exam, render_blank

    layout = layout_exam(rubric.exam_id, [QuestionBox(q.id, q.text, q.max_points) for q in rubric.questions])
    if layout.template() != regions:
        raise InputError(template, "(blank pages)", "no blank reference: pass blank=<the unfilled exam as a PDF "
                         "or images, one page per template page> (or put blank.pdf next to the template)")
    return {k: render_blank(layout, int(k)) for k in keys}


@dataclass
class Placement:
    page: TemplatePage | None
    aligned: np.ndarray | None
    score: float
    problem: str = ""


def place_page(scan: np.ndarray, pages: list[TemplatePage], method: str = "auto", source: str = "<scan>",
               min_score: float = 0.3, min_margin: float = 0.05) -> Placement:
    """Align ``scan`` to every template page; keep the page whose printed content matches best. No
    page (``problem`` says why) when none aligns, the best correlates below ``min_score``, or a second
    page comes within ``min_margin`` of it."""
    tried: list[tuple[float, TemplatePage, np.ndarray]] = []
    problems = []
    for page in pages:
        try:
            aligned = align_page(scan, int(page.key), page.reference, method=method, source=source)
        except AlignmentError as err:
            problems.append(f"page {page.key}: {err.problem}")
            continue
        tried.append((page.printed_similarity(aligned), page, aligned))
    if not tried:
        return Placement(None, None, 0.0, "cannot be aligned to any template page (" + "; ".join(problems) + ")")
    tried.sort(key=lambda t: -t[0])
    score, page, aligned = tried[0]
    if score < min_score:
        return Placement(None, None, score, f"matches no template page (best: page {page.key}, "
                         f"printed-content correlation {score:.2f} < {min_score})")
    if len(tried) > 1 and score - tried[1][0] < min_margin:
        return Placement(None, None, score, f"ambiguous: template pages {page.key} and {tried[1][1].key} match "
                         f"alike ({score:.2f} vs {tried[1][0]:.2f})")
    return Placement(page, aligned, score)
