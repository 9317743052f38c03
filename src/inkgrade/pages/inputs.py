"""What page grading reads: student pages, the rubric (as text or as page images) and the page template.

Student pages come from one of

- a folder of ``<student_id>_p<page>.png|jpg`` files (page numbers as written on the files; the smallest
  number seen, 0 or 1, is the exam's first page),
- one PDF per student, ``<student_id>.pdf`` (a folder of them, or a single file), rendered with pypdfium2,
- an ``exam_dir`` of ``scripts/grade_exam.py`` (its ``exam.sqlite``: assigned pages, each with its template
  page and an image path relative to ``exam_dir``).

A page's ``index`` (0-based) picks the rubric page image of the same number and the template page of the same
key. Files that cannot be used (not named as above, not an image, a PDF that does not open) become
:class:`Problem` records naming the file; the other pages are still graded.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, UnidentifiedImageError

from grading.rubric import Question, Rubric, load_rubric
from htr.regions import IDENTITY_LABELS, load_template
from inkbase.errors import InputError
from inkgrade.store import DB_NAME, ExamStore
from inkgrade.workflow.scans import open_pdf

PAGE_FILE = re.compile(r"^(?P<student>.+)_p(?P<page>\d+)\.(?P<ext>png|jpe?g)$", re.IGNORECASE)
IMAGE_EXTS = {".png", ".jpg", ".jpeg"}
# Identity boxes are blanked with this margin (a fraction of the page width): scans are shifted and rotated
# a little against the template.
REDACT_MARGIN = 0.02


@dataclass
class Page:
    """One student page: ``path`` is an image file, or a PDF with ``pdf_page`` set."""

    student_id: str
    index: int
    path: Path
    pdf_page: int | None = None
    page_id: int | None = None

    @property
    def key(self) -> str:
        return f"{self.student_id}:p{self.index}"

    @property
    def source(self) -> str:
        return f"{self.path}" + (f" page {self.pdf_page + 1}" if self.pdf_page is not None else "")


@dataclass
class Problem:
    """An input that could not be graded, named by file."""

    source: str
    problem: str
    student_id: str | None = None
    index: int | None = None


@dataclass
class PageSet:
    pages: list[Page]
    problems: list[Problem] = field(default_factory=list)
    exam_dir: Path | None = None

    @property
    def students(self) -> list[str]:
        return sorted({p.student_id for p in self.pages} | {p.student_id for p in self.problems if p.student_id})


def find_pages(pages: str | Path, pdf_dpi: float) -> PageSet:
    """The pages under ``pages`` (folder of images, PDF(s), or exam_dir), sorted by student and page."""
    root = Path(pages)
    if not root.exists():
        raise InputError(root, "pages", "not found")
    if root.is_dir() and (root / DB_NAME).is_file():
        return _exam_dir_pages(root)
    files = [root] if root.is_file() else sorted(p for p in root.iterdir() if p.is_file())
    found: list[Page] = []
    problems: list[Problem] = []
    numbered: list[tuple[str, int, Path]] = []
    for f in files:
        if f.name.startswith("."):
            continue
        m = PAGE_FILE.match(f.name)
        if m:
            numbered.append((m["student"], int(m["page"]), f))
        elif f.suffix.lower() == ".pdf":
            try:
                n = pdf_page_count(f)
            except InputError as err:
                problems.append(Problem(str(f), err.problem, student_id=f.stem))
                continue
            found += [Page(f.stem, k, f, pdf_page=k) for k in range(n)]
        else:
            problems.append(Problem(str(f), "not named <student_id>_p<page>.png|jpg or <student_id>.pdf"))
    if numbered:
        base = min(k for _, k, _ in numbered)
        found += [Page(sid, k - base, f) for sid, k, f in numbered]
    if not found and not problems:
        raise InputError(root, "pages", "holds no page images (<student_id>_p<page>.png|jpg) or PDFs")
    seen: dict[str, Page] = {}
    for p in found:
        if p.key in seen:
            raise InputError(p.path, "page number", f"student {p.student_id} page {p.index} also in {seen[p.key].path}")
        seen[p.key] = p
    return PageSet(sorted(found, key=lambda p: (p.student_id, p.index)), problems)


def _exam_dir_pages(exam_dir: Path) -> PageSet:
    with ExamStore.open(exam_dir) as store:
        rows = store.pages(status="assigned")
    pages, problems = [], []
    for row in rows:
        source = str(exam_dir / row["image"])
        tp = row["template_page"]
        if tp is None or not str(tp).isdigit():
            problems.append(Problem(source, f"page {row['page_id']} has no template page", row["student_id"]))
            continue
        pages.append(Page(row["student_id"], int(tp), exam_dir / row["image"], page_id=int(row["page_id"])))
    if not pages and not problems:
        raise InputError(exam_dir / DB_NAME, "pages", "no assigned pages (run scripts/grade_exam.py first)")
    return PageSet(sorted(pages, key=lambda p: (p.student_id, p.index)), problems, exam_dir=exam_dir)


def pdf_page_count(path: Path) -> int:
    pdf = open_pdf(path)
    try:
        return len(pdf)
    finally:
        pdf.close()


def render_pdf_page(path: Path, index: int, dpi: float) -> Image.Image:
    pdf = open_pdf(path)
    try:
        return pdf[index].render(scale=dpi / 72).to_pil()
    finally:
        pdf.close()


def load_image(path: Path, pdf_page: int | None, dpi: float) -> Image.Image:
    """The page as a PIL image; :class:`InputError` naming the file when it is not one."""
    if pdf_page is not None:
        return render_pdf_page(path, pdf_page, dpi)
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(path, "(file)", f"not an image ({type(err).__name__})") from None


def encode_image(image: Image.Image) -> tuple[bytes, str]:
    """PNG bytes (RGB or grey) and their MIME type."""
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue(), "image/png"


def page_bytes(page: Page, dpi: float, redact: list[dict[str, Any]] | None = None) -> tuple[bytes, str]:
    """What is sent for ``page``: the image with the ``redact`` regions (template coordinates, i.e. page
    pixels) painted white; an image file with nothing to blank is sent as it is."""
    if not redact and page.pdf_page is None:
        load_image(page.path, None, dpi)  # fails with a named InputError when the file is not an image
        mime = "image/png" if page.path.suffix.lower() == ".png" else "image/jpeg"
        return page.path.read_bytes(), mime
    image = load_image(page.path, page.pdf_page, dpi)
    if redact:
        pad = REDACT_MARGIN * image.width
        draw = ImageDraw.Draw(image)
        white = 255 if image.mode == "L" else (255,) * len(image.getbands())
        for r in redact:
            draw.rectangle([r["x"] - pad, r["y"] - pad, r["x"] + r["width"] + pad, r["y"] + r["height"] + pad],
                           fill=white)
    return encode_image(image)


# ---------------------------------------------------------------- rubric and template
@dataclass
class RubricSource:
    """The parts and their points (``rubric``), and the rubric page images when the rubric is a PDF/folder."""

    rubric: Rubric
    path: Path
    page_images: list[tuple[bytes, str]] | None = None

    @property
    def parts(self) -> dict[str, Question]:
        return self.rubric.by_id


def load_rubric_source(rubric: str | Path, parts: str | Path | None, dpi: float) -> RubricSource:
    """``rubric`` is a rubric.json, or a PDF / folder of page images whose parts and points ``parts`` (a
    rubric.json) names."""
    path = Path(rubric)
    if not path.exists():
        raise InputError(path, "rubric", "not found")
    if path.is_file() and path.suffix.lower() == ".json":
        return RubricSource(load_rubric(path), path)
    if parts is None:
        raise InputError(path, "parts", "a rubric given as images needs parts=<rubric.json> (part ids and points)")
    if path.is_file():
        if path.suffix.lower() != ".pdf":
            raise InputError(path, "rubric", "must be a rubric.json, a PDF or a folder of page images")
        images = [encode_image(render_pdf_page(path, k, dpi)) for k in range(pdf_page_count(path))]
    else:
        files = sorted((f for f in path.iterdir() if f.suffix.lower() in IMAGE_EXTS), key=_natural)
        if not files:
            raise InputError(path, "rubric", "holds no page images (.png/.jpg)")
        images = [encode_image(load_image(f, None, dpi)) for f in files]
    return RubricSource(load_rubric(parts), path, images)


def _natural(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


@dataclass
class Template:
    """Which rubric parts (and identity boxes) each page carries."""

    path: Path
    regions: dict[str, list[dict[str, Any]]]

    def parts_on(self, index: int, rubric: Rubric) -> list[str]:
        ids = rubric.by_id
        return [r["label"] for r in self.regions.get(str(index), []) if r["label"] in ids]

    def identity_boxes(self, index: int) -> list[dict[str, Any]]:
        return [r for r in self.regions.get(str(index), []) if r["label"] in IDENTITY_LABELS]

    @property
    def n_pages(self) -> int:
        return len(self.regions)


def load_page_template(path: str | Path) -> Template:
    return Template(Path(path), load_template(path))


def check_page_counts(pages: PageSet, rubric: RubricSource, template: Template | None) -> int | None:
    """With rubric page images, the number of rubric pages must be the exam's number of pages (the
    template's, else the most common count per student); a mismatch is an :class:`InputError`."""
    if rubric.page_images is None:
        return None
    if template is not None:
        expected, what = template.n_pages, f"template {template.path}"
    else:
        per_student = Counter(p.student_id for p in pages.pages)
        if not per_student:
            return None
        expected, what = Counter(per_student.values()).most_common(1)[0][0], "pages per student"
    if len(rubric.page_images) != expected:
        raise InputError(rubric.path, "page count", f"{len(rubric.page_images)} rubric pages, but the exam has "
                                                    f"{expected} ({what})")
    return expected
