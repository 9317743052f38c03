"""Page grading end to end against a real OpenAI-compatible server on 127.0.0.1 that plays recorded replies
(including a 429, malformed JSON, over-max and negative points, a reply naming no part, an unknown part)."""

from __future__ import annotations

import base64
import csv
import io
import json
import random

import pytest
from PIL import Image, ImageDraw

from inkbase.cli import compose
from inkbase.errors import ConfigError, InputError
from inkbase.jsonio import read_jsonl
from inkgrade.pages import grade
from inkgrade.pages.inputs import Page, find_pages, load_page_template, page_bytes
from inkgrade.pages.replay import ReplayServer, image_sha256
from inkgrade.pages.replay import load_recorded as replay_load
from inkgrade.store import ExamStore

STUDENTS = ("ana-lima", "bo-chen")  # '-' is not a base64 character: an id cannot hide inside image data
NAME_BOX = {"x": 10, "y": 10, "width": 120, "height": 30, "label": "NAME"}
TEMPLATE = {"0": [NAME_BOX, {"x": 10, "y": 60, "width": 180, "height": 60, "label": "A"},
                  {"x": 10, "y": 130, "width": 180, "height": 60, "label": "B"}],
            "1": [{"x": 10, "y": 10, "width": 180, "height": 150, "label": "C"}]}
RUBRIC = {"exam_id": "t", "questions": [
    {"id": "A", "text": "Name the unit of force.", "max_points": 2, "granularity": 0.5, "problem_type": "short",
     "reference_answer": "newton"},
    {"id": "B", "text": "State Newton's second law.", "max_points": 3, "granularity": 0.5, "problem_type": "long",
     "reference_answer": "F = m a"},
    {"id": "C", "text": "Sketch a free-body diagram.", "max_points": 1, "granularity": 0.5,
     "problem_type": "drawing", "reference_answer": "weight down, normal force up"}]}


def page_image(seed: int) -> Image.Image:
    im = Image.new("L", (200, 200), 255)
    draw = ImageDraw.Draw(im)
    draw.rectangle([12, 12, 120, 38], fill=0)  # "the name", inside the NAME box
    lengths = random.Random(seed).choices(range(20, 170), k=8)  # "handwriting": different on every page
    for k, length in enumerate(lengths):
        draw.line([(20, 70 + 12 * k), (20 + length, 70 + 12 * k)], fill=0, width=2)
    return im


def reply(*parts, transcription=None, bare=False) -> dict:
    grades = [{"problem_part": p, "awarded_points": v, "explanation": f"{p}: {v}"} for p, v in parts]
    data = grades if bare else {"grades": grades}
    if transcription is not None:
        data = {"transcription": transcription, "grades": grades}
    return {"content": json.dumps(data), "usage": {"prompt_tokens": 1000, "completion_tokens": 100}}


@pytest.fixture
def exam(tmp_path):
    pages = tmp_path / "pages"
    pages.mkdir()
    for s, sid in enumerate(STUDENTS):
        for k in range(2):
            page_image(10 * s + k).save(pages / f"{sid}_p{k}.png")
    (pages / "cy-dorn_p0.png").write_text("this is not an image")
    page_image(99).save(pages / "bo-chen_p2.png")  # a page the template does not have
    (tmp_path / "rubric.json").write_text(json.dumps(RUBRIC))
    (tmp_path / "template.json").write_text(json.dumps(TEMPLATE))
    return tmp_path


def keys(folder, template) -> dict[str, str]:
    """Each page's key as the server sees it: the hash of the image as sent (identity box blanked)."""
    tpl = load_page_template(template)
    out = {}
    for p in find_pages(folder, 150).pages:
        if p.student_id in STUDENTS:
            out[p.key] = image_sha256(*page_bytes(p, 150, tpl.identity_boxes(p.index)))
    return out


def recorded(exam) -> dict:
    k = keys(exam / "pages", exam / "template.json")
    return {
        k["ana-lima:p0"]: [{"status": 429, "headers": {"Retry-After": "0.01"}},
                           reply(("A", 2), ("B", 1.5)), reply(("A", 5), ("B", -1))],
        k["ana-lima:p1"]: [{"content": "Sure! Here are the grades: [{"}, reply(("C", 1)), reply(("C", 0.5))],
        k["bo-chen:p0"]: [reply(), reply(("b", 2), ("Z", 1), bare=True)],
        k["bo-chen:p1"]: [reply(("C", 1))],
    }


