"""Line segmentation against rendered paragraphs whose line boxes are known.

IoU is measured against each line's tight ink box, so the segmenter runs without padding here; the
padding itself is checked separately.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from benchmarks.segmentation import evaluate, make_cases
from htr.segment import SegmenterConfig, segment_lines
from htr.synth.fonts import list_fonts
from htr.synth.lines import AugmentConfig, degrade, paper
from inkbase.cli import compose
from inkbase.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "segmenter"
PYPI_FONTS = [f for f in list_fonts("train") if f.source == "pypi"]
TIGHT = SegmenterConfig(padding=0, padding_x=0)
LANKE_ONLY = dataclasses.replace(TIGHT, split_prominence=None, merge_fragments=0.0, core_band=0.0)


def test_straight_paragraphs():
    r = evaluate(make_cases(seed=2, n=12, pitch=(1.4, 1.8), fonts=PYPI_FONTS), TIGHT)
    assert r["count_accuracy"] == 1.0, r
    assert r["mean_iou"] > 0.85 and r["min_iou"] > 0.3, r


def test_touching_lines_are_split():
    cases = make_cases(seed=3, n=12, pitch=(0.95, 1.15), fonts=PYPI_FONTS)
    ours, lanke = evaluate(cases, TIGHT), evaluate(cases, LANKE_ONLY)
    assert ours["count_accuracy"] >= 0.75 and ours["mean_iou"] > 0.75, ours
    # Lanke et al.'s 2 % rule alone merges touching lines.
    assert lanke["count_accuracy"] < ours["count_accuracy"] - 0.25, (lanke, ours)


def test_rotated_paragraphs_need_deskew():
    deskewed = make_cases(seed=4, n=10, pitch=(1.4, 1.8), rotation=5.0, deskew=True, fonts=PYPI_FONTS)
    raw = make_cases(seed=4, n=10, pitch=(1.4, 1.8), rotation=5.0, deskew=False, fonts=PYPI_FONTS)
    assert all(abs(c.estimated - c.rotation) < 1.5 for c in deskewed)
    good, bad = evaluate(deskewed, TIGHT), evaluate(raw, TIGHT)
    assert good["count_accuracy"] >= 0.9 and good["mean_iou"] > 0.85, good
    assert bad["count_accuracy"] < good["count_accuracy"] and bad["mean_iou"] < good["mean_iou"] - 0.1, bad


def test_blank_regions_give_no_lines():
    rng = np.random.default_rng(0)
    aug = AugmentConfig(noise_prob=1.0, gradient_prob=1.0, texture_prob=1.0, jpeg_prob=1.0)
    for _ in range(5):
        blank = degrade(paper((220, 700), rng, aug), rng, aug)
        assert segment_lines(blank) == []
    assert segment_lines(np.full((100, 400), 255, np.uint8)) == []
    framed = np.full((200, 600), 245, np.uint8)
    framed[[0, 1, -2, -1], :] = 20  # an answer box's frame caught in the crop
    framed[:, [0, 1, -2, -1]] = 20
    assert segment_lines(framed) == []


def test_padding_and_trimmed_extent():
    case = make_cases(seed=5, n=1, pitch=(1.6, 1.6), fonts=PYPI_FONTS)[0]
    tight, padded = segment_lines(case.image, TIGHT), segment_lines(case.image, SegmenterConfig())
    assert len(tight) == len(padded) == len(case.truth)
    for t, p in zip(tight, padded, strict=True):
        assert p.y == max(0, t.y - 8) and p.y1 == min(case.image.shape[0], t.y1 + 8)
        assert p.x == max(0, t.x - 8)
    # Blank columns are trimmed: the extent follows the ink (to within a descender's overhang, which the
    # 8 px padding covers).
    for box, truth in zip(tight, case.truth, strict=True):
        assert abs(box.x - truth[0]) <= 8 and abs(box.x1 - truth[2]) <= 8
    for box, truth in zip(padded, case.truth, strict=True):
        assert box.x <= truth[0] + 1 and box.x1 >= truth[2] - 1


LANKE = {"flatten": 0, "remove_rules": False, "split_prominence": None, "merge_fragments": 0.0, "core_band": 0.0}


@pytest.mark.parametrize("name,changes", [("default", {}), ("lanke", LANKE)])
def test_presets_are_deltas_of_the_default(name, changes):
    # The dataclass defaults equal configs/segmenter/default.yaml, and a preset file holds only its changes.
    assert SegmenterConfig.from_dict(compose("transcribe", [f"segmenter={name}"]).segmenter) == SegmenterConfig(
        **changes)
    assert set(OmegaConf.load(CONFIGS / f"{name}.yaml")) - {"defaults"} == (set(changes) if changes else set(
        vars(SegmenterConfig())))


def test_config_is_range_checked():
    with pytest.raises(ConfigError, match="segmenter.threshold"):
        SegmenterConfig(threshold=2.0)
    with pytest.raises(ConfigError, match="segmenter.adaptive_block"):
        SegmenterConfig(adaptive_block=10)


def test_a_few_words_in_a_wide_shaded_box_are_one_line():
    # Otsu on the raw box splits the paper's shading when ink covers well under 1% of it; the
    # paper-relative threshold (``flatten``) must still find the word, and only it.
    from htr.preprocess import PreprocessConfig, preprocess
    from htr.synth.fonts import list_fonts
    from htr.synth.lines import AugmentConfig
    from inkgrade.handwritten_benchmark import handwrite

    cfg = SegmenterConfig()
    found, found_plain = [], []
    for i, font in enumerate(f for f in list_fonts("heldout") if not f.uppercase_only):
        for j, word in enumerate(("main", "stack", "O(n)")):
            img = handwrite(word, font, np.random.default_rng([1, i, j]), AugmentConfig(), 1000, 52)
            pre, _ = preprocess(img, PreprocessConfig(upscale=False, sharpen=False))
            found.append(len(segment_lines(pre, cfg)))
            found_plain.append(len(segment_lines(pre, dataclasses.replace(cfg, flatten=0))))
    assert found.count(1) >= len(found) - 1, found
    assert found.count(1) > found_plain.count(1)  # what the switch is for
