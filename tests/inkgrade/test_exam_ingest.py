"""grade_exam: a tiny rendered exam (3 students and one stranger, 2 pages each, shuffled, rotated and
shifted like scans) read with the real default recogniser: pages go to the right students by the ID
read off them, the stranger's pages to needs_identity, an interrupted run resumes without redoing
work, and bad input stops with one line naming the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grading.rubric import load_rubric
from htr.synth.fonts import list_fonts
from htr.synth.lines import AugmentConfig
from htr.synth.pages import QuestionBox, ScanConfig, layout_exam
from inkbase.cli import compose
from inkbase.errors import InputError
from inkgrade.store import ExamStore
from inkgrade.workflow import ingest
from inkgrade.workflow.demo import make_sample_scans, render_script, save_pdf
from inkgrade.workflow.template import PageCode

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "src" / "grading" / "sample_exam"
STRANGER = {"name": "Zed Quillfeather", "id": "X99", "class": "10C"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Sample exam cut to Q1-Q3 (two pages per script), students S01-S03, plus a stranger's script
    (not in the roster) in a second PDF; returns the folder and the truth per PDF page."""
    root = tmp_path_factory.mktemp("tiny")
    rubric = json.loads((SAMPLE / "rubric.json").read_text())
    rubric["questions"] = rubric["questions"][:3]
    (root / "rubric.json").write_text(json.dumps(rubric))
    keep = {q["id"] for q in rubric["questions"]}
    answers = [json.loads(line) for line in (SAMPLE / "answers.jsonl").read_text().splitlines()]
    (root / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers if a["question_id"] in keep))
    cfg = compose("make_sample_scans", [f"rubric={root / 'rubric.json'}", f"answers={root / 'answers.jsonl'}",
                                        "max_students=3", f"out_dir={root / 'scans'}", "seed=3"])
    make_sample_scans(cfg)
    batch = root / "batch"  # the scans alone (the run folder also holds blank.pdf)
    batch.mkdir()
    (batch / "scans.pdf").write_bytes((root / "scans" / "scans.pdf").read_bytes())
    truth = {f"{batch / t['file']}#{t['page']}": t
             for t in map(json.loads, (root / "scans" / "truth.jsonl").read_text().splitlines())}
    # The stranger writes in a second file, pages in reverse order, with booklet 9.
    r = load_rubric(root / "rubric.json")
    layout = layout_exam(r.exam_id, [QuestionBox(q.id, q.text, q.max_points) for q in r.questions])
    rng = np.random.default_rng(7)
    pages = render_script(layout, STRANGER, {"Q1": "Mass cancels so both fall alike."}, list_fonts("heldout")[0],
                          rng, ScanConfig(), AugmentConfig(), 9, PageCode())
    save_pdf(batch / "late.pdf", pages[::-1], 150)
    for k in range(2):
        truth[f"{batch / 'late.pdf'}#{k + 1}"] = {"student_id": None, "template_page": str(1 - k)}
    return root, truth


def grade_cfg(root: Path, exam_dir: Path, *extra: str):
    return compose("grade_exam", [f"scans={root / 'batch'}", f"template={root / 'scans' / 'template.json'}",
                                  f"rubric={root / 'rubric.json'}", f"roster={root / 'scans' / 'roster.csv'}",
                                  f"exam_dir={exam_dir}", f"paths.cache_dir={root / 'cache'}", "grader=similarity",
                                  *extra])


class CountingRecognizer:
    """The real recogniser, counting the line images it is asked to read."""

    def __init__(self, inner):
        self.inner, self.name, self.lines, self.calls = inner, inner.name, 0, 0

    def recognize(self, images):
        self.calls += 1
        self.lines += len(images)
        return self.inner.recognize(images)


@pytest.fixture(scope="module")
def recognizer():
    from htr.recognize import build_recognizer

    return build_recognizer(compose("grade_exam", ["scans=x", "template=x", "rubric=x", "roster=x",
                                                   "exam_dir=x"]).recognizer)


