"""Answer tables (Grabowski & Canz): layout and key files, grid finding, roster matching, the grading run."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from htr.cells.data import CLASSES
from htr.cells.reader import DEFAULT_WEIGHTS
from htr.synth.fonts import get_font
from inkbase.errors import InputError
from inkgrade.tables.grid import cell_crops, find_table, rectify, table_margin
from inkgrade.tables.identity import match_id
from inkgrade.tables.layout import Layout, load_key, load_layout
from inkgrade.tables.synth import ScanWarp, demo_layout, font_writer, render_page, write_scans

REPO = Path(__file__).resolve().parents[2]
needs_weights = pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason="shipped cell reader weights missing")


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


# ---------------------------------------------------------------- layout and key files
def test_layout_box_outside_the_page_names_file_and_field(tmp_path):
    lay = demo_layout()
    lay["tables"][1]["box"]["x"] = 1000  # 1000 + 720 > 1240
    with pytest.raises(InputError) as err:
        load_layout(write_json(tmp_path / "layout.json", lay))
    assert str(err.value).startswith(f"{tmp_path / 'layout.json'}: tables[1]: box lies outside the page")


@pytest.mark.parametrize("change, field", [
    (lambda lay: lay["tables"][0].pop("page_size"), "tables[0].page_size"),
    (lambda lay: lay["tables"][0]["box"].update(width=-3), "tables[0].box.width"),
    (lambda lay: lay["tables"][0].update(role="essay"), "tables[0].role"),
    (lambda lay: lay.update(alphabet="abc"), "alphabet"),
    (lambda lay: lay["tables"][1]["cells"].append({"item_id": "q1", "points": 1}), "tables[1]"),
])
def test_layout_errors_name_the_field(tmp_path, change, field):
    lay = demo_layout()
    change(lay)
    path = write_json(tmp_path / "layout.json", lay)
    with pytest.raises(InputError) as err:
        load_layout(path)
    assert str(err.value).startswith(f"{path}: {field}: ")


@pytest.mark.parametrize("key, field, problem", [
    ({"t9": {"q1": "A"}}, "t9", "unknown table"),
    ({"t1": {"q99": "A"}}, "t1.q99", "unknown item"),
    ({"t1": {"q1": "Z"}}, "t1.q1", "not a letter of the alphabet"),
    ({"sid": {"id1": "1"}}, "sid", "student_id table"),
])
def test_key_errors_name_the_field(tmp_path, key, field, problem):
    layout = load_layout(write_json(tmp_path / "layout.json", demo_layout(alphabet="ABCD")))
    with pytest.raises(InputError) as err:
        load_key(write_json(tmp_path / "key.json", key), layout)
    assert str(err.value).startswith(f"{tmp_path / 'key.json'}: {field}: ") and problem in str(err.value)


def test_valid_layout_and_key_load(tmp_path):
    layout = load_layout(write_json(tmp_path / "layout.json", demo_layout(n_items=4, alphabet="ABCD")))
    key = load_key(write_json(tmp_path / "key.json", {"t1": {"q1": "A", "q4": "D"}}), layout)
    assert key == {"t1": {"q1": "A", "q4": "D"}}
    assert layout.pages_per_script == 1 and [t.role for t in layout.tables] == ["student_id", "answers"]


# ---------------------------------------------------------------- grid finding
@pytest.mark.parametrize("warp", [ScanWarp(18, -22, 1.03, 2.5), ScanWarp(-25, 15, 0.97, -3.0), ScanWarp()])
def test_grid_found_on_shifted_rotated_page(warp):
    layout = Layout.model_validate(demo_layout(n_items=10))
    rng = np.random.default_rng(0)
    answers = {"sid": list("402719"), "t1": list("ABCDEFGH") + ["", "~C"]}
    page, truth = render_page(layout, 1, answers, font_writer(get_font("kalam-regular")), rng, warp)
    for table in layout.tables:
        fit = find_table(page, table)
        assert fit.found
        assert np.abs(fit.corners - truth[table.id]).max() <= 4.0  # px
        image = rectify(page, fit, table_margin(fit))
        crops = cell_crops(image, fit, len(table.cells))
        assert len(crops) == len(table.cells) and len({c.shape for c in crops}) <= 2


def test_blank_page_has_no_table():
    layout = Layout.model_validate(demo_layout())
    fit = find_table(np.full((1754, 1240), 245, np.uint8), layout.tables[1])
    assert not fit.found and "no printed grid" in fit.problem


# ---------------------------------------------------------------- roster matching
def digit_probs(id_: str, sure: float = 0.97, override: dict[int, dict[str, float]] | None = None) -> np.ndarray:
    p = np.full((len(id_), len(CLASSES)), 1e-4)
    for i, d in enumerate(id_):
        p[i, CLASSES.index(d)] = 1e-4 if i in (override or {}) else sure
        for other, v in (override or {}).get(i, {}).items():
            p[i, CLASSES.index(other)] = v
    return p / p.sum(1, keepdims=True)


ROSTER = ["402719", "402718", "113355", "987650"]


def test_roster_match_picks_the_read_id():
    m = match_id(digit_probs("113355"), ROSTER)
    assert m.student_id == "113355" and m.read == "113355" and m.posterior > 0.99


def test_close_second_is_ambiguous_not_assigned():
    # Last digit 50/50 between 9 and 8: two roster IDs fit equally well.
    m = match_id(digit_probs("402719", override={5: {"9": 0.5, "8": 0.5}}), ROSTER)
    assert m.student_id is None and "ambiguous" in m.problem


def test_id_not_on_the_roster_is_never_assigned():
    # 402717 is read confidently; the nearest roster IDs differ in a digit read with 0.97.
    m = match_id(digit_probs("402717"), ROSTER)
    assert m.student_id is None and m.read == "402717"


def test_unsure_digit_resolved_by_the_roster():
    # The third digit is unsure (2 at 0.4, 7 at 0.5) but only 402719 is on the roster with this pattern.
    m = match_id(digit_probs("402719", override={2: {"7": 0.5, "2": 0.4}}), ROSTER[:1] + ROSTER[2:])
    assert m.student_id == "402719"


# ---------------------------------------------------------------- the grading run
@pytest.fixture
def exam(tmp_path):
    """Two scripts in a train-split hand: 402719 (all right but one empty and one crossed out) and an
    ID that is not on the roster; plus a blank page that holds no table."""
    lay = demo_layout(n_items=8, alphabet="ABCDEFGH")
    layout_path = write_json(tmp_path / "layout.json", lay)
    key = {"t1": dict(zip([f"q{i}" for i in range(1, 9)], "ABCDEFGH", strict=True))}
    key_path = write_json(tmp_path / "key.json", key)
    roster = tmp_path / "roster.csv"
    roster.write_text("student_id,name,class\n402719,Ada,A\n113355,Ben,A\n")
    layout = Layout.model_validate(lay)
    scripts = [{"sid": list("402719"), "t1": list("ABCDEF") + ["", "~H"]},
               {"sid": list("777777"), "t1": list("ABCDEFGH")}]
    scans = tmp_path / "scans"
    write_scans(scans, layout, scripts, font_writer(get_font("kalam-regular")), np.random.default_rng(1))
    cv2.imwrite(str(scans / "scan_003_1.png"), np.full((1754, 1240), 245, np.uint8))
    return {"layout": layout_path, "key": key_path, "roster": roster, "scans": scans, "dir": tmp_path}


def grade_cfg(exam, **extra):
    from inkbase.cli import compose

    over = [f"scans={exam['scans']}", f"layout={exam['layout']}", f"key={exam['key']}", f"roster={exam['roster']}",
            f"out_dir={exam['dir'] / 'out'}", "progress=false", *[f"{k}={v}" for k, v in extra.items()]]
    return compose("grade_tables", over)


def read_cells(out: Path) -> list[dict]:
    return list(csv.DictReader((out / "cells.csv").open(encoding="utf-8")))


@needs_weights
def test_grading_run_outputs_store_and_resume(exam, capsys, monkeypatch):
    from inkgrade.store import ExamStore
    from inkgrade.tables import grade

    exam_dir = exam["dir"] / "exam"
    cfg = grade_cfg(exam, exam_dir=exam_dir)
    # Interrupted while reading the second script: the first one's results are already on disk.
    real = grade.read_table
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(grade, "read_table", flaky)
    with pytest.raises(KeyboardInterrupt):
        grade.run(cfg)
    out = exam["dir"] / "out"
    assert {r["student_id"] for r in read_cells(out)} == {"402719"}
    monkeypatch.setattr(grade, "read_table", real)
    metrics = grade.run(cfg)
    err = capsys.readouterr().err
    assert "scan_003_1.png: no answer table found" in err  # the blank page: one line naming the file

    rows = read_cells(out)
    assert len(rows) == 2 * (6 + 8)  # ID cells and answer cells of both scripts, each once
    first = {r["item_id"]: r for r in rows if r["student_id"] == "402719" and r["table_id"] == "t1"}
    assert first["q7"]["flag"] == "empty" and first["q7"]["accepted"] == "False"
    assert first["q8"]["flag"] == "crossed" and first["q8"]["accepted"] == "False"
    assert sum(first[f"q{i}"]["pass2"] == "ABCDEF"[i - 1] for i in range(1, 7)) >= 5
    # 777777 is not on the roster: flagged, never given to a student on the roster.
    assert {r["student_id"] for r in rows} == {"402719", "unidentified002"}
    assert metrics["unidentified"] == 1 and metrics["page_errors"] == 1

    grades = list(csv.DictReader((out / "grades.csv").open(encoding="utf-8")))
    assert list(grades[0]) == ["student_id", "item_id", "run", "points", "max_points", "problem_type"]
    assert len(grades) == 16 and {g["problem_type"] for g in grades} == {"t1"}
    assert float(next(g for g in grades if g["student_id"] == "402719" and g["item_id"] == "q8")["points"]) == 0
    assert (out / "selfcheck" / "402719.png").is_file()

    with ExamStore.open(exam_dir) as store:
        items = store.items(kind="table_cell")
        assert len(items) == 16
        q8 = store.item("402719:t1:q8")
        assert q8.risk_reason == "crossed" and q8.risk >= 0.8 and q8.status == "unreviewed" and q8.ai_points == 0
        assert (exam_dir / q8.crop).is_file()
        assert all(i.risk_reason in ("", "unidentified") or i.status == "unreviewed" for i in items)
        assert {p["status"] for p in store.pages()} == {"assigned", "needs_identity"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / "scripts" / "grade_tables.py"), *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_cli_bad_key_is_one_line_naming_file_and_field(exam):
    bad = write_json(exam["dir"] / "bad_key.json", {"t1": {"q1": "Q"}})
    done = run_cli(f"scans={exam['scans']}", f"layout={exam['layout']}", f"key={bad}", f"out_dir={exam['dir'] / 'bad'}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == f"error: {bad}: t1.q1: 'Q' is not a letter of the alphabet 'ABCDEFGH'"
    assert not (exam["dir"] / "bad" / "run.json").exists()  # refused before any run started


@pytest.mark.slow  # the same run in-process is test_grading_run_outputs_store_and_resume
@needs_weights
def test_cli_end_to_end(exam):
    done = run_cli(f"scans={exam['scans']}", f"layout={exam['layout']}", f"key={exam['key']}",
                   f"out_dir={exam['dir'] / 'cli'}", "progress=false")
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((exam["dir"] / "cli" / "metrics.json").read_text())
    assert metrics["scripts"] == 3 and metrics["cells"] == 16
    assert len(list((exam["dir"] / "cli" / "selfcheck").glob("*.png"))) == 2  # the blank page has no table


# ---------------------------------------------------------------- a vision LLM as a pass
class FakeClient:
    """Stands in for grading.llm.LLMClient: records the messages, answers with fixed cells."""

    def __init__(self, cells):
        self.cells, self.messages = cells, []

    def chat(self, messages, schema, schema_name="reply"):
        from grading.llm import ChatReply

        self.messages.append(messages)
        return ChatReply(data={"cells": self.cells})


def test_llm_pass_sends_the_key_only_in_pass_one():
    from htr.cells.data import CROSSED, EMPTY
    from inkgrade.tables.llm_pass import LLMTablePass

    client = FakeClient(["a", "", "#", "B"])
    llm = LLMTablePass(client)
    image = np.full((60, 240), 255, np.uint8)
    assert llm.read(image, 4, "ABCD", ["A", "B", "C", "D"], "p1") == ["A", EMPTY, CROSSED, "B"]
    assert llm.read(image, 4, "ABCD", None, "p1") == ["A", EMPTY, CROSSED, "B"]
    with_key, without = (m[0]["content"][0]["text"] for m in client.messages)
    assert "expected characters are, in order: A, B, C, D" in with_key and "expected" not in without
    assert client.messages[0][0]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    # A reply with the wrong number of cells cannot be aligned: every cell is sent to review.
    assert LLMTablePass(FakeClient(["A"])).read(image, 4, "ABCD", None, "p1") == ["?"] * 4


def test_pdf_pages_render_at_the_layout_width_and_tables_are_found(tmp_path):
    from PIL import Image

    from inkgrade.tables.scans import iter_pages

    layout = Layout.model_validate(demo_layout(n_items=6))
    rng = np.random.default_rng(2)
    pages = [render_page(layout, 1, {"t1": list("ABCDEF")}, font_writer(get_font("caveat")), rng,
                         ScanWarp(10, 5, 1.0, 1.5))[0] for _ in range(2)]
    pdf = tmp_path / "scans.pdf"
    # Scanned at half the layout's resolution: the page is rendered back at the layout width.
    small = [Image.fromarray(p).resize((620, 877)) for p in pages]
    small[0].save(pdf, save_all=True, append_images=small[1:], resolution=75)
    got = list(iter_pages(pdf, 1240))
    assert [s for s, _ in got] == ["scans.pdf page 1", "scans.pdf page 2"]
    for _, gray in got:
        assert abs(gray.shape[1] - 1240) <= 1
        assert find_table(gray, layout.tables[1]).found


def test_id_digits_are_read_among_digits_only():
    # The first cell looks more like the letter D than like 0: in an ID table only digits count.
    p = digit_probs("033553", override={0: {"D": 0.9, "0": 0.09}})
    assert match_id(p, ["033553", "113355"]).student_id == "033553"


def test_end_to_end_figures_count_accepted_errors_by_pair(tmp_path):
    import csv
    import json

    from inkgrade.tables.evaluate import _e2e_figures

    rows = [("s1", "t1", "q1", "4", "6", "True"), ("s1", "t1", "q2", "9", "9", "True"),
            ("s2", "t1", "q1", "4", "6", "True"), ("s2", "t1", "q2", "3", "3", "False"),
            ("s2", "t9", "q1", "1", "1", "True")]  # another table: not counted
    with (tmp_path / "cells.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student_id", "table_id", "item_id", "pass1", "pass2", "accepted", "flag", "confidence"])
        w.writerows([(*r, "", "0.9") for r in rows])
    (tmp_path / "scripts.jsonl").write_text("".join(json.dumps({"script": k, "student_id": v}) + "\n"
                                                    for k, v in (("0", "s1"), ("1", "s2"))))
    truth = {("0", "q1"): "4", ("0", "q2"): "9", ("1", "q1"): "4", ("1", "q2"): "8"}
    fig = _e2e_figures(tmp_path, truth, {"t1"})
    assert fig["n"] == 4 and fig["errors"] == 3 and fig["accepted"] == 3 and fig["errors_accepted"] == 2
    assert fig["accepted_errors_by_pair"] == {"4->6": 2}
    assert fig["page_errors"] == 0
