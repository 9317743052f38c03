"""Answer regions on scanned pages (Wong): region templates, page registration, crops.

A region template is JSON keyed by page index: ``{"0": [{"x", "y", "width", "height", "label"}, ...]}``
in pixels of the clean page, with the reserved labels NAME, ID and CLASS and one region per question.

:func:`align_page` maps a scan onto the template page. It looks for the four filled corner squares that
:mod:`htr.synth.pages` prints (and that a printed exam can carry); without them it registers the scan
against a blank reference page with ECC (OpenCV's enhanced correlation coefficient), then with ORB
features and a RANSAC homography. When nothing succeeds it raises :class:`AlignmentError`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from htr.preprocess import to_gray
from inkbase.errors import InputError
from inkbase.jsonio import read_json

IDENTITY_LABELS = ("NAME", "ID", "CLASS")  # reserved region labels of the template format (Wong)
METHODS = ("auto", "marks", "ecc", "orb")
_PAGE_KEY = re.compile(r"^(0|[1-9][0-9]*)$")


class AlignmentError(InputError):
    """A scan could not be registered to its template page."""


def load_template(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Read and validate a region template; raise :class:`InputError` naming the file and the field
    (e.g. ``"1"[2].width: must be > 0``). Coordinates come back as ints, pages keyed by their index string."""
    path = Path(path)
    data = read_json(path)
    return validate_template(data, path)


def validate_template(data: Any, path: str | Path = "<template>") -> dict[str, list[dict[str, Any]]]:
    if not isinstance(data, dict):
        raise InputError(path, "(top level)", 'must be an object keyed by page index, e.g. {"0": [...]}')
    if not data:
        raise InputError(path, "(top level)", "holds no pages")
    out: dict[str, list[dict[str, Any]]] = {}
    seen: dict[str, str] = {}
    for key, regions in data.items():
        if not _PAGE_KEY.match(str(key)):
            raise InputError(path, f'"{key}"', 'page key must be a page index such as "0" or "1"')
        if not isinstance(regions, list):
            raise InputError(path, f'"{key}"', "must be a list of regions")
        page = []
        for i, region in enumerate(regions):
            where = f'"{key}"[{i}]'
            if not isinstance(region, dict):
                raise InputError(path, where, "must be an object with x, y, width, height, label")
            clean: dict[str, Any] = {}
            for name in ("x", "y", "width", "height"):
                if name not in region:
                    raise InputError(path, f"{where}.{name}", "missing")
                value = region[name]
                if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
                    raise InputError(path, f"{where}.{name}", f"must be a number, got {value!r}")
                if name in ("width", "height") and value <= 0:
                    raise InputError(path, f"{where}.{name}", "must be > 0")
                if name in ("x", "y") and value < 0:
                    raise InputError(path, f"{where}.{name}", "must be >= 0")
                clean[name] = int(round(value))
            label = region.get("label")
            if "label" not in region:
                raise InputError(path, f"{where}.label", "missing")
            if not isinstance(label, str | int) or not str(label).strip():
                raise InputError(path, f"{where}.label", "must be a non-empty string")
            label = str(label).strip()
            if label in seen:
                raise InputError(path, f"{where}.label", f"duplicate label {label!r} (also on page {seen[label]})")
            seen[label] = str(key)
            clean["label"] = label
            page.append(clean)
        out[str(key)] = page
    return out