def config(exam, base_url, out, *extra):
    return compose("grade_pages", [f"pages={exam / 'pages'}", f"rubric={exam / 'rubric.json'}",
                                   f"template={exam / 'template.json'}", "llm=vllm", f"llm.base_url={base_url}",
                                   "llm.model=vision", "llm.timeout_s=5", "llm.max_retries=2", "runs=2",
                                   f"paths.cache_dir={exam / 'cache'}", f"out_dir={out}", *extra])


def rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_pages_graded_end_to_end(exam):
    with ReplayServer(recorded(exam)) as srv:
        metrics = grade.run(config(exam, srv.base_url, exam / "run1"))
        sent = list(srv.recorded.bodies)
        # Another out_dir: every reply comes from the cache, nothing is sent.
        again = grade.run(config(exam, srv.base_url, exam / "run2"))
        assert len(srv.recorded.bodies) == len(sent) and again["llm_usage"]["cache_hits"] == 8
    out = exam / "run1"
    points = {(r["student_id"], r["item_id"], r["run"]): float(r["points"]) for r in rows(out / "grades.csv")}
    assert points == {
        ("ana-lima", "A", "1"): 2.0, ("ana-lima", "B", "1"): 1.5, ("ana-lima", "C", "1"): 1.0,
        ("ana-lima", "A", "2"): 2.0, ("ana-lima", "B", "2"): 0.0, ("ana-lima", "C", "2"): 0.5,  # clamped
        ("bo-chen", "A", "1"): 0.0, ("bo-chen", "B", "1"): 0.0, ("bo-chen", "C", "1"): 1.0,  # no part named
        ("bo-chen", "A", "2"): 0.0, ("bo-chen", "B", "2"): 2.0, ("bo-chen", "C", "2"): 1.0,
        ("cy-dorn", "A", "1"): 0.0, ("cy-dorn", "B", "1"): 0.0, ("cy-dorn", "C", "1"): 0.0,  # not an image
        ("cy-dorn", "A", "2"): 0.0, ("cy-dorn", "B", "2"): 0.0, ("cy-dorn", "C", "2"): 0.0}
    first = rows(out / "grades.csv")[0]
    assert list(first) == ["student_id", "item_id", "run", "points", "max_points", "problem_type"]
    totals = {(r["student_id"], r["run"]): float(r["points"]) for r in rows(out / "totals.csv")}
    assert totals[("ana-lima", "1")] == 4.5 and totals[("ana-lima", "2")] == 2.5 and totals[("bo-chen", "2")] == 3.0

    flags = {(r["student_id"], r["run"], r["flag"]) for r in rows(out / "flags.csv")}
    assert {("ana-lima", "2", "clamped:A:5>2"), ("ana-lima", "2", "clamped:B:-1<0"),
            ("ana-lima", "1", "retried"), ("bo-chen", "1", "no_part"), ("bo-chen", "1", "missing:A"),
            ("bo-chen", "1", "missing:B"), ("bo-chen", "2", "unknown_part:Z"),
            ("bo-chen", "2", "missing:A")} <= flags
    bad = sorted((r for r in rows(out / "flags.csv") if r["flag"].startswith("bad_input")), key=lambda r: r["source"])
    assert len(bad) == 2 and bad[1]["source"].endswith("cy-dorn_p0.png") and "not an image" in bad[1]["flag"]
    assert bad[0]["source"].endswith("bo-chen_p2.png") and "not in template" in bad[0]["flag"]
    assert not any(f[0] == "bo-chen" and f[2].startswith("missing:C") for f in flags)

    replies = read_jsonl(out / "replies.jsonl")
    assert len(replies) == 8 and all(r["status"] == "graded" for r in replies)
    ana0 = next(r for r in replies if r["page"] == "ana-lima:p0" and r["run"] == 1)
    assert ana0["requests"] == 2 and ana0["model"] == "vision" and len(ana0["request_hash"]) == 64
    assert ana0["prompt_tokens"] == 1000 and json.loads(ana0["raw_reply"])["grades"][0]["awarded_points"] == 2
    assert metrics["per_run"]["1"]["prompt_tokens"] == 4000 and metrics["per_run"]["2"]["pages_graded"] == 4
    assert metrics["llm_usage"]["requests"] == 10 and metrics["complete"] is True  # 8 replies + 429 + malformed
    assert metrics["bad_inputs"] == 2 and metrics["flags"]["clamped"] == 2

    # Pseudonymised: no student id in anything sent, the page is labelled by pseudonym, the NAME box blanked.
    pseudonyms = {r["student_id"]: r["pseudonym"] for r in rows(out / "pseudonyms.csv")}
    assert all(sid.encode() not in body for body in sent for sid in (*STUDENTS, "cy-dorn"))
    assert any(pseudonyms["ana-lima"].encode() in body for body in sent)
    label = f"Page 1 of script {pseudonyms['ana-lima']}".encode()
    url = json.loads(next(b for b in sent if label in b))["messages"][-1]["content"][1]["image_url"]["url"]
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    box = image.crop((NAME_BOX["x"], NAME_BOX["y"], NAME_BOX["x"] + NAME_BOX["width"],
                      NAME_BOX["y"] + NAME_BOX["height"]))
    assert box.getextrema() == (255, 255)
    assert again["llm_usage"]["requests"] == 0 and again["per_run"] == metrics["per_run"]
    assert rows(exam / "run2" / "grades.csv") == rows(out / "grades.csv")