@pytest.fixture(scope="module")
def ingested(tiny, recognizer, tmp_path_factory):
    """Ingest interrupted after 3 pages, then resumed to the end (identity stages only)."""
    root, _ = tiny
    exam_dir = tmp_path_factory.mktemp("exam")
    first = CountingRecognizer(recognizer)
    ingest.run(grade_cfg(root, exam_dir, "limit_pages=3", "stop_after=assign"), recognizer=first)
    with ExamStore.open(exam_dir) as store:
        before = store.pages()
    second = CountingRecognizer(recognizer)
    metrics = ingest.run(grade_cfg(root, exam_dir, "stop_after=assign"), recognizer=second)
    return exam_dir, before, first, second, metrics


def test_every_page_goes_to_the_student_whose_id_it_carries(tiny, ingested):
    _, truth = tiny
    exam_dir = ingested[0]
    with ExamStore.open(exam_dir) as store:
        pages = store.pages()
    assert len(pages) == len(truth) == 8
    for p in pages:
        t = truth[p["source"]]
        assert p["template_page"] == t["template_page"], p["source"]
        if t["student_id"] is None:  # the stranger: never given to a roster student
            assert (p["status"], p["student_id"]) == ("needs_identity", None), p
        else:
            assert (p["status"], p["student_id"]) == ("assigned", t["student_id"]), p
    stranger_id_page = next(p for p in pages if p["source"].endswith("late.pdf#2"))
    assert "X99" in stranger_id_page["id_read"].replace(" ", "") or stranger_id_page["problem"]
    follower = next(p for p in pages if p["source"].endswith("late.pdf#1"))
    assert "booklet 9" in follower["problem"] and "could not be matched" in follower["problem"]


def test_resume_after_interruption_does_no_work_twice(tiny, ingested):
    root, _ = tiny
    exam_dir, before, first, second, metrics = ingested
    assert len(before) == 3 and metrics["new_pages"] == 5
    with ExamStore.open(exam_dir) as store:
        after = {p["source"]: p for p in store.pages()}
    assert len(after) == 8  # sources are unique: nothing ingested twice
    for p in before:  # the first run's pages keep their ids and reads
        assert {k: after[p["source"]][k] for k in ("page_id", "id_read", "template_page", "image")} == \
               {k: p[k] for k in ("page_id", "id_read", "template_page", "image")}
    # In these stages only ID pages are read, one recogniser call each: each run read only its own.
    assert first.calls == sum(p["template_page"] == "0" for p in before)
    assert first.calls + second.calls == 4
    third = CountingRecognizer(first.inner)
    rerun = ingest.run(grade_cfg(root, exam_dir, "stop_after=assign"), recognizer=third)
    assert third.calls == 0 and rerun["new_pages"] == 0 and rerun["pages"] == 8


@pytest.mark.slow  # ~30 s: reads six pages with the real recogniser; test_read_grade_risk_stages is the fast path
def test_reading_and_grading_fill_the_store_and_a_rerun_changes_nothing(tiny, ingested, recognizer):
    root, truth = tiny
    exam_dir = ingested[0]
    counting = CountingRecognizer(recognizer)
    metrics = ingest.run(grade_cfg(root, exam_dir), recognizer=counting)
    assert metrics["items"] == 9 and metrics["items_graded"] == 9
    with ExamStore.open(exam_dir) as store:
        items = store.items()
        for i in items:
            assert 0 <= i.ai_points <= i.max_points and 0 <= i.risk <= 1 and i.risk_reason
            assert {"matched", "missing", "justification", "flags"} <= set(i.details)
            assert (exam_dir / i.crop).is_file()
        answers = {i.answer_id: i.transcription for i in items}
        snapshot = {i.answer_id: (i.ai_points, i.version, i.updated_at) for i in items}
    # The handwriting says what the sample exam's answer says (a few characters may be misread).
    from rapidfuzz import fuzz

    written = {a["answer_id"]: a["text"] for a in map(json.loads, (root / "answers.jsonl").read_text().splitlines())}
    assert np.mean([fuzz.ratio(answers[k], written[k]) for k in answers]) > 85
    again = CountingRecognizer(recognizer)
    rerun = ingest.run(grade_cfg(root, exam_dir), recognizer=again)
    assert again.lines == 0 and rerun["new_items"] == 0 and rerun["graded"] == 0
    with ExamStore.open(exam_dir) as store:
        assert {i.answer_id: (i.ai_points, i.version, i.updated_at) for i in store.items()} == snapshot


