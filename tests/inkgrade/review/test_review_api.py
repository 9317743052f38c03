"""The review app's JSON API and its security rules, with FastAPI's test client on a store built here."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from inkgrade.review.app import ReviewSettings, create_app, score_empty_answers
from inkgrade.store import ExamStore

LOCAL = "http://127.0.0.1"


@pytest.fixture
def store(exam):
    s = ExamStore.open(exam[0])
    yield s
    s.close()


@pytest.fixture
def client(store):
    return TestClient(create_app(store, ReviewSettings(reviewer="ana")), base_url=LOCAL)


def first_item(client, question="Q1"):
    return next(i for i in client.get("/api/items", params={"question": question}).json() if i["status"] == "unreviewed")


def test_questions_list_progress(client, exam):
    qs = client.get("/api/questions").json()
    assert [q["question_id"] for q in qs] == exam[1]["questions"]
    q3 = next(q for q in qs if q["question_id"] == "Q3")
    # S06 wrote nothing for Q3 and S04's sample answer is blank: both scored 0 without review.
    assert (q3["n_items"], q3["n_auto"], q3["n_done"], q3["n_unreviewed"]) == (6, 2, 2, 4)


def test_items_come_most_doubtful_first_with_their_reason(client):
    items = client.get("/api/items", params={"question": "Q1"}).json()
    assert len(items) == 6
    assert [i["risk"] for i in items] == sorted((i["risk"] for i in items), reverse=True)
    first = items[0]
    for key in ("answer_id", "student_id", "question_id", "ai_points", "points", "max_points", "status", "version"):
        assert key in first
    assert first["risk_reason"] and first["crop_url"] == f"/files/crops/{first['answer_id']}.png"
    s01 = next(i for i in items if i["student_id"] == "S01")
    assert [c["label"] for c in s01["matched"]][:2] == ["gravitational force proportional to mass",
                                                        "acceleration equals force divided by mass"]
    assert client.get("/api/items", params={"question": "Q9"}).status_code == 404


def test_empty_answers_score_zero_automatically(client, store):
    item = store.item("S06-Q3")
    assert (item.points, item.status) == (0.0, "auto")
    assert [(a["who"], a["new_points"]) for a in store.audit("S06-Q3")] == [("inkgrade (empty answer)", 0.0)]
    assert score_empty_answers(store) == 0  # a restarted app scores nothing twice


def test_review_saves_at_once_with_an_audit_row(client, store):
    item = first_item(client)
    res = client.post(f"/api/items/{item['answer_id']}", json={"points": 2.5, "version": item["version"]})
    assert res.status_code == 200
    assert (res.json()["points"], res.json()["status"], res.json()["version"]) == (2.5, "reviewed", item["version"] + 1)
    # A second connection sees it: the change is committed, not held by the app.
    with ExamStore.open(store.exam_dir) as other:
        assert other.item(item["answer_id"]).points == 2.5
    audit = client.get("/api/audit", params={"answer_id": item["answer_id"]}).json()
    assert [(a["who"], a["old_points"], a["new_points"], a["old_status"], a["new_status"]) for a in audit] == [
        ("ana", None, 2.5, "unreviewed", "reviewed")]
    assert audit[0]["at"]
    res = client.post(f"/api/items/{item['answer_id']}", json={"points": 3, "version": item["version"] + 1},
                      headers={"X-Inkgrade-Reviewer": "ben"})
    assert res.status_code == 200
    audit = client.get("/api/audit", params={"answer_id": item["answer_id"]}).json()
    assert [(a["who"], a["old_points"], a["new_points"]) for a in audit][1] == ("ben", 2.5, 3.0)


def test_stale_version_is_409_and_changes_nothing(client, store):
    item = first_item(client)
    assert client.post(f"/api/items/{item['answer_id']}", json={"points": 1, "version": item["version"]}).status_code == 200
    res = client.post(f"/api/items/{item['answer_id']}", json={"points": 4, "version": item["version"]})
    assert res.status_code == 409
    assert res.json()["detail"]["current"]["points"] == 1.0
    assert store.item(item["answer_id"]).points == 1.0
    assert len(store.audit(item["answer_id"])) == 1


@pytest.mark.parametrize("points, problem", [(-0.5, "outside"), (4.5, "outside"), (1.25, "not a multiple of 0.5"),
                                             (float("nan"), "outside")])
def test_points_outside_the_range_or_off_the_granularity_are_422(client, store, points, problem):
    item = first_item(client)
    body = json.dumps({"points": points, "version": item["version"]})  # json.dumps writes NaN as a bare literal
    res = client.post(f"/api/items/{item['answer_id']}", content=body, headers={"Content-Type": "application/json"})
    assert res.status_code == 422 and problem in res.json()["detail"]
    assert store.item(item["answer_id"]).version == item["version"] and store.audit(item["answer_id"]) == []


def test_granularity_of_a_quarter_point_question(client):
    item = first_item(client, "Q3")
    assert client.post(f"/api/items/{item['answer_id']}", json={"points": 1.75, "version": item["version"]}).status_code == 200


def test_skip_marks_skipped_and_keeps_points(client, store):
    item = first_item(client)
    res = client.post(f"/api/items/{item['answer_id']}", json={"status": "skipped", "version": item["version"]})
    assert res.status_code == 200 and res.json()["status"] == "skipped"
    assert store.item(item["answer_id"]).points is None
    assert client.post(f"/api/items/{item['answer_id']}", json={"version": item["version"] + 1}).status_code == 422
    assert client.post("/api/items/nope", json={"points": 1, "version": 1}).status_code == 404


def test_completion_check(client, store):
    done = client.get("/api/completion").json()
    assert not done["complete"]
    assert done["unreviewed"]["count"] == 27  # 30 answers, three of them blank (S04-Q3, S06-Q3, S06-Q4)
    assert done["missing_pages"] == [{"student_id": "S05", "name": "Lena Fischer", "missing": ["1"]}]
    assert [p["id_read"] for p in done["unmatched_pages"]] == ["S9?"]
    page = client.get("/").text
    assert "S05 (page 1)" in page and "S9?" in page
    for item in store.items():
        if item.status == "unreviewed":
            client.post(f"/api/items/{item.answer_id}", json={"points": 0, "version": item.version})
    assert client.get("/api/completion").json()["unreviewed"]["count"] == 0


def test_pages_render(client):
    assert "Queue" in client.get("/review/Q2").text
    assert client.get("/review/Q9").status_code == 404
    assert "Grade one answer" in client.get("/single").text
    assert client.get("/files/pages/S01_p0.png").headers["content-type"] == "image/png"


# ------------------------------------------------------------------ security
@pytest.mark.parametrize("path", [
    "/files/../exam.sqlite", "/files/..%2Fexam.sqlite", "/files/%2e%2e/%2e%2e/etc/passwd",
    "/files/..%2F..%2F..%2Fetc%2Fpasswd", "/files/%2Fetc%2Fpasswd", "/files//etc/passwd",
    "/files/crops/..%2F..%2Foutside.png", "/files/exam.sqlite", "/files/C:%5CWindows%5Cwin.ini",
    "/files/crops%2F..%2F..%2Foutside.png", "/files/%252e%252e%252foutside.png", "/files/link.png",
])
def test_file_paths_never_leave_exam_dir(client, exam, path):
    exam_dir = exam[0]
    Image.new("L", (4, 4)).save(exam_dir.parent / "outside.png")
    (exam_dir / "link.png").symlink_to(exam_dir.parent / "outside.png")
    res = client.get(path)
    assert res.status_code == 404, path
    assert b"SQLite" not in res.content and b"root:" not in res.content


def test_without_a_token_only_loopback_host_names_are_served(store):
    client = TestClient(create_app(store), base_url="http://attacker.example")
    assert client.get("/api/questions").status_code == 400


def test_with_a_token_every_request_needs_it(store):
    app = create_app(store, ReviewSettings(token="s3cret-token"))
    client = TestClient(app, base_url="http://192.168.1.5:8000")
    for path in ("/", "/api/questions", "/files/pages/S01_p0.png", "/static/review.js", "/review/Q1"):
        assert client.get(path).status_code == 401, path
    assert client.post("/api/items/S01-Q1", json={"points": 1, "version": 1}).status_code == 401
    assert client.get("/api/questions", headers={"X-Inkgrade-Token": "wrong"}).status_code == 401
    assert client.get("/api/questions", headers={"X-Inkgrade-Token": "s3cret-token"}).status_code == 200
    assert client.get("/api/questions", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    assert client.get("/?token=wrong").status_code == 401
    login = client.get("/review/Q1?token=s3cret-token", follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == "/review/Q1"
    assert "httponly" in login.headers["set-cookie"].lower()
    assert client.get("/api/questions").status_code == 200  # the cookie from the login
    assert store.item("S01-Q1").version == 1


def tiny_png(size=(40, 20)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full(size[::-1], 255, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


RUBRIC = json.dumps({"id": "Q1", "text": "t", "max_points": 2, "granularity": 1, "reference_answer": "r",
                     "concepts": [{"id": "a", "label": "alpha", "weight": 1}]}).encode()


@pytest.mark.parametrize("image, rubric, status, detail", [
    (b"not an image at all", RUBRIC, 422, "image: not a readable image"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", RUBRIC, 422, "image: not a readable image"),
    (tiny_png(), b"{not json", 422, "rubric: not JSON"),
    (tiny_png(), json.dumps({"id": "Q1"}).encode(), 422, "rubric: text"),
    (tiny_png(), RUBRIC, 503, "no recogniser"),
])
def test_single_answer_upload_checks(store, image, rubric, status, detail):
    client = TestClient(create_app(store), base_url=LOCAL)
    res = client.post("/api/grade", files={"image": ("a.png", image), "rubric": ("r.json", rubric)})
    assert res.status_code == status and detail in res.json()["detail"]


def test_single_answer_upload_size_limit(store):
    client = TestClient(create_app(store, ReviewSettings(max_upload_bytes=1000)), base_url=LOCAL)
    big = tiny_png((900, 900)) + b"\0" * 2000
    res = client.post("/api/grade", files={"image": ("a.png", big), "rubric": ("r.json", RUBRIC)})
    assert res.status_code == 413