def test_interrupted_run_resumes_without_asking_again(exam):
    replies = recorded(exam)
    k = keys(exam / "pages", exam / "template.json")
    for page in ("ana-lima:p0", "ana-lima:p1"):  # no retries in this run: drop the 429 and the malformed reply
        replies[k[page]] = replies[k[page]][1:]
    good = replies[k["bo-chen:p1"]]
    replies[k["bo-chen:p1"]] = [{"status": 500}]
    with ReplayServer(replies) as srv:
        cfg = config(exam, srv.base_url, exam / "run", "llm.cache=false", "llm.max_retries=0",
                     "max_consecutive_failures=1", "llm.concurrency=1")
        with pytest.raises(ConfigError, match="in a row"):
            grade.run(cfg)
        kept = read_jsonl(exam / "run" / "replies.jsonl")
        assert [r["status"] for r in kept] == ["graded", "graded", "graded", "failed"]
        before = len(srv.recorded.bodies)
        srv.recorded.replies[k["bo-chen:p1"]] = good
        metrics = grade.run(cfg)
        after = [json.loads(b) for b in srv.recorded.bodies[before:]]
    # Run 1's three graded pages are not asked again: bo-chen p1 (run 1), then the four pages of run 2.
    assert len(after) == 5 and metrics["complete"] is True
    assert len(read_jsonl(exam / "run" / "replies.jsonl")) == 9  # the failed line is superseded, not rewritten


def test_exam_dir_pages_and_grades_go_to_the_store(exam):
    exam_dir = exam / "exam"
    (exam_dir / "scans").mkdir(parents=True)
    with ExamStore.open(exam_dir, create=True) as store:
        store.upsert_students([{"student_id": s} for s in STUDENTS])
        for sid in STUDENTS:
            for k in range(2):
                name = f"scans/{sid}-{k}.png"
                Image.open(exam / "pages" / f"{sid}_p{k}.png").save(exam_dir / name)
                store.add_page(f"scan.pdf#{sid}{k}", name, "assigned", template_page=str(k), student_id=sid)
        store.add_page("scan.pdf#x", "scans/x.png", "needs_identity")
        store.set_meta("template", "template.json")
    (exam_dir / "template.json").write_text(json.dumps(TEMPLATE))
    with ReplayServer(recorded(exam)) as srv:
        cfg = compose("grade_pages", [f"pages={exam_dir}", f"rubric={exam / 'rubric.json'}", "llm=vllm",
                                      f"llm.base_url={srv.base_url}", "llm.model=vision", "runs=2",
                                      "llm.max_retries=2", f"paths.cache_dir={exam / 'cache'}",
                                      f"out_dir={exam / 'run'}"])
        metrics = grade.run(cfg)
    assert metrics["pages"] == 4 and metrics["store_items"] == 6
    with ExamStore.open(exam_dir) as store:
        items = {i.answer_id: i for i in store.items(kind="page_part")}
    assert set(items) == {f"{s}:{q}:page" for s in STUDENTS for q in "ABC"}
    a = items["ana-lima:A:page"]  # runs 2 and 2 (clamped from 5): flagged, so risk 1
    assert a.ai_points == 2.0 and a.risk == 1.0 and "clamped" in a.risk_reason and a.page_id is not None
    c = items["ana-lima:C:page"]  # runs 1 and 0.5: no flag, risk is the spread over the maximum
    assert c.ai_points == 1.0 and c.risk == pytest.approx(0.5) and c.details["runs"] == {"1": 1.0, "2": 0.5}
    assert items["bo-chen:C:page"].risk == 0.0 and items["bo-chen:C:page"].ai_points == 1.0