# ---------------------------------------------------------------- bad input
def test_not_a_pdf_encrypted_and_empty_pdfs_are_named(tiny, tmp_path):
    import pypdf

    root, _ = tiny
    bad = tmp_path / "notes.pdf"
    bad.write_text("these are my notes, not a scan")
    with pytest.raises(InputError, match=r"notes\.pdf: \(pdf\): not a PDF"):
        ingest.run(grade_cfg(root, tmp_path / "exam", f"scans={bad}"))
    writer = pypdf.PdfWriter()
    writer.add_blank_page(200, 200)
    writer.encrypt("secret", algorithm="RC4-128")
    with (tmp_path / "locked.pdf").open("wb") as fh:
        writer.write(fh)
    with pytest.raises(InputError, match=r"locked\.pdf: \(pdf\): encrypted"):
        ingest.run(grade_cfg(root, tmp_path / "exam", f"scans={tmp_path / 'locked.pdf'}"))
    with (tmp_path / "empty.pdf").open("wb") as fh:
        pypdf.PdfWriter().write(fh)
    with pytest.raises(InputError, match=r"empty\.pdf: \(pdf\): holds no pages"):
        ingest.run(grade_cfg(root, tmp_path / "exam", f"scans={tmp_path / 'empty.pdf'}"))
    assert not (tmp_path / "exam").exists()  # nothing was created before the input was checked


def test_region_outside_the_page_and_duplicate_roster_ids_are_named(tiny, ingested, tmp_path):
    root, _ = tiny
    exam_dir = ingested[0]
    with ExamStore.open(exam_dir) as store:
        kept = (store.pages(), [i.as_dict() for i in store.items()])
    template = json.loads((root / "scans" / "template.json").read_text())
    template["1"][-1]["x"] = 1200
    (tmp_path / "template.json").write_text(json.dumps(template))
    (tmp_path / "blank.pdf").write_bytes((root / "scans" / "blank.pdf").read_bytes())
    with pytest.raises(InputError, match=r'template\.json: "1"\[0\] \(Q3\): region x=1200 .* outside the \d+x1754 page'):
        ingest.run(grade_cfg(root, exam_dir, f"template={tmp_path / 'template.json'}"))
    roster = (root / "scans" / "roster.csv").read_text().splitlines()
    (tmp_path / "roster.csv").write_text("\n".join([*roster, roster[1]]) + "\n")
    with pytest.raises(InputError, match=r"roster\.csv: row 22: student_id: duplicate 'S01'"):
        ingest.run(grade_cfg(root, exam_dir, f"roster={tmp_path / 'roster.csv'}"))
    with ExamStore.open(exam_dir) as store:  # nothing already graded was lost or changed
        assert (store.pages(), [i.as_dict() for i in store.items()]) == kept


