"""A small graded exam built directly with ExamStore: six students of the sample exam, its three
questions, handwritten answer crops and whole pages rendered here, one empty answer, one student
without their second page and one page whose ID matched nobody."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from htr.synth.fonts import list_fonts
from inkgrade.review.benchmark import render_answer
from inkgrade.store import ExamStore

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "src" / "grading" / "sample_exam"
STUDENTS = ["S01", "S02", "S03", "S04", "S05", "S06"]
EMPTY = "S06-Q3"  # nothing written: the app scores it 0 by itself
NO_SECOND_PAGE = "S05"
REASONS = [
    "AI points far from what this student's other answers predict (IRT residual {r:.2f})",
    "grader unsure: concept score and semantic score disagree",
    "transcription uncertain: short, low-confidence lines",
    "score sits on a rounding boundary",
]


def build_exam(exam_dir: Path) -> dict:
    """Write the exam; return what the tests check against."""
    rubric = json.loads((SAMPLE / "rubric.json").read_text())
    questions = rubric["questions"]
    answers = {}
    for line in (SAMPLE / "answers.jsonl").read_text().splitlines():
        a = json.loads(line)
        answers[a["answer_id"]] = a
    rng = np.random.default_rng(0)
    font = next(f for f in list_fonts("train") if not f.uppercase_only)
    (exam_dir / "pages").mkdir(parents=True)
    (exam_dir / "crops").mkdir()
    store = ExamStore.open(exam_dir, create=True)
    store.set_meta("rubric", str(SAMPLE / "rubric.json"))
    store.set_meta("exam_id", rubric["exam_id"])
    roster = {r.split(",")[0]: r.split(",")[1] for r in (SAMPLE / "roster.csv").read_text().splitlines()[1:]}
    store.upsert_students([{"student_id": s, "name": roster[s], "class": "10A"} for s in STUDENTS])
    store.upsert_questions([{"question_id": q["id"], "position": k, "text": q["text"], "max_points": q["max_points"],
                             "granularity": q["granularity"], "problem_type": q["problem_type"]}
                            for k, q in enumerate(questions)])
    n = 0
    for s in STUDENTS:
        page = Image.new("L", (900, 1270), 255)
        draw = ImageDraw.Draw(page)
        draw.text((60, 40), f"Student ID: {s}", fill=0)
        y = 90
        crops = {}
        for q in questions:
            aid = f"{s}-{q['id']}"
            text = "" if aid == EMPTY else answers[aid]["text"]
            crop = render_answer(text, font, rng)
            crops[q["id"]] = crop
            draw.text((60, y), f"{q['id']} ({q['max_points']:g} points)", fill=0)
            draw.rectangle((50, y + 18, 50 + crop.width + 10, y + 18 + crop.height + 10), outline=120)
            page.paste(crop, (55, y + 23))
            y += crop.height + 60
        page.save(exam_dir / "pages" / f"{s}_p0.png")
        page_id = store.add_page(f"scan.pdf#{n}", f"pages/{s}_p0.png", "assigned", template_page="0", student_id=s,
                                 id_read=s, id_score=100.0)
        n += 1
        if s != NO_SECOND_PAGE:
            Image.new("L", (900, 1270), 255).save(exam_dir / "pages" / f"{s}_p1.png")
            store.add_page(f"scan.pdf#{n}", f"pages/{s}_p1.png", "assigned", template_page="1", student_id=s,
                           id_read=s, id_score=100.0)
            n += 1
        for q in questions:
            aid = f"{s}-{q['id']}"
            crops[q["id"]].save(exam_dir / "crops" / f"{aid}.png")
            found = [] if aid == EMPTY else answers[aid]["concepts"]
            concept_ids = [c["id"] for c in q["concepts"]]
            step = q["granularity"]
            reference = 0.0 if aid == EMPTY else answers[aid]["reference_points"]
            ai = float(min(q["max_points"], max(0.0, reference + step * int(rng.integers(-2, 3)))))
            risk = 0.0 if aid == EMPTY else round(float(rng.uniform(0.05, 0.95)), 2)
            store.put_item({
                "answer_id": aid, "student_id": s, "question_id": q["id"], "page_id": page_id,
                "crop": f"crops/{aid}.png", "transcription": "" if aid == EMPTY else answers[aid]["text"],
                "ai_points": None if aid == EMPTY else ai, "max_points": q["max_points"], "granularity": step,
                "risk": risk, "risk_reason": "" if aid == EMPTY else REASONS[int(risk * 10) % 4].format(r=risk * 2),
                "details": {"matched": found, "missing": [c for c in concept_ids if c not in found],
                            "justification": f"{len(found)} of {len(concept_ids)} rubric concepts found"}})
    Image.new("L", (900, 1270), 255).save(exam_dir / "pages" / "unknown_p0.png")
    store.add_page(f"scan.pdf#{n}", "pages/unknown_p0.png", "needs_identity", template_page="0", id_read="S9?",
                   id_score=41.0, problem="ID 'S9?' matches no student")
    store.close()
    return {"questions": [q["id"] for q in questions], "max": {q["id"]: q["max_points"] for q in questions},
            "granularity": {q["id"]: q["granularity"] for q in questions}}


@pytest.fixture(scope="session")
def built_exam(tmp_path_factory) -> tuple[Path, dict]:
    exam_dir = tmp_path_factory.mktemp("built") / "exam"
    return exam_dir, build_exam(exam_dir)


@pytest.fixture
def exam(built_exam, tmp_path) -> tuple[Path, dict]:
    """A fresh copy of the built exam for each test (rendering the handwriting once is enough)."""
    exam_dir = tmp_path / "exam"
    shutil.copytree(built_exam[0], exam_dir)
    return exam_dir, built_exam[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def review_server():
    """Starts ``scripts/review.py`` as a real uvicorn process on a free port (``start(exam_dir, out_dir,
    *overrides)`` -> (process, url), once it answers); kills what is still running at the end."""
    procs: list[subprocess.Popen] = []

    def start(exam_dir: Path, out_dir: Path, *args: str) -> tuple[subprocess.Popen, str]:
        proc, url = start_server(exam_dir, out_dir, *args)
        procs.append(proc)
        return proc, url

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=20)


def start_server(exam_dir: Path, out_dir: Path, *args: str) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    cmd = [sys.executable, str(REPO / "scripts" / "review.py"), f"exam_dir={exam_dir}", f"port={port}",
           f"out_dir={out_dir}", "warm_up=false", "reviewer=browser-test", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"review server exited: {proc.stdout.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/api/questions", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("review server did not start within 60 s")