def test_rubric_pages_must_match_the_exam(exam):
    rubric_dir = exam / "rubric_pages"
    rubric_dir.mkdir()
    for k in range(3):
        page_image(50 + k).save(rubric_dir / f"rubric_{k + 1}.png")
    cfg = compose("grade_pages", [f"pages={exam / 'pages'}", f"rubric={rubric_dir}", f"parts={exam / 'rubric.json'}",
                                  f"template={exam / 'template.json'}", "llm=vllm", "llm.base_url=http://127.0.0.1:9/v1",
                                  "llm.model=m", f"out_dir={exam / 'run'}"])
    with pytest.raises(InputError, match=r"rubric_pages.*3 rubric pages, but the exam has 2"):
        grade.run(cfg)
    assert not (exam / "run").exists()


def test_rubric_page_images_go_with_their_student_page(exam):
    rubric_dir = exam / "rubric_pages"
    rubric_dir.mkdir()
    for k in range(2):
        page_image(50 + k).save(rubric_dir / f"rubric_{k + 1}.png")
    with ReplayServer({"*": [reply(("A", 1), ("B", 1), transcription="F = m a")]}) as srv:
        cfg = compose("grade_pages", [f"pages={exam / 'pages'}", f"rubric={rubric_dir}",
                                      f"parts={exam / 'rubric.json'}", f"template={exam / 'template.json'}",
                                      "llm=vllm", f"llm.base_url={srv.base_url}", "llm.model=m", "runs=1",
                                      "transcribe_first=true", "llm.max_retries=2",
                                      f"paths.cache_dir={exam / 'cache'}", f"out_dir={exam / 'run'}"])
        grade.run(cfg)
        bodies = [json.loads(b) for b in srv.recorded.bodies]
    second = bodies[-1]["messages"][-1]["content"]
    assert [p["type"] for p in second] == ["text", "image_url", "image_url"]
    sent_rubric = {b["messages"][-1]["content"][2]["image_url"]["url"][-40:] for b in bodies}
    assert len(sent_rubric) == 2  # page 0 and page 1 carry different rubric pages
    assert "transcription" in bodies[0]["response_format"]["json_schema"]["schema"]["properties"]


def test_one_pdf_per_student_is_split_into_pages(tmp_path):
    first, second = page_image(1).convert("RGB"), page_image(2).convert("RGB")
    first.save(tmp_path / "ana-lima.pdf", save_all=True, append_images=[second], resolution=72)
    (tmp_path / "notes.txt").write_text("x")
    found = find_pages(tmp_path, 72)
    assert [(p.student_id, p.index, p.pdf_page) for p in found.pages] == [("ana-lima", 0, 0), ("ana-lima", 1, 1)]
    assert [p.source.endswith("notes.txt") for p in found.problems] == [True]
    data, mime = page_bytes(found.pages[1], 72, [])
    image = Image.open(io.BytesIO(data))
    assert mime == "image/png" and image.size == (200, 200)
    assert page_bytes(Page("ana-lima", 1, tmp_path / "ana-lima.pdf", pdf_page=1), 72)[0] == data


