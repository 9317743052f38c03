"""export_results on a small hand-built store: reports with final points (the reviewer's over the AI's),
scored PDFs that open, Good/Average/Weak samples, emails with the PDF attached, and SMTP sending
against a local server: each student once, throttled, resumable."""

from __future__ import annotations

import csv
import email
import email.policy
import time
from pathlib import Path

import pytest
from PIL import Image

from inkbase.cli import compose
from inkgrade.store import ExamStore
from inkgrade.workflow.export import Throttle, export, pick_samples

REGIONS = {"0": [{"x": 20, "y": 20, "width": 200, "height": 40, "label": "ID"},
                 {"x": 20, "y": 100, "width": 300, "height": 150, "label": "Q1"}],
           "1": [{"x": 20, "y": 100, "width": 300, "height": 150, "label": "Q2"}]}
AI = {"S1": (4.0, 2.0), "S2": (1.0, 0.0), "S3": (2.0, 1.5), "S4": (3.0, 1.0)}


@pytest.fixture
def exam_dir(tmp_path):
    d = tmp_path / "exam"
    with ExamStore.open(d, create=True) as store:
        store.upsert_students([{"student_id": s, "name": f"Student {s}", "class": "A",
                                "email": f"{s.lower()}@school.test" if s != "S4" else ""} for s in AI])
        store.upsert_questions([{"question_id": "Q1", "position": 0, "max_points": 4, "granularity": 0.5},
                                {"question_id": "Q2", "position": 1, "max_points": 2, "granularity": 0.5}])
        store.set_meta("regions", REGIONS)
        store.set_meta("exam_id", "test-exam")
        (d / "pages").mkdir()
        for s, (q1, q2) in AI.items():
            for k in (1, 0):  # stored in reverse: the PDF must still start with template page 0
                image = f"pages/{s}_{k}.jpg"
                Image.new("L", (400, 560), 240).save(d / image)
                pid = store.add_page(f"scan.pdf#{s}{k}", image, "assigned", template_page=str(k), student_id=s)
                q, p = ("Q1", q1) if k == 0 else ("Q2", q2)
                store.put_item({"answer_id": f"{s}-{q}", "student_id": s, "question_id": q, "page_id": pid,
                                "ai_points": p, "max_points": 4 if q == "Q1" else 2, "granularity": 0.5})
        store.add_page("scan.pdf#x", "pages/none.jpg", "needs_identity", template_page="0")
        item = store.item("S2-Q1")
        store.set_points("S2-Q1", 3.5, item.version, who="reviewer")  # the reviewer's points win
    return d


def export_cfg(exam_dir: Path, *extra: str):
    return compose("export_results", [f"exam_dir={exam_dir}", "mail.address_pattern='{student_id}@students.test'",
                                      *extra])


def test_reports_hold_final_points_per_student(exam_dir):
    export(export_cfg(exam_dir))
    rows = list(csv.DictReader((exam_dir / "report.csv").open()))
    assert [r["student_id"] for r in rows] == ["S1", "S2", "S3", "S4"]
    assert list(rows[0]) == ["student_id", "name", "Q1", "Q2", "total"]
    assert rows[1] == {"student_id": "S2", "name": "Student S2", "Q1": "3.5", "Q2": "0", "total": "3.5"}
    assert rows[0]["total"] == "6"
    from openpyxl import load_workbook

    ws = load_workbook(exam_dir / "report.xlsx").active
    values = [[c.value for c in row] for row in ws.iter_rows()]
    assert values[0] == ["student_id", "name", "Q1", "Q2", "total"]
    assert values[2] == ["S2", "Student S2", 3.5, 0, 3.5]


def test_scored_pdfs_open_with_one_page_per_scan_and_samples_follow_the_totals(exam_dir):
    import pypdfium2 as pdfium

    metrics = export(export_cfg(exam_dir))
    for s in AI:
        pdf = pdfium.PdfDocument(exam_dir / "scored" / f"{s}.pdf")
        assert len(pdf) == 2
        first = pdf[0].render(scale=1).to_pil().convert("RGB")
        red = [px for px in first.getdata() if px[0] > 150 and px[1] < 80 and px[2] < 80]
        assert red, "points and total are drawn in red on the first page"
        pdf.close()
    # Totals: S1 6, S2 3.5 (reviewed), S3 3.5, S4 4 -> good: S1; weak: the lowest, S3 (S2 ties; taken from
    # the bottom of the ranking); average: nearest the median 3.75, S2 and S4 equally, the lower id wins.
    assert metrics["samples"] == {"good": ["S1"], "average": ["S2"], "weak": ["S3"]}
    assert sorted(p.name for p in (exam_dir / "samples" / "good").iterdir()) == ["S1.pdf"]
    assert pick_samples({"a": 1, "b": 5, "c": 3, "d": 2, "e": 4}, 1) == {"good": ["b"], "average": ["c"], "weak": ["a"]}


def test_emails_carry_the_scored_pdf_and_an_address(exam_dir):
    metrics = export(export_cfg(exam_dir))
    assert metrics["emails"] == 4 and metrics["no_address"] == 0
    msg = email.message_from_bytes((exam_dir / "emails" / "S2.eml").read_bytes(), policy=email.policy.default)
    assert msg["To"] == "s2@school.test"
    assert "Q1: 3.5 / 4" in msg.get_body(("plain",)).get_content()
    (pdf,) = list(msg.iter_attachments())
    assert pdf.get_content_type() == "application/pdf" and pdf.get_filename() == "S2.pdf"
    assert pdf.get_content() == (exam_dir / "scored" / "S2.pdf").read_bytes()
    s4 = email.message_from_bytes((exam_dir / "emails" / "S4.eml").read_bytes(), policy=email.policy.default)
    assert s4["To"] == "S4@students.test"  # no roster email: the configured pattern


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    class Collect(Message):
        def __init__(self):
            super().__init__()
            self.received = []

        def handle_message(self, message):
            self.received.append((message["To"], time.monotonic()))

    import socket

    with socket.socket() as probe:  # a free port (the controller's readiness check cannot use port 0)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handler = Collect()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield controller, handler
    finally:
        controller.stop()


def test_smtp_sends_each_student_once_throttled_and_resumes(exam_dir, smtp_server):
    controller, handler = smtp_server
    send = ["send=true", "smtp_host=127.0.0.1", f"smtp_port={controller.port}", "send_interval_s=0.3"]
    first = export(export_cfg(exam_dir, *send, "max_send=2"))  # interrupted after two
    assert first["sent_now"] == 2 and len(handler.received) == 2
    second = export(export_cfg(exam_dir, *send))
    assert second["sent_now"] == 2 and second["sent_total"] == 4
    third = export(export_cfg(exam_dir, *send))
    assert third["sent_now"] == 0 and len(handler.received) == 4
    assert sorted(to for to, _ in handler.received) == ["S4@students.test", "s1@school.test", "s2@school.test",
                                                        "s3@school.test"]
    gaps = [b - a for (_, a), (_, b) in zip(handler.received[2:], handler.received[3:], strict=False)]
    assert all(g >= 0.25 for g in gaps)
    with ExamStore.open(exam_dir) as store:
        assert set(store.sent()) == set(AI)


def test_throttle_waits_out_the_interval():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    t = Throttle(2.0, clock=lambda: now[0], sleep=sleep)
    t.wait()
    now[0] += 0.5
    t.wait()
    now[0] += 3.0
    t.wait()
    assert slept == [1.5]
