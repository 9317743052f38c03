"""Find a printed answer table on a scan and cut out its cells.

The scan may be shifted, scaled or rotated a few degrees against the layout. In a search window around
the table's layout box, the printed rules are separated from handwriting by morphological opening with
long horizontal and vertical kernels (handwriting has no long straight strokes); the connected piece
of rules whose rotated bounding rectangle best matches the expected table size is the table. Its four
corners give a homography to the layout frame, so the table is rectified and the cells are equal
slices of it. When no such piece is found, the layout box itself is used (``found=False``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from htr.cells.data import CROP_MARGIN
from inkgrade.tables.layout import Table


@dataclass
class TableFit:
    found: bool
    corners: np.ndarray  # (4, 2) float32 page pixels: top-left, top-right, bottom-right, bottom-left
    size: tuple[int, int]  # (width, height) of the rectified table in pixels
    problem: str = ""


def scaled_box(table: Table, page_shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """The layout box in the pixels of a page of ``page_shape`` (height, width)."""
    sx = page_shape[1] / table.page_size[0]
    sy = page_shape[0] / table.page_size[1]
    b = table.box
    return b.x * sx, b.y * sy, b.width * sx, b.height * sy


def _order(pts: np.ndarray) -> np.ndarray:
    s, d = pts.sum(1), pts[:, 1] - pts[:, 0]
    return np.float32([pts[np.argmin(s)], pts[np.argmin(d)], pts[np.argmax(s)], pts[np.argmax(d)]])


def rule_mask(gray: np.ndarray, min_h: int, min_v: int) -> np.ndarray:
    """Pixels of printed horizontal rules at least ``min_h`` long and vertical ones at least ``min_v``."""
    block = max(15, (min(gray.shape) // 8) | 1)
    ink = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, block, 15)
    ink = cv2.dilate(ink, np.ones((2, 2), np.uint8))  # a rotated 1-px rule breaks up without it
    h = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (min_h, 1)))
    v = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, min_v)))
    return cv2.dilate(h | v, np.ones((3, 3), np.uint8))


def find_table(gray: np.ndarray, table: Table, search: float = 0.5, scale_range: tuple[float, float] = (0.8, 1.25),
               ) -> TableFit:
    """Locate ``table`` on ``gray`` (a whole page, uint8). ``search`` widens the window around the box by
    that share of the box height plus 10% of its width on every side."""
    x, y, w, h = scaled_box(table, gray.shape)
    size = (int(round(w)), int(round(h)))
    box = np.float32([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])
    pad = int(search * h + 0.1 * w)
    x0, y0 = max(int(x) - pad, 0), max(int(y) - pad, 0)
    x1, y1 = min(int(x + w) + pad, gray.shape[1]), min(int(y + h) + pad, gray.shape[0])
    roi = gray[y0:y1, x0:x1]
    if roi.size == 0:
        return TableFit(False, box, size, "the box lies outside the scanned page")
    cell_w = w / len(table.cells)
    # Rules must be longer than any straight stroke of a letter, yet short enough to survive a few
    # degrees of rotation (a rule drifts sin(3 deg) * length px off a straight kernel).
    mask = rule_mask(roi, max(int(0.8 * cell_w), 15), max(int(0.6 * h), 12))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    best, best_err = None, np.inf
    for i in range(1, n):
        if stats[i, cv2.CC_STAT_AREA] < 0.5 * (w + h):
            continue
        pts = np.column_stack(np.nonzero(labels == i)[::-1]).astype(np.float32)
        rect = cv2.minAreaRect(pts)
        rw, rh = sorted(rect[1], reverse=True)  # minAreaRect may report the long side as height
        sw, sh = (rw / w, rh / h) if w >= h else (rh / w, rw / h)
        if not (scale_range[0] <= sw <= scale_range[1] and scale_range[0] <= sh <= scale_range[1]):
            continue
        err = abs(np.log(sw / sh)) + 0.2 * abs(np.log(sw))
        if err < best_err:
            best, best_err = cv2.boxPoints(rect), err
    if best is None:
        return TableFit(False, box, size, "no printed grid of the expected size near the layout box")
    corners = _order(best + np.float32([x0, y0]))
    # The rectangle hugs the outside of the dilated rules: pull it in to the middle of the printed rule
    # (about 2 px of dilation plus half a rule's width).
    centre = corners.mean(0)
    corners = corners + np.sign(centre - corners) * 2.5
    return TableFit(True, corners.astype(np.float32), size)


def rectify(gray: np.ndarray, fit: TableFit, margin: int) -> np.ndarray:
    """The table warped onto its layout frame, with ``margin`` px of surroundings on every side."""
    w, h = fit.size
    dst = np.float32([[margin, margin], [margin + w, margin], [margin + w, margin + h], [margin, margin + h]])
    m = cv2.getPerspectiveTransform(fit.corners, dst)
    return cv2.warpPerspective(gray, m, (w + 2 * margin, h + 2 * margin), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)


def table_margin(fit: TableFit) -> int:
    return max(int(round(2 * CROP_MARGIN * fit.size[1])), 2)


def cell_crops(rectified: np.ndarray, fit: TableFit, n_cells: int) -> list[np.ndarray]:
    """The cells of a rectified table, each with :data:`CROP_MARGIN` of its height around it (so the
    printed border and a letter that crosses it are both in the crop, as in training)."""
    w, h = fit.size
    m = table_margin(fit)
    pad = int(round(CROP_MARGIN * h))
    crops = []
    for i in range(n_cells):
        a, b = m + i * w / n_cells, m + (i + 1) * w / n_cells
        crops.append(rectified[m - pad:m + h + pad, int(round(a)) - pad:int(round(b)) + pad])
    return crops
