"""``scripts/export_results.py``: the exam store's final points out, as Wong's postprocessing does.

Writes into ``exam_dir``: ``report.csv`` and ``report.xlsx`` (one row per student: ``student_id``,
``name``, one column per question, ``total``), ``scored/<student_id>.pdf`` (the student's aligned pages
with the points beside each answer region and the total on the first page), ``samples/{good,average,
weak}/`` (Wong keeps Good, Average and Weak samples for quality control: here the best, the
median-nearest and the weakest totals among students with a scored script, plus ``samples.csv``),
and ``emails/<student_id>.eml`` (the scored PDF attached). With ``send=true`` the emails go out over
SMTP, at most one per ``send_interval_s``; every send is recorded in the store's ``sent`` table at
once, and a student found there is never mailed again, so an interrupted send resumes.

Final points are the reviewer's where set, else the AI's (:meth:`ExamStore.final_points`).
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import smtplib
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from htr.synth.pages import printed_font_path
from inkbase.errors import ConfigError, InputError
from inkbase.runs import hydra_output_dir, start_run
from inkgrade.store import ExamStore

log = logging.getLogger(__name__)

CATEGORIES = ("good", "average", "weak")


def _fmt(points: float | None) -> str:
    return "" if points is None else f"{points:g}"


def report_rows(store: ExamStore) -> tuple[list[str], list[dict[str, Any]]]:
    """Header and one row per roster student; a question without an item is an empty cell."""
    questions = [q["question_id"] for q in store.questions()]
    final = store.final_points()
    rows = []
    for s in store.students():
        row: dict[str, Any] = {"student_id": s["student_id"], "name": s["name"]}
        got = [final.get((s["student_id"], q)) for q in questions]
        row.update(dict(zip(questions, got, strict=True)))
        present = [p for p in got if p is not None]
        row["total"] = round(sum(present), 6) if present else None
        rows.append(row)
    return ["student_id", "name", *questions, "total"], rows


def write_reports(out: Path, header: list[str], rows: list[dict[str, Any]]) -> None:
    from openpyxl import Workbook

    tmp = out / ".report.csv.tmp"
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows({k: _fmt(v) if k not in ("student_id", "name") else v for k, v in r.items()} for r in rows)
    os.replace(tmp, out / "report.csv")
    wb = Workbook()
    ws = wb.active
    ws.title = "results"
    ws.append(header)
    for r in rows:
        ws.append([r[k] for k in header])
    wb.save(out / ".report.xlsx.tmp")
    os.replace(out / ".report.xlsx.tmp", out / "report.xlsx")


def scored_pdf(store: ExamStore, student_id: str, regions: dict[str, list[dict[str, Any]]], path: Path,
               dpi: float = 150.0) -> int:
    """The student's assigned pages, points in red beside each answer region, total on the first page;
    returns the page count (0: no pages, nothing written)."""
    pages = sorted((p for p in store.pages("assigned") if p["student_id"] == student_id),
                   key=lambda p: (int(p["template_page"]), p["page_id"]))
    if not pages:
        return 0
    items = {i.question_id: i for i in store.items(order="student") if i.student_id == student_id}
    final = {q: p for (s, q), p in store.final_points().items() if s == student_id}
    total = sum(p for p in final.values() if p is not None)
    max_total = sum(q["max_points"] for q in store.questions())
    images = []
    for k, page in enumerate(pages):
        img = Image.open(store.exam_dir / page["image"]).convert("RGB")
        draw = ImageDraw.Draw(img)
        size = max(14, img.height // 60)
        font = ImageFont.truetype(printed_font_path(bold=True), size)
        for r in regions.get(str(page["template_page"]), []):
            item = items.get(r["label"])
            if item is None:
                continue
            text = f"{_fmt(final.get(r['label']))} / {item.max_points:g}"
            width = draw.textlength(text, font=font)
            right = r["x"] + r["width"]
            x = right + 6 if right + 6 + width <= img.width else right - width - 6
            draw.text((x, r["y"] + 4), text, fill=(200, 0, 0), font=font)
        if k == 0:
            text = f"{student_id}   Total: {total:g} / {max_total:g}"
            width = draw.textlength(text, font=font)
            draw.text((img.width - width - size * 2, size), text, fill=(200, 0, 0), font=font)
        images.append(img)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pdf.tmp")
    images[0].save(tmp, format="PDF", save_all=True, append_images=images[1:], resolution=dpi)
    os.replace(tmp, path)
    return len(images)


def pick_samples(totals: dict[str, float], per_category: int) -> dict[str, list[str]]:
    """Wong's Good / Average / Weak samples: the highest totals, those nearest the median, the lowest
    (each student in one category at most; ties broken by student id)."""
    ranked = sorted(totals, key=lambda s: (-totals[s], s))
    good = ranked[:per_category]
    weak = [s for s in reversed(ranked) if s not in good][:per_category]
    rest = [s for s in ranked if s not in good and s not in weak]
    if rest:
        values = sorted(totals[s] for s in ranked)
        median = values[len(values) // 2] if len(values) % 2 else (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2
        average = sorted(rest, key=lambda s: (abs(totals[s] - median), s))[:per_category]
    else:
        average = []
    return {"good": good, "average": average, "weak": weak}


def address_for(student: dict[str, Any], pattern: str | None) -> str:
    if student.get("email"):
        return student["email"]
    if pattern:
        return pattern.format(student_id=student["student_id"], name=student["name"], class_=student["class"])
    return ""


def build_email(student: dict[str, Any], address: str, scores: dict[str, float | None], max_points: dict[str, float],
                pdf: Path, cfg: DictConfig, exam_id: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = cfg.mail.sender
    msg["To"] = address
    msg["Subject"] = cfg.mail.subject.format(exam_id=exam_id, student_id=student["student_id"])
    msg["Message-ID"] = make_msgid(domain=cfg.mail.sender.rsplit("@", 1)[-1])
    lines = [f"Dear {student['name'] or student['student_id']},", "",
             f"your results for {exam_id}:", ""]
    lines += [f"  {q}: {_fmt(p) or '-'} / {max_points[q]:g}" for q, p in scores.items()]
    total = sum(p for p in scores.values() if p is not None)
    lines += ["", f"  Total: {total:g} / {sum(max_points.values()):g}", "",
              "Your scored script is attached.", "", cfg.mail.signature]
    msg.set_content("\n".join(lines))
    msg.add_attachment(pdf.read_bytes(), maintype="application", subtype="pdf", filename=f"{student['student_id']}.pdf")
    return msg


class Throttle:
    """At most one event per ``interval`` seconds (the clock and sleep are injectable for tests)."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.interval, self.clock, self.sleep = float(interval), clock, sleep
        self.last: float | None = None

    def wait(self) -> None:
        if self.last is not None:
            remaining = self.interval - (self.clock() - self.last)
            if remaining > 0:
                self.sleep(remaining)
        self.last = self.clock()


