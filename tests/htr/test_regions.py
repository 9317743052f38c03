"""Region templates, page registration (corner marks, ECC, ORB) and answer-box crops."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.segmentation import match_ious
from htr.regions import AlignmentError, align_page, crop_regions, find_marks, load_template
from htr.segment import SegmenterConfig, segment_lines
from htr.synth.fonts import get_font
from htr.synth.pages import QuestionBox, ScanConfig, layout_exam, render_blank, render_exam
from htr.synth.text import SAMPLE_EXAM_DIR
from inkbase.errors import InputError
from inkbase.jsonio import read_json

STUDENT = {"name": "Omar Haddad", "id": "7731", "class": "10A"}
TIGHT = SegmenterConfig(padding=0, padding_x=0)


@pytest.fixture(scope="module")
def exam():
    rubric = read_json(SAMPLE_EXAM_DIR / "rubric.json")
    layout = layout_exam(rubric["exam_id"], [QuestionBox(q["id"], q["text"], q["max_points"]) for q in rubric["questions"]])
    answers = {q["id"]: q["reference_answer"] for q in rubric["questions"]}
    scan = ScanConfig(rotation=(-2.0, -2.0), shift=(14.0, 14.0), scale=(1.015, 1.015))
    rendered = render_exam(layout, STUDENT, answers, get_font("delius"), np.random.default_rng(3), scan=scan)
    return layout, rendered


def line_iou(page: np.ndarray, template_page: list[dict], truth: dict) -> float:
    """Mean IoU of handwritten line boxes found in the crops against the truth (crop coordinates)."""
    crops = crop_regions(page, template_page)
    ious = []
    for region in template_page:
        lines = truth["regions"][region["label"]]["lines"]
        boxes = [(x - region["x"], y - region["y"], x + w - region["x"], y + h - region["y"])
                 for x, y, w, h in (line["box"] for line in lines)]
        ious += match_ious(segment_lines(crops[region["label"]], TIGHT), boxes)
    return float(np.mean(ious))


def test_marks_are_found_and_alignment_restores_the_crops(exam):
    layout, rendered = exam
    template = layout.template()
    scan = np.asarray(rendered.pages[0])
    assert find_marks(scan, layout.config.mark_size) is not None
    unaligned = line_iou(scan, template["0"], rendered.truth)
    aligned = line_iou(align_page(scan, 0, layout, method="marks"), template["0"], rendered.truth)
    assert aligned > 0.75 and aligned > unaligned + 0.15, (aligned, unaligned)


@pytest.mark.parametrize("method", ["ecc", "orb"])
def test_fallbacks_align_against_a_blank_reference(exam, method):
    layout, rendered = exam
    scan = np.asarray(rendered.pages[0])
    aligned = align_page(scan, 0, render_blank(layout, 0), method=method)
    assert line_iou(aligned, layout.template()["0"], rendered.truth) > 0.75


def test_auto_falls_back_when_the_marks_are_gone(exam):
    layout, rendered = exam
    scan = np.asarray(rendered.pages[0]).copy()
    corner = 130
    paper = int(np.median(scan))
    scan[:corner, :corner] = scan[:corner, -corner:] = scan[-corner:, :corner] = scan[-corner:, -corner:] = paper
    assert find_marks(scan) is None
    assert line_iou(align_page(scan, 0, layout), layout.template()["0"], rendered.truth) > 0.75


def test_alignment_failure_is_reported(exam):
    layout, _ = exam
    noise = np.random.default_rng(0).integers(0, 256, (400, 300), dtype=np.uint8)
    with pytest.raises(AlignmentError, match=r"scan7.png: page 0: cannot align.*corner marks not found"):
        align_page(noise, 0, layout, source="scan7.png")


def test_template_roundtrip_and_crops(tmp_path, exam):
    layout, rendered = exam
    path = tmp_path / "regions.json"
    path.write_text(json.dumps(layout.template()), encoding="utf-8")
    template = load_template(path)
    assert template == layout.template()
    crops = crop_regions(np.asarray(rendered.pages[0]), template["0"])
    assert {"NAME", "ID", "CLASS"} <= set(crops)
    r = template["0"][0]
    assert crops[r["label"]].shape == (r["height"], r["width"])


@pytest.mark.parametrize("content, field, problem", [
    ({"0": [{"x": 1, "y": 2, "width": 3, "height": 4, "label": "Q1"}],
      "1": [{"x": 1, "y": 2, "width": 3, "height": 4, "label": "Q2"},
            {"x": 1, "y": 2, "width": 3, "height": 4, "label": "Q3"},
            {"x": 1, "y": 2, "width": 0, "height": 4, "label": "Q4"}]}, '"1"[2].width', "must be > 0"),
    ({"0": [{"x": 1, "y": 2, "width": 3, "height": 4}]}, '"0"[0].label', "missing"),
    ({"page1": []}, '"page1"', "page key must be a page index"),
    ({"0": [{"x": "left", "y": 2, "width": 3, "height": 4, "label": "A"}]}, '"0"[0].x', "must be a number"),
    ({"0": [{"x": 1, "y": 2, "width": 3, "height": 4, "label": "NAME"}],
      "1": [{"x": 1, "y": 2, "width": 3, "height": 4, "label": "NAME"}]}, '"1"[0].label', "duplicate label"),
    ({"0": {"x": 1}}, '"0"', "must be a list"),
    ([1, 2], "(top level)", "must be an object"),
])
def test_malformed_templates_name_file_and_field(tmp_path, content, field, problem):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_template(path)
    assert err.value.file == str(path) and err.value.field == field and problem in err.value.problem


def test_unreadable_template(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"0": [', encoding="utf-8")
    with pytest.raises(InputError, match="broken.json: line 1"):
        load_template(path)
    with pytest.raises(InputError, match="not found"):
        load_template(tmp_path / "missing.json")