def test_recorded_reply_server_off_loopback_needs_a_token(tmp_path, monkeypatch):
    from inkgrade.pages import replay

    (tmp_path / "replies.jsonl").write_text(json.dumps({"image_sha256": "*", "replies": [reply(("A", 1))]}) + "\n")
    monkeypatch.delenv("REPLAY_TOKEN", raising=False)
    cfg = compose("serve_recorded_replies", [f"replies={tmp_path / 'replies.jsonl'}", "host=0.0.0.0",
                                             "token_env=REPLAY_TOKEN", f"out_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match="token"):
        replay.serve(cfg)


@pytest.mark.slow  # renders a script (about 12 s); test_pages_graded_end_to_end covers grading itself
def test_simulated_replies_reach_grades_csv_unchanged(tmp_path):
    """The experiment's chain on one rendered script: the simulated awards come back as grades.csv rows."""
    from inkgrade.pages import simulate

    inputs = tmp_path / "inputs"
    cfg = compose("simulate_page_grading", ["runs=2", "scripts.max_students=1", f"out_dir={inputs}"])
    metrics = simulate.run(cfg)
    assert metrics == {"students": 1, "pages": 2, "runs": 2, "simulated_replies": 4, "error_entries": 0,
                       "human_rows": 5}
    recorded_lines = read_jsonl(inputs / "recorded_replies.jsonl")
    expected = {}
    for line in recorded_lines:
        for run, entry in enumerate(line["replies"], start=1):
            for g in json.loads(entry["content"])["grades"]:
                top = {"Q3": 3.0, "Q5": 3.0}.get(g["problem_part"], 4.0)
                expected[(g["problem_part"], str(run))] = min(g["awarded_points"], top)
    with ReplayServer(replay_load(inputs / "recorded_replies.jsonl")) as srv:
        grade.run(compose("grade_pages", [f"pages={inputs / 'pages'}", f"template={inputs / 'template.json'}",
                                          f"rubric={cfg.exam.rubric}", "llm=vllm", f"llm.base_url={srv.base_url}",
                                          "llm.model=recorded", "runs=2", f"paths.cache_dir={tmp_path / 'cache'}",
                                          f"out_dir={tmp_path / 'grade'}"]))
    got = {(r["item_id"], r["run"]): float(r["points"]) for r in rows(tmp_path / "grade" / "grades.csv")}
    assert got == expected and len(got) == 10
    human = rows(inputs / "human.csv")
    assert [r["item_id"] for r in human] == ["Q1", "Q2", "Q3", "Q4", "Q5"] and human[0]["student_id"] == "S01"


def test_without_a_template_every_page_gets_the_whole_rubric(exam):
    found = {p.key: p for p in find_pages(exam / "pages", 150).pages}
    key = {k: image_sha256(*page_bytes(p, 150)) for k, p in found.items() if p.student_id in STUDENTS}
    replies = {key["ana-lima:p0"]: [reply(("A", 2), ("B", 3))],
               key["ana-lima:p1"]: [reply(("C", 1), ("A", 1))],  # A again on the second page
               key["bo-chen:p0"]: [reply(("A", 1.5))],
               key["bo-chen:p1"]: [reply(("C", 0.5))],
               key["bo-chen:p2"]: [reply()]}
    with ReplayServer(replies) as srv:
        cfg = compose("grade_pages", [f"pages={exam / 'pages'}", f"rubric={exam / 'rubric.json'}", "llm=vllm",
                                      f"llm.base_url={srv.base_url}", "llm.model=m", "runs=1",
                                      f"paths.cache_dir={exam / 'cache'}", f"out_dir={exam / 'run'}"])
        grade.run(cfg)
        texts = [json.loads(b)["messages"][-1]["content"][0]["text"] for b in srv.recorded.bodies]
    assert len(texts) == 5 and all("Part A" in t and "Part B" in t and "Part C" in t for t in texts)
    points = {(r["student_id"], r["item_id"]): float(r["points"]) for r in rows(exam / "run" / "grades.csv")}
    assert points[("ana-lima", "A")] == 2.0 and points[("ana-lima", "B")] == 3.0 and points[("ana-lima", "C")] == 1.0
    assert points[("bo-chen", "A")] == 1.5 and points[("bo-chen", "B")] == 0.0 and points[("bo-chen", "C")] == 0.5
    flags = {(r["student_id"], r["item_id"], r["flag"]) for r in rows(exam / "run" / "flags.csv")}
    # Parts a page leaves out are not missing; a part no page of the student graded is.
    assert ("bo-chen", "B", "missing:B") in flags and ("ana-lima", "A", "several_pages:A") in flags
    assert ("bo-chen", "", "no_part") in flags
    assert not any(f[2].startswith("missing") for f in flags if f[0] == "ana-lima")