def send_emails(store: ExamStore, messages: list[tuple[str, EmailMessage]], cfg: DictConfig,
                throttle: Throttle | None = None) -> int:
    """Send the messages of students not yet in ``sent``; record each at once. Returns how many went out."""
    done = store.sent()
    todo = [(s, m) for s, m in messages if s not in done]
    if not todo:
        return 0
    if not cfg.smtp_host:
        raise ConfigError("smtp_host", "send=true needs smtp_host (and smtp_port)")
    throttle = throttle or Throttle(cfg.send_interval_s)
    password = os.environ.get("INKGRADE_SMTP_PASSWORD") or cfg.smtp_password
    sent = 0
    with smtplib.SMTP(cfg.smtp_host, int(cfg.smtp_port), timeout=30) as smtp:
        if cfg.smtp_starttls:
            smtp.starttls()
        if cfg.smtp_user:
            smtp.login(cfg.smtp_user, password or "")
        for student_id, msg in tqdm(todo, desc="send", unit="mail"):
            if cfg.max_send is not None and sent >= cfg.max_send:
                break
            throttle.wait()
            smtp.send_message(msg)
            store.mark_sent(student_id, msg["To"], msg["Message-ID"])
            sent += 1
    return sent


def export(cfg: DictConfig) -> dict[str, Any]:
    exam_dir = Path(cfg.exam_dir)
    store = ExamStore.open(exam_dir)
    folder = start_run(hydra_output_dir(cfg.out_dir), cfg)
    try:
        regions = store.meta("regions")
        if regions is None:
            raise InputError(exam_dir / "exam.sqlite", "meta.regions", "missing (grade the exam with "
                             "scripts/grade_exam.py first)")
        header, rows = report_rows(store)
        write_reports(exam_dir, header, rows)
        questions = {q["question_id"]: q["max_points"] for q in store.questions()}
        final = store.final_points()
        totals, pdfs = {}, {}
        for s in tqdm(store.students(), desc="scored", unit="pdf"):
            path = exam_dir / "scored" / f"{s['student_id']}.pdf"
            if scored_pdf(store, s["student_id"], regions, path, cfg.dpi):
                pdfs[s["student_id"]] = path
                totals[s["student_id"]] = sum(p for (sid, _), p in final.items() if sid == s["student_id"] and p)
        samples = pick_samples(totals, cfg.samples_per_category)
        shutil.rmtree(exam_dir / "samples", ignore_errors=True)
        for cat in CATEGORIES:
            (exam_dir / "samples" / cat).mkdir(parents=True, exist_ok=True)
            for sid in samples[cat]:
                shutil.copyfile(pdfs[sid], exam_dir / "samples" / cat / f"{sid}.pdf")
        with (exam_dir / "samples" / "samples.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["category", "student_id", "total"])
            writer.writerows([cat, sid, f"{totals[sid]:g}"] for cat in CATEGORIES for sid in samples[cat])
        exam_id = store.meta("exam_id", "the exam")
        messages, no_address = [], []
        (exam_dir / "emails").mkdir(exist_ok=True)
        for s in store.students():
            if s["student_id"] not in pdfs:
                continue
            address = address_for(s, cfg.mail.address_pattern)
            if not address:
                no_address.append(s["student_id"])
                continue
            scores = {q: final.get((s["student_id"], q)) for q in questions}
            msg = build_email(s, address, scores, questions, pdfs[s["student_id"]], cfg, exam_id)
            (exam_dir / "emails" / f"{s['student_id']}.eml").write_bytes(bytes(msg))
            messages.append((s["student_id"], msg))
        if no_address:
            log.warning("no email address (roster email column or mail.address_pattern) for: %s",
                        ", ".join(no_address))
        sent_now = send_emails(store, messages, cfg) if cfg.send else 0
        metrics = {"students": len(rows), "scored_pdfs": len(pdfs), "emails": len(messages),
                   "no_address": len(no_address), "sent_now": sent_now, "sent_total": len(store.sent()),
                   "samples": samples}
    finally:
        store.close()
    folder.finish(metrics)
    log.info("report, %d scored PDFs, %d emails (%d sent now) -> %s", len(pdfs), len(messages), sent_now, exam_dir)
    return metrics
