"""Fixtures shared by the HTR tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def manifest_with_bad_image(tmp_path) -> Path:
    """``train.jsonl`` under ``tmp_path``: three readable line images and an empty ``bad.png``."""
    for i in range(3):
        img = np.full((24, 60), 230, np.uint8)
        img[8:16, 5:50] = 20
        Image.fromarray(img).save(tmp_path / f"{i}.png")
    (tmp_path / "bad.png").write_bytes(b"")
    rows = [{"image": f"{i}.png", "text": f"line {i}"} for i in range(3)] + [{"image": "bad.png", "text": "x"}]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
