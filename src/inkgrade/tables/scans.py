"""Scanned pages from a PDF or a folder (PDFs and images, in name order), one page at a time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from inkbase.errors import InputError

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def scan_files(scans: str | Path) -> list[Path]:
    scans = Path(scans)
    if scans.is_file():
        if scans.suffix.lower() not in IMAGE_EXT | {".pdf"}:
            raise InputError(scans, "scans", "expected a PDF, an image or a folder of them")
        return [scans]
    if not scans.is_dir():
        raise InputError(scans, "scans", "not found")
    files = sorted(p for p in scans.iterdir() if p.suffix.lower() in IMAGE_EXT | {".pdf"})
    if not files:
        raise InputError(scans, "scans", "the folder holds no PDF or image")
    return files


def page_sources(files: list[Path]) -> list[tuple[str, Path, int]]:
    """``(source, file, page index)`` for every page; ``source`` names the file (and page of a PDF)."""
    import pypdfium2 as pdfium

    out = []
    for f in files:
        if f.suffix.lower() == ".pdf":
            try:
                n = len(pdfium.PdfDocument(str(f)))
            except pdfium.PdfiumError as err:
                raise InputError(f, "(file)", f"not a readable PDF: {err}") from None
            out += [(f"{f.name} page {i + 1}", f, i) for i in range(n)]
        else:
            out.append((f.name, f, 0))
    return out


def load_page(file: Path, index: int, width: int) -> np.ndarray:
    """A page as grey uint8; PDF pages are rendered ``width`` px wide (the layout's page size)."""
    if file.suffix.lower() == ".pdf":
        import pypdfium2 as pdfium

        page = pdfium.PdfDocument(str(file))[index]
        img = page.render(scale=width / page.get_width()).to_pil().convert("L")
        return np.asarray(img)
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