def test_unreadable_pages_are_recorded_and_the_run_goes_on(tiny, recognizer, tmp_path):
    root, truth = tiny
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1754, 1240), dtype=np.uint8)).save(scans / "noise.png")
    good = next(s for s, t in truth.items() if t["student_id"] == "S02" and t["template_page"] == "0")
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(good.split("#")[0])
    pdf[int(good.split("#")[1]) - 1].render(scale=150 / 72).to_pil().save(scans / "s02.png")
    exam_dir = tmp_path / "exam"
    metrics = ingest.run(grade_cfg(root, exam_dir, f"scans={scans}", "stop_after=assign"), recognizer=recognizer)
    with ExamStore.open(exam_dir) as store:
        pages = {Path(p["source"].split("#")[0]).name: p for p in store.pages()}
    assert metrics["unreadable"] == 2
    assert pages["broken.png"]["status"] == "unreadable" and "cannot be decoded" in pages["broken.png"]["problem"]
    assert pages["noise.png"]["status"] == "unreadable" and "template page" in pages["noise.png"]["problem"]
    assert (pages["s02.png"]["status"], pages["s02.png"]["student_id"]) == ("assigned", "S02")


def test_the_command_prints_one_line_naming_the_file(tiny, tmp_path):
    root, _ = tiny
    bad = tmp_path / "scan.pdf"
    bad.write_bytes(b"GIF89a not a pdf")
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "grade_exam.py"), f"scans={bad}",
                          f"template={root / 'scans' / 'template.json'}", f"rubric={root / 'rubric.json'}",
                          f"roster={root / 'scans' / 'roster.csv'}", f"exam_dir={tmp_path / 'exam'}"],
                         capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "PYTHONPATH": str(REPO / "src")})
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == f"error: {bad}: (pdf): not a PDF (no %PDF- header)"


def test_one_pdf_per_student_without_booklet_codes_goes_by_file(tiny, recognizer, tmp_path):
    """Pages without an ID region follow the one ID page of their file when no code is read."""
    import pypdfium2 as pdfium

    root, truth = tiny
    folder = tmp_path / "per_student"
    folder.mkdir()
    src = pdfium.PdfDocument(root / "batch" / "scans.pdf")
    expected = {}
    for student in ("S01", "S02", "S03"):
        mine = [s for s, t in truth.items() if t["student_id"] == student and "scans.pdf" in s]
        doc = pdfium.PdfDocument.new()
        doc.import_pages(src, [int(s.rsplit("#", 1)[1]) - 1 for s in mine])
        doc.save(folder / f"{student.lower()}.pdf")
        expected.update({f"{folder / student.lower()}.pdf#{k + 1}": student for k in range(len(mine))})
    exam_dir = tmp_path / "exam"
    ingest.run(grade_cfg(root, exam_dir, f"scans={folder}", "page_code=null", "stop_after=assign"),
               recognizer=recognizer)
    with ExamStore.open(exam_dir) as store:
        got = {p["source"]: p["student_id"] for p in store.pages()}
        assert not store.page_codes()
    assert got == expected


@pytest.mark.slow
def test_a_killed_run_loses_nothing_finished_and_resumes(tiny, recognizer, tmp_path):
    """SIGKILL grade_exam while it ingests; the pages it had finished stay as they were, the rerun adds
    the rest once."""
    import os
    import signal
    import sqlite3
    import time

    root, truth = tiny
    exam_dir = tmp_path / "exam"
    cfg = grade_cfg(root, exam_dir, "stop_after=assign")
    args = [f"{k}={cfg[k]}" for k in ("scans", "template", "rubric", "roster", "exam_dir")]
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "grade_exam.py"), *args, "stop_after=assign"],
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    seen = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if (exam_dir / "exam.sqlite").exists():
            with sqlite3.connect(exam_dir / "exam.sqlite") as c:
                try:
                    seen = c.execute("SELECT COUNT(*) FROM pages").fetchone()[0]
                except sqlite3.OperationalError:
                    seen = 0
            if seen >= 2:
                break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= seen < 8
    with ExamStore.open(exam_dir) as store:
        before = store.pages()
    counting = CountingRecognizer(recognizer)
    ingest.run(cfg, recognizer=counting)
    with ExamStore.open(exam_dir) as store:
        after = {p["source"]: p for p in store.pages()}
    assert len(after) == 8 and set(after) == set(truth)
    for p in before:
        assert after[p["source"]]["page_id"] == p["page_id"] and after[p["source"]]["id_read"] == p["id_read"]
    assert counting.calls == 4 - sum(p["template_page"] == "0" for p in before)


