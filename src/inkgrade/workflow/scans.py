"""Scanned pages in: one multi-page PDF, one PDF per student, or image files, in a file or a folder.

PDF pages are rendered with pypdfium2 (no system binaries). Every input file is opened and checked
before any page is processed, so a file that is not a PDF, is encrypted or holds no pages stops the
run with one line naming it, before anything in the exam folder changes. A single page that cannot be
rendered or decoded is yielded with ``image=None`` and a reason, so the run records it and goes on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inkbase.errors import InputError

PDF_SUFFIXES = (".pdf",)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass
class ScanPage:
    source: str  # "<file>#<page number from 1>", unique within a batch
    file: Path
    number: int  # page number in its file, from 1
    image: np.ndarray | None  # uint8 grey, None when unreadable
    problem: str = ""


def scan_files(path: str | Path) -> list[Path]:
    """The PDF and image files of ``path`` (a file, or a folder searched recursively), sorted."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "scans", "not found")
    if path.is_file():
        if path.suffix.lower() not in PDF_SUFFIXES + IMAGE_SUFFIXES:
            raise InputError(path, "scans", f"not a PDF or image file (suffix {path.suffix!r})")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in PDF_SUFFIXES + IMAGE_SUFFIXES)
    if not files:
        raise InputError(path, "scans", "holds no PDF or image files")
    return files


def open_pdf(path: Path):
    """Open a PDF with pypdfium2; InputError (file, problem) when it is not one, is encrypted or empty."""
    import pypdfium2 as pdfium

    data = path.read_bytes()
    if b"%PDF-" not in data[:1024]:
        raise InputError(path, "(pdf)", "not a PDF (no %PDF- header)")
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as err:
        # PDFium's error code can be stale from an earlier document, so the file itself says why.
        if re.search(rb"/Encrypt\b", data):
            raise InputError(path, "(pdf)", "encrypted (password protected); save an unprotected copy") from err
        if not re.search(rb"/Type\s*/Page(?!s)", data):
            raise InputError(path, "(pdf)", "holds no pages") from err
        raise InputError(path, "(pdf)", f"damaged, cannot be read ({err})") from err
    if len(pdf) == 0:
        pdf.close()
        raise InputError(path, "(pdf)", "holds no pages")
    return pdf


def check_scans(path: str | Path) -> list[tuple[Path, int]]:
    """Open every input once: ``(file, page count)``; raises InputError on the first bad file."""
    out = []
    for f in scan_files(path):
        if f.suffix.lower() in PDF_SUFFIXES:
            pdf = open_pdf(f)
            out.append((f, len(pdf)))
            pdf.close()
        else:
            out.append((f, 1))
    return out


def iter_pages(files: list[tuple[Path, int]], dpi: float = 150.0,
               skip: set[str] | None = None) -> Iterator[ScanPage]:
    """Every page of ``files`` (from :func:`check_scans`) as grey images; sources in ``skip`` are not
    rendered (already ingested) and not yielded."""
    skip = skip or set()
    for f, n in files:
        sources = [f"{f}#{k + 1}" for k in range(n)]
        if all(s in skip for s in sources):
            continue
        if f.suffix.lower() in PDF_SUFFIXES:
            pdf = open_pdf(f)
            try:
                for k, source in enumerate(sources):
                    if source in skip:
                        continue
                    try:
                        image = np.asarray(pdf[k].render(scale=dpi / 72.0, grayscale=True).to_pil().convert("L"))
                        yield ScanPage(source, f, k + 1, image)
                    except Exception as err:  # pdfium raises several error types for one broken page
                        yield ScanPage(source, f, k + 1, None, f"page cannot be rendered: {err}")
            finally:
                pdf.close()
        else:
            image = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            yield ScanPage(sources[0], f, 1, image, "" if image is not None else "image cannot be decoded")