def crop_regions(aligned_page: np.ndarray, template_regions: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Crop each region (clipped to the page) from an aligned page; label -> image."""
    h, w = aligned_page.shape[:2]
    crops = {}
    for region in template_regions:
        x0, y0 = max(0, region["x"]), max(0, region["y"])
        x1, y1 = min(w, region["x"] + region["width"]), min(h, region["y"] + region["height"])
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"region {region['label']!r} lies outside the {w}x{h} page")
        crops[region["label"]] = aligned_page[y0:y1, x0:x1].copy()
    return crops


def find_marks(image: np.ndarray, mark_size: float | None = None, corner_frac: float = 0.2) -> np.ndarray | None:
    """Centres of the four filled corner squares (top-left, top-right, bottom-left, bottom-right) as a
    4x2 float array, or None when any is missing. ``mark_size`` (px) narrows the search when known."""
    gray = to_gray(image)
    h, w = gray.shape
    _, ink = cv2.threshold(cv2.GaussianBlur(gray, (3, 3), 0), 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    contours, _ = cv2.findContours(ink, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    lo, hi = ((0.5 * mark_size) ** 2, (1.6 * mark_size) ** 2) if mark_size else ((0.008 * w) ** 2, (0.06 * w) ** 2)
    candidates = []
    for contour in contours:
        area = cv2.contourArea(contour)
        if not lo <= area <= hi:
            continue
        (cx, cy), (rw, rh), _ = cv2.minAreaRect(contour)
        if min(rw, rh) <= 0 or max(rw, rh) / min(rw, rh) > 1.3 or area / (rw * rh) < 0.85:
            continue  # not a filled square
        candidates.append((cx, cy))
    if not candidates:
        return None
    pts = np.array(candidates)
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], float)
    found = []
    for corner in corners:
        near = (np.abs(pts[:, 0] - corner[0]) < corner_frac * w) & (np.abs(pts[:, 1] - corner[1]) < corner_frac * h)
        if not near.any():
            return None
        options = pts[near]
        found.append(options[np.argmin(np.hypot(*(options - corner).T))])
    return np.array(found, np.float32)


def _reference(layout_or_reference: Any, page_index: int) -> tuple[np.ndarray, np.ndarray | None, float | None]:
    """(blank reference page, its mark centres or None, mark size or None)."""
    if isinstance(layout_or_reference, np.ndarray):
        ref = to_gray(layout_or_reference)
        return ref, find_marks(ref), None
    from htr.synth.pages import ExamLayout, render_blank

    if not isinstance(layout_or_reference, ExamLayout):
        raise TypeError("layout_or_reference must be an ExamLayout or a reference page image")
    layout = layout_or_reference
    page = layout.pages[page_index]
    centres = np.array([[x + w / 2, y + h / 2] for x, y, w, h in page.marks], np.float32)
    return render_blank(layout, page_index), centres, float(layout.config.mark_size)


def align_page(scan: np.ndarray, page_index: int, layout_or_reference: Any, method: str = "auto",
               source: str = "<scan>") -> np.ndarray:
    """Register ``scan`` to template page ``page_index``; returns a grey image in template coordinates.

    ``layout_or_reference`` is the :class:`~htr.synth.pages.ExamLayout` the exam was printed from, or a
    blank (unfilled) scan or rendering of the page. ``method``: "marks", "ecc", "orb", or "auto" (the
    three in that order). ``source`` names the scan in error messages.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    gray = to_gray(scan)
    ref, ref_marks, mark_size = _reference(layout_or_reference, page_index)
    size = (ref.shape[1], ref.shape[0])
    tried = []
    if method in ("auto", "marks"):
        marks = find_marks(gray, mark_size * gray.shape[1] / ref.shape[1] if mark_size else None)
        if marks is not None and ref_marks is not None:
            h = cv2.getPerspectiveTransform(marks, ref_marks)
            return cv2.warpPerspective(gray, h, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        tried.append("corner marks not found" if ref_marks is not None else "reference has no corner marks")
    if method in ("auto", "ecc"):
        warp, problem = _ecc(gray, ref)
        if warp is not None:
            return cv2.warpPerspective(gray, warp, size, flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP,
                                       borderMode=cv2.BORDER_REPLICATE)
        tried.append(problem)
    if method in ("auto", "orb"):
        h, problem = _orb(gray, ref)
        if h is not None:
            return cv2.warpPerspective(gray, h, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        tried.append(problem)
    raise AlignmentError(source, f"page {page_index}", "cannot align to the template: " + "; ".join(tried))


def _ecc(gray: np.ndarray, ref: np.ndarray, min_cc: float = 0.5,
         sizes: tuple[int, ...] = (256, 512)) -> tuple[np.ndarray | None, str]:
    """Homography from reference to scan coordinates by ECC, coarse to fine (each level starts from the
    previous one's estimate), or (None, why)."""
    warp = np.eye(3)
    cc = 0.0
    fx, fy = gray.shape[1] / ref.shape[1], gray.shape[0] / ref.shape[0]  # the scan may differ in size
    for longest in sizes:
        scale = min(1.0, longest / max(ref.shape))
        small_ref = cv2.resize(ref, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        small = cv2.resize(gray, (small_ref.shape[1], small_ref.shape[0]), interpolation=cv2.INTER_AREA)
        # This level's warp from the (scale-independent) estimate in reference pixels.
        to_level = np.diag([scale, scale, 1.0])
        init = (to_level @ np.diag([1 / fx, 1 / fy, 1.0]) @ warp @ np.linalg.inv(to_level)).astype(np.float32)
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 60, 1e-5)
        try:
            cc, level_warp = cv2.findTransformECC(small_ref.astype(np.float32), small.astype(np.float32), init,
                                                  cv2.MOTION_HOMOGRAPHY, criteria, None, 5)
        except cv2.error:
            return None, "ECC did not converge"
        warp = np.diag([fx, fy, 1.0]) @ np.linalg.inv(to_level) @ level_warp.astype(np.float64) @ to_level
    if cc < min_cc:
        return None, f"ECC correlation {cc:.2f} < {min_cc}"
    return warp, ""


def _orb(gray: np.ndarray, ref: np.ndarray, min_inliers: int = 25) -> tuple[np.ndarray | None, str]:
    """Homography from scan to reference coordinates by ORB matches and RANSAC, or (None, why)."""
    orb = cv2.ORB_create(4000)
    k1, d1 = orb.detectAndCompute(gray, None)
    k2, d2 = orb.detectAndCompute(ref, None)
    if d1 is None or d2 is None or len(k1) < min_inliers or len(k2) < min_inliers:
        return None, "too few ORB features"
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(d1, d2, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.75 * p[1].distance]
    if len(good) < min_inliers:
        return None, f"only {len(good)} ORB matches"
    src = np.float32([k1[m.queryIdx].pt for m in good])
    dst = np.float32([k2[m.trainIdx].pt for m in good])
    h, inliers = cv2.findHomography(src, dst, cv2.RANSAC, 5.0)
    if h is None or int(inliers.sum()) < min_inliers:
        return None, f"ORB homography has {0 if inliers is None else int(inliers.sum())} inliers"
    return h, ""