class FixedTranscriptionRecognizer:
    """Not a recogniser: returns the same sentence for every line, so the stages after reading can be
    tested without a model."""

    name = "fixed-transcription"

    def __init__(self, text):
        self.text = text

    def recognize(self, images):
        return [self.text for _ in images]


def test_read_grade_risk_stages_fill_items_from_crops(tmp_path, embedder):
    """One assigned page: a written box is read and graded, a blank box scores 0 automatically."""
    from PIL import ImageDraw

    from grading.graders.similarity import SimilarityGrader
    from grading.roster import Student
    from htr.preprocess import PreprocessConfig
    from htr.segment import SegmenterConfig
    from inkgrade.workflow.template import TemplatePage

    rubric = load_rubric(SAMPLE / "rubric.json")
    rubric.questions = rubric.questions[:2]
    regions = [{"x": 10, "y": 10, "width": 600, "height": 200, "label": "Q1"},
               {"x": 10, "y": 300, "width": 600, "height": 200, "label": "Q2"}]
    exam_dir = tmp_path / "exam"
    store = ExamStore.open(exam_dir, create=True)
    store.upsert_students([{"student_id": "S01", "name": "Amelia Hartley"}])
    store.upsert_questions([{"question_id": q.id, "position": k, "max_points": q.max_points,
                             "granularity": q.granularity} for k, q in enumerate(rubric.questions)])
    (exam_dir / "crops" / "p1").mkdir(parents=True)
    written = Image.new("L", (600, 200), 240)
    ImageDraw.Draw(written).text((20, 60), "both balls fall with the same acceleration", fill=20,
                                 font_size=28)
    written.save(exam_dir / "crops" / "p1" / "Q1.png")
    Image.new("L", (600, 200), 240).save(exam_dir / "crops" / "p1" / "Q2.png")
    store.add_page("scan.pdf#1", "pages/p1.jpg", "assigned", template_page="0", student_id="S01")
    cfg = compose("grade_exam", ["scans=x", "template=x", "rubric=x", "roster=x", f"exam_dir={exam_dir}"])
    exam = ingest.Exam(cfg, rubric, [Student("S01", "Amelia Hartley", "10A")],
                       [TemplatePage("0", regions, np.full((600, 700), 255, np.uint8))], store, None)
    text = "The mass cancels so both balls have the same acceleration g and land together."
    reader = ingest.RegionReader(FixedTranscriptionRecognizer(text), PreprocessConfig(), SegmenterConfig())
    assert ingest.read_stage(exam, reader) == 2
    assert ingest.read_stage(exam, reader) == 0  # resumable: nothing left to read
    blank, answer = store.item("S01-Q2"), store.item("S01-Q1")
    assert (blank.status, blank.ai_points, blank.transcription) == ("auto", 0.0, "")
    assert blank.details["flags"] == ["empty"] and len(blank.details["missing"]) == 5  # Q2 has 5 concepts
    assert answer.transcription == text and answer.ai_points is None
    assert ingest.grade_stage(exam, lambda: SimilarityGrader(embedder)) == 1
    answer = store.item("S01-Q1")
    assert 0 < answer.ai_points <= 4 and answer.details["grader"] == "similarity"
    assert answer.details["justification"].endswith(f"rounded to 0.5: {answer.ai_points:g}.")
    assert answer.risk_reason.startswith("grader: ")
    assert ingest.risk_stage(exam) == "IRT needs 10 fully graded students, 1 so far"
    assert ingest.grade_stage(exam, lambda: pytest.fail("nothing is left to grade")) == 0
    store.close()
