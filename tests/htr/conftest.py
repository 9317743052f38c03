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


@pytest.fixture
def train_on_bad_manifest(tmp_path, capsys, manifest_with_bad_image):
    """Run ``train_htr`` for one epoch on :func:`manifest_with_bad_image` with the given model/trainer overrides.

    Checks that the unreadable image is named on stderr; returns the run's metrics and the names of the
    images listed in its ``skipped.jsonl``.
    """
    from htr import train
    from inkbase.cli import compose
    from inkbase.jsonio import read_jsonl

    def run(overrides: list[str]) -> tuple[dict, set[str]]:
        manifest = manifest_with_bad_image
        cfg = compose("train_htr", [*overrides, "data=manifest", f"data.train_manifest={manifest}",
                                    f"data.val_manifest={manifest}", "data.num_workers=0", "trainer.epochs=1",
                                    f"out_dir={tmp_path / 'run'}"])
        metrics = train.run(cfg)
        assert "bad.png" in capsys.readouterr().err
        return metrics, {Path(r["image"]).name for r in read_jsonl(tmp_path / "run" / "skipped.jsonl")}

    return run
