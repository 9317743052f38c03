"""Preprocessing: Hough deskew accuracy on rendered text with known rotation, and each switch."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf

from benchmarks.segmentation import make_cases
from htr.preprocess import PreprocessConfig, estimate_skew, preprocess, rotate
from htr.synth.fonts import list_fonts
from inkbase.cli import compose
from inkbase.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "preprocess"
PYPI_FONTS = [f for f in list_fonts("train") if f.source == "pypi"]


@pytest.fixture(scope="module")
def paragraphs():
    return make_cases(seed=1, n=6, pitch=(1.4, 1.8), fonts=PYPI_FONTS)


@pytest.mark.parametrize("angle", [-5.0, -2.0, 3.0, 5.0])
def test_hough_deskew_recovers_known_rotation(paragraphs, angle):
    errors = []
    for case in paragraphs:
        rotated, _ = rotate(case.image, -angle)  # clockwise by `angle`: text runs downhill
        errors.append(estimate_skew(rotated) - angle)
    assert np.mean(np.abs(errors)) < 0.6, errors
    assert np.max(np.abs(errors)) < 1.5, errors


def test_skew_is_zero_on_blank_and_out_of_range_lines_are_ignored(paragraphs):
    assert estimate_skew(np.full((300, 600), 235, np.uint8)) == 0.0
    steep, _ = rotate(paragraphs[0].image, -30.0)
    assert abs(estimate_skew(steep, max_angle=15.0)) <= 15.0


def test_preprocess_switches(paragraphs):
    img = paragraphs[0].image
    out, scale = preprocess(img, PreprocessConfig(deskew=False, clahe=False, upscale=False, sharpen=False))
    assert scale == 1.0 and np.array_equal(out, img)
    out, scale = preprocess(img, PreprocessConfig(deskew=False, clahe=False, upscale=True, upscale_factor=2.0))
    assert scale == 2.0 and out.shape == (img.shape[0] * 2, img.shape[1] * 2)
    faint = (img.astype(np.float32) * 0.25 + 150).astype(np.uint8)
    out, _ = preprocess(faint, PreprocessConfig(deskew=False, upscale=False, sharpen=False))
    assert out.std() > 1.5 * faint.std()  # CLAHE stretches the contrast
    out, _ = preprocess(img, PreprocessConfig(deskew=False, clahe=False, sharpen=True))
    assert cv2.Laplacian(out, cv2.CV_64F).var() > cv2.Laplacian(img, cv2.CV_64F).var()
    colour = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    out, _ = preprocess(colour, PreprocessConfig(deskew=False, clahe=False, upscale=False, sharpen=False))
    assert out.ndim == 2


def test_preprocess_deskews_and_reports_the_angle(paragraphs):
    rotated, _ = rotate(paragraphs[1].image, -4.0)
    info: dict = {}
    out, scale = preprocess(rotated, PreprocessConfig(clahe=False, upscale=False, sharpen=False), info=info)
    assert info["angle"] == pytest.approx(4.0, abs=1.0) and info["scale"] == 1.0
    assert abs(estimate_skew(out)) < 1.0


@pytest.mark.parametrize("name,changes", [("default", {}), ("lanke", {"upscale": True, "sharpen": True}),
                                          ("none", {"deskew": False, "clahe": False})])
def test_presets_are_deltas_of_the_default(name, changes):
    # The dataclass defaults equal configs/preprocess/default.yaml, and a preset file holds only its changes.
    assert PreprocessConfig.from_dict(compose("transcribe", [f"preprocess={name}"]).preprocess) == PreprocessConfig(
        **changes)
    assert set(OmegaConf.load(CONFIGS / f"{name}.yaml")) - {"defaults"} == (set(changes) if changes else set(
        vars(PreprocessConfig())))


def test_config_is_range_checked():
    with pytest.raises(ConfigError, match="preprocess.upscale_factor"):
        PreprocessConfig(upscale_factor=0.5)
    with pytest.raises(ConfigError, match="preprocess.bogus"):
        PreprocessConfig.from_dict({"bogus": True})


def test_a_light_on_dark_image_is_turned_into_dark_ink_on_light_paper():
    from htr.preprocess import PreprocessConfig, preprocess

    page = np.full((120, 300), 20, np.uint8)
    page[50:70, 30:270] = 230  # one light stroke on a dark background
    info: dict = {}
    out, _ = preprocess(page, PreprocessConfig(deskew=False, clahe=False, upscale=False, sharpen=False), info)
    assert info["inverted"] is True and out[0, 0] == 235 and out[60, 100] == 25
    out, _ = preprocess(255 - page, PreprocessConfig(deskew=False, clahe=False, upscale=False, sharpen=False), info)
    assert info["inverted"] is False and out[0, 0] == 235
