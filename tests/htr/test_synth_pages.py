"""Synthetic exam pages: layout, region template, handwriting truth, scan artefacts."""

from __future__ import annotations

import numpy as np
import pytest

from htr.regions import validate_template
from htr.synth.fonts import get_font
from htr.synth.lines import ink_bbox
from htr.synth.pages import IDENTITY_LABELS, PageConfig, QuestionBox, ScanConfig, layout_exam, render_exam
from htr.synth.text import SAMPLE_EXAM_DIR
from inkbase.errors import ConfigError
from inkbase.jsonio import read_json

STUDENT = {"name": "Nora Jensen", "id": "20231234", "class": "10B"}


@pytest.fixture(scope="module")
def rubric():
    return read_json(SAMPLE_EXAM_DIR / "rubric.json")


@pytest.fixture(scope="module")
def questions(rubric):
    return [QuestionBox(q["id"], q["text"], q["max_points"]) for q in rubric["questions"]]


@pytest.fixture(scope="module")
def answers(rubric):
    texts = {q["id"]: q["reference_answer"] for q in rubric["questions"]}
    texts[rubric["questions"][1]["id"]] = ""  # left blank by the student
    return texts


@pytest.fixture(scope="module")
def clean_exam(rubric, questions, answers):
    layout = layout_exam(rubric["exam_id"], questions)
    return layout, render_exam(layout, STUDENT, answers, get_font("caveat"), np.random.default_rng(0),
                               scan=ScanConfig.none())


def test_layout_places_every_region_inside_the_page_without_overlap(rubric, questions):
    cfg = PageConfig()
    layout = layout_exam(rubric["exam_id"], questions, cfg)
    template = validate_template(layout.template())
    labels = [r["label"] for page in template.values() for r in page]
    assert labels == [*IDENTITY_LABELS, *(q["id"] for q in rubric["questions"])]
    assert all(r["label"] in IDENTITY_LABELS for r in template["0"][:3])
    for page in template.values():
        for i, r in enumerate(page):
            assert cfg.margin <= r["x"] and r["x"] + r["width"] <= cfg.width - cfg.margin
            assert cfg.margin <= r["y"] and r["y"] + r["height"] <= cfg.height - cfg.margin
            for other in page[i + 1:]:
                assert (r["x"] + r["width"] <= other["x"] or other["x"] + other["width"] <= r["x"]
                        or r["y"] + r["height"] <= other["y"] or other["y"] + other["height"] <= r["y"])
    answer_box = template["0"][3]
    assert answer_box["height"] >= 6 * cfg.line_pitch
    for page in layout.pages:
        assert len(page.marks) == 4


def test_a_smaller_page_needs_more_pages(rubric, questions):
    assert len(layout_exam(rubric["exam_id"], questions, PageConfig(height=1000)).pages) > len(layout_exam(rubric["exam_id"], questions).pages)
    with pytest.raises(ConfigError, match="page.box_lines"):
        layout_exam(rubric["exam_id"], questions, PageConfig(height=500, box_lines=12))


def test_handwriting_truth_matches_the_page(clean_exam, rubric, answers):
    layout, exam = clean_exam
    assert len(exam.pages) == len(layout.pages)
    assert exam.truth["regions"]["NAME"]["text"] == STUDENT["name"]
    blank_q = rubric["questions"][1]["id"]
    assert exam.truth["regions"][blank_q]["lines"] == []
    for label, region in exam.truth["regions"].items():
        page = np.asarray(exam.pages[region["page"]])
        _, box = layout.region(label)
        inside = page[box.y + 4:box.y + box.height - 4, box.x + 4:box.x + box.width - 4]
        if not region["lines"]:
            assert inside.min() > 180, label  # a blank answer leaves the box blank
            continue
        assert not region["truncated"]
        expected = answers.get(label) or STUDENT[{"NAME": "name", "ID": "id", "CLASS": "class"}.get(label, "")]
        assert region["text"].split() == expected.split()
        for line in region["lines"]:
            x, y, w, h = line["box"]
            assert box.x <= x and x + w <= box.x + box.width and box.y <= y and y + h <= box.y + box.height
            patch = 255 - page[y:y + h, x:x + w].astype(int)
            found = ink_bbox(patch, threshold=100)
            assert found is not None  # the ink is where the truth says
            assert found[2] - found[0] > 0.8 * w


def test_scan_moves_the_page_by_the_recorded_matrix(rubric, questions, answers):
    layout = layout_exam(rubric["exam_id"], questions)
    rng = np.random.default_rng(1)
    scan = ScanConfig(rotation=(1.5, 1.5), shift=(10.0, 10.0), noise_prob=0, blur_prob=0, jpeg_prob=0,
                      illumination_prob=0)
    exam = render_exam(layout, STUDENT, answers, get_font("kalam-regular"), rng, scan=scan)
    m = np.array(exam.truth["pages"][0]["scan_matrix"])
    page = np.asarray(exam.pages[0])
    for x, y, w, h in layout.pages[0].marks:
        cx, cy = m @ np.array([x + w / 2, y + h / 2, 1.0])
        assert page[int(round(cy)), int(round(cx))] < 60  # the mark's centre is still ink
    assert abs(np.degrees(np.arctan2(-m[1, 0], m[0, 0])) - 1.5) < 1e-6


def test_same_writer_across_the_script(clean_exam):
    _, exam = clean_exam
    heights = [line["box"][3] for r in exam.truth["regions"].values() for line in r["lines"]
               if r is not exam.truth["regions"]["NAME"]]
    assert np.std(heights) / np.mean(heights) < 0.35
    assert exam.truth["font"] == "caveat"

