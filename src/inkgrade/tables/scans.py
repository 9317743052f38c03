"""Scanned pages of answer tables, one page at a time, rendered at the layout's page width.

Files are listed and PDFs opened by :mod:`inkgrade.workflow.scans` (the same checks as the exam workflow: not a
PDF, encrypted or empty is one line naming the file); only the rendering scale differs: a table layout is in
pixels of the page's scan size, so a PDF page is rendered at that width rather than at a fixed dpi.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from inkbase.errors import InputError
from inkgrade.workflow.scans import PDF_SUFFIXES, open_pdf, scan_files


def page_sources(files: list[Path]) -> list[tuple[str, Path, int]]:
    """``(source, file, page index)`` for every page; ``source`` names the file (and page of a PDF)."""
    out = []
    for f in files:
        if f.suffix.lower() in PDF_SUFFIXES:
            pdf = open_pdf(f)
            n = len(pdf)
            pdf.close()
            out += [(f"{f.name} page {i + 1}", f, i) for i in range(n)]
        else:
            out.append((f.name, f, 0))
    return out


def load_page(file: Path, index: int, width: int) -> np.ndarray:
    """A page as grey uint8; PDF pages are rendered ``width`` px wide (the layout's page size)."""
    if file.suffix.lower() in PDF_SUFFIXES:
        pdf = open_pdf(file)
        try:
            page = pdf[index]
            return np.asarray(page.render(scale=width / page.get_width()).to_pil().convert("L"))
        finally:
            pdf.close()
    img = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise InputError(file, "(file)", "not a readable image")
    return img


def iter_pages(scans: str | Path, width: int) -> Iterator[tuple[str, np.ndarray | InputError]]:
    for source, f, i in page_sources(scan_files(scans)):
        try:
            yield source, load_page(f, i, width)
        except InputError as err:
            yield source, err
