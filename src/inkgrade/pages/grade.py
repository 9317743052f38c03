"""Grade whole handwritten pages with a vision model (Cvengros & Kortemeyer): ``scripts/grade_pages.py``.

Each student page goes to an OpenAI-compatible endpoint with its rubric: the rubric page image of the same
number (rubric PDF/folder), or the rubric as text (rubric.json: the parts the template puts on that page, or
the whole rubric when there is no template, and the model leaves out what is not on the page). ``runs=k``
asks k times per page (the reliability analysis needs runs); runs go one after the other for each chunk of
pages.

Run folder:

- ``replies.jsonl``: one line per (page, run) as each reply arrives (request hash, model, tokens, cost, raw
  reply, parts after clamping, flags); a rerun of the folder asks only for what it does not hold, and the
  reply cache makes any other rerun free;
- ``grades.csv``: ``student_id,item_id,run,points,max_points,problem_type`` (the long format
  ``scripts/analyze_grades.py`` reads); a part no reply graded gets 0 points and a ``missing`` flag;
- ``totals.csv``: per student and run, summed here (never taken from the model);
- ``flags.csv``: every flag with the student, part, run and page file; ``pseudonyms.csv``: who is who.

Flags: ``clamped`` (points above the maximum or below 0, set to the bound), ``unknown_part`` (not in the
rubric), ``off_page`` (in the rubric but not on this page by the template), ``missing`` (expected and not
graded), ``no_part`` (a reply naming no part), ``duplicate_part`` (named twice in one reply: the first
counts), ``several_pages`` (one part graded on several pages: the most points count), ``retried``,
``llm_failed``, and ``bad_input`` (a file that is not a usable page, or a page the template or the rubric
pages do not have).

Student ids never leave the machine: the page is labelled with a stable pseudonym (an HMAC of the id with a
salt kept in ``paths.cache_dir``), and with a template the identity boxes (NAME, ID, CLASS) are blanked
before sending. With ``pages=<exam_dir>`` the grades are also written into its exam store (items of kind
``page_part``, ``<student>:<question>:page``), with the flags as risk, for the review app.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import logging
import math
import secrets
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from tqdm import tqdm

from grading.llm import ChatReply, LLMClient, load_settings
from grading.rubric import Question
from inkbase.errors import ConfigError, InputError, check_range
from inkbase.jsonio import JsonlAppender, read_jsonl
from inkbase.runs import RunFolder, hydra_output_dir, start_run
from inkgrade.pages.inputs import (
    Page,
    PageSet,
    Problem,
    RubricSource,
    Template,
    check_page_counts,
    find_pages,
    load_page_template,
    load_rubric_source,
    page_bytes,
)
from inkgrade.pages.prompt import PROMPT_VERSION, PageReply, TranscribedPageReply, page_messages
from inkgrade.store import ExamStore

log = logging.getLogger(__name__)

GRADES_HEADER = ["student_id", "item_id", "run", "points", "max_points", "problem_type"]
# Flags that send a grade to a person whatever the runs agree on.
REVIEW_FLAGS = ("clamped", "missing", "unknown_part", "no_part", "llm_failed", "several_pages", "off_page")


class Pseudonyms:
    """Stable pseudonyms: HMAC-SHA256 of the student id under a salt that stays in the cache folder."""

    def __init__(self, salt_path: Path):
        if not salt_path.is_file():
            salt_path.parent.mkdir(parents=True, exist_ok=True)
            salt_path.write_text(secrets.token_hex(16))
        self._salt = salt_path.read_text().strip().encode()

    def __call__(self, student_id: str) -> str:
        return "script-" + hmac.new(self._salt, student_id.encode(), hashlib.sha256).hexdigest()[:10]


@dataclass
class Job:
    page: Page
    expected: list[str] | None  # parts the template puts on the page; None: any part may be there
    questions: list[Question]
    rubric_image: tuple[bytes, str] | None


def evaluate(data: dict[str, Any], expected: list[str] | None,
             parts: dict[str, Question]) -> tuple[list[dict[str, Any]], list[str]]:
    """The parts of one valid reply with clamped points, and the reply's flags."""
    lookup = {pid.strip().casefold(): pid for pid in parts}
    graded: list[dict[str, Any]] = []
    flags: list[str] = []
    if not data["grades"]:
        flags.append("no_part")
    for g in data["grades"]:
        pid = lookup.get(g["problem_part"].strip().casefold())
        if pid is None:
            flags.append(f"unknown_part:{g['problem_part']}")
            continue
        if any(p["item_id"] == pid for p in graded):
            flags.append(f"duplicate_part:{pid}")
            continue
        raw, top = float(g["awarded_points"]), parts[pid].max_points
        points = min(max(raw, 0.0), top)
        if points != raw:
            flags.append(f"clamped:{pid}:{raw:g}" + (f">{top:g}" if raw > top else "<0"))
        if expected is not None and pid not in expected:
            flags.append(f"off_page:{pid}")
        graded.append({"item_id": pid, "points": points, "raw_points": raw, "max_points": top,
                       "explanation": g["explanation"]})
    if expected is not None:
        named = {p["item_id"] for p in graded}
        flags += [f"missing:{pid}" for pid in expected if pid not in named]
    return graded, flags


class PageGrader:
    def __init__(self, cfg: DictConfig, client: LLMClient, pages: PageSet, rubric: RubricSource,
                 template: Template | None, folder: RunFolder, pseudonym: Pseudonyms):
        self.cfg = cfg
        self.client = client
        self.pages = pages
        self.rubric = rubric
        self.template = template
        self.folder = folder
        self.pseudonym = pseudonym
        self.runs = int(cfg.runs)
        self.reply_model = TranscribedPageReply if cfg.transcribe_first else PageReply
        self.problems: list[Problem] = list(pages.problems)
        self.planned: list[Job] = []
        self._streak = 0

    def jobs(self) -> list[Job]:
        jobs = []
        parts = self.rubric.rubric.questions
        for page in self.pages.pages:
            rubric_image = None
            if self.rubric.page_images is not None:
                if page.index >= len(self.rubric.page_images):
                    self.problems.append(Problem(page.source, f"page {page.index} has no rubric page "
                                                              f"({len(self.rubric.page_images)} rubric pages)",
                                                 page.student_id, page.index))
                    continue
                rubric_image = self.rubric.page_images[page.index]
            if self.template is not None:
                if str(page.index) not in self.template.regions:
                    self.problems.append(Problem(page.source, f"page {page.index} is not in template "
                                                              f"{self.template.path}", page.student_id, page.index))
                    continue
                expected = self.template.parts_on(page.index, self.rubric.rubric)
                if not expected:
                    continue  # the template puts no rubric part on this page
                questions = [q for q in parts if q.id in expected]
            else:
                expected, questions = None, parts
            jobs.append(Job(page, expected, questions, rubric_image))
        return jobs

    def messages(self, job: Job) -> list[dict[str, Any]] | None:
        redact = self.template.identity_boxes(job.page.index) if self.template and self.cfg.redact_identity else None
        try:
            image = page_bytes(job.page, float(self.cfg.pdf_dpi), redact)
        except InputError as err:
            self.problems.append(Problem(job.page.source, err.problem, job.page.student_id, job.page.index))
            return None
        label = f"Page {job.page.index + 1} of script {self.pseudonym(job.page.student_id)}"
        return page_messages(image, label, job.questions, job.expected is None, job.rubric_image,
                             bool(self.cfg.transcribe_first))

    def record(self, job: Job, run: int, reply: ChatReply) -> dict[str, Any]:
        s = self.client.settings
        tokens = {"prompt_tokens": int(reply.usage.get("prompt_tokens", 0)),
                  "completion_tokens": int(reply.usage.get("completion_tokens", 0))}
        rec: dict[str, Any] = {
            "page": job.page.key, "student_id": job.page.student_id,
            "pseudonym": self.pseudonym(job.page.student_id), "page_index": job.page.index,
            "page_id": job.page.page_id, "source": job.page.source, "run": run,
            "status": "graded" if reply.ok else "failed", "request_hash": reply.key, "model": s.model,
            "prompt_version": PROMPT_VERSION, "cached": reply.cached, "requests": reply.requests, **tokens,
            "cost_usd": round(tokens["prompt_tokens"] / 1000 * s.price_in_per_1k
                              + tokens["completion_tokens"] / 1000 * s.price_out_per_1k, 8),
            "raw_reply": reply.text, "parts": [], "flags": ["retried"] if reply.retried else []}
        if reply.ok:
            rec["parts"], flags = evaluate(reply.data, job.expected, self.rubric.parts)
            rec["flags"] += flags
            if "transcription" in reply.data:
                rec["transcription"] = reply.data["transcription"]
        else:
            rec["flags"].append(f"llm_failed:{reply.kind}")
            rec["error"] = reply.error
        return rec

    def grade(self) -> None:
        path = self.folder.file("replies.jsonl")
        done = {(r["page"], r["run"]) for r in read_jsonl(path) if r["status"] == "graded"}
        jobs = self.planned = self.jobs()
        todo = sum(1 for j in jobs for r in range(1, self.runs + 1) if (j.page.key, r) not in done)
        if done:
            log.info("resuming: %d page replies on disk, %d to go", len(done), todo)
        size = int(self.cfg.chunk_size)
        with JsonlAppender(path) as out, tqdm(total=todo, desc="pages", unit="reply") as bar:
            for start in range(0, len(jobs), size):
                chunk = [j for j in jobs[start:start + size]
                         if any((j.page.key, r) not in done for r in range(1, self.runs + 1))]
                built = [(j, self.messages(j)) for j in chunk]
                bar.update(self.runs * sum(m is None for _, m in built))
                for run in range(1, self.runs + 1):
                    batch = [(j, m) for j, m in built if m is not None and (j.page.key, run) not in done]

                    def arrived(i: int, reply: ChatReply, batch=batch, run=run) -> None:
                        out.write(self.record(batch[i][0], run, reply))
                        bar.update(1)
                        self._check_streak(reply)

                    self.client.chat_many([(m, self.reply_model, f"run={run}") for _, m in batch],
                                          on_reply=arrived)

    def _check_streak(self, reply: ChatReply) -> None:
        self._streak = self._streak + 1 if reply.kind == "unavailable" else 0
        if self._streak >= int(self.cfg.max_consecutive_failures):
            raise ConfigError("llm.base_url", f"{self._streak} requests in a row to {self.client.settings.url} "
                                              f"failed after retries ({reply.error}); replies so far are kept, "
                                              f"rerun to resume")


def latest_replies(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """The last record per (page, run): a failed reply is superseded by a later one."""
    return {(r["page"], r["run"]): r for r in read_jsonl(path)}


def build_grades(replies: dict[tuple[str, int], dict[str, Any]], students: list[str], runs: int,
                 parts: dict[str, Question], problems: list[Problem]) -> tuple[list[dict], list[dict]]:
    """(grade rows, flag rows): every student x part x run, from the replies of that student's pages."""
    by_student: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for rec in replies.values():
        by_student[(rec["student_id"], rec["run"])].append(rec)
    grades, flag_rows = [], []
    for p in problems:
        flag_rows.append({"student_id": p.student_id or "", "item_id": "", "run": "", "source": p.source,
                          "flag": f"bad_input: {p.problem}"})
    for sid in students:
        for run in range(1, runs + 1):
            recs = sorted(by_student.get((sid, run), []), key=lambda r: r["page_index"])
            for rec in recs:
                for flag in rec["flags"]:
                    part = flag.split(":", 2)[1] if flag.startswith(("clamped", "missing", "off_page")) else ""
                    flag_rows.append({"student_id": sid, "item_id": part, "run": run, "source": rec["source"],
                                      "flag": flag})
            for pid, q in parts.items():
                found = [(rec, p) for rec in recs if rec["status"] == "graded" for p in rec["parts"]
                         if p["item_id"] == pid]
                if not found:
                    points = 0.0
                    if not any(f == f"missing:{pid}" for rec in recs for f in rec["flags"]):
                        flag_rows.append({"student_id": sid, "item_id": pid, "run": run, "source": "",
                                          "flag": f"missing:{pid}"})
                else:
                    points = max(p["points"] for _, p in found)
                    if len(found) > 1:
                        flag_rows.append({"student_id": sid, "item_id": pid, "run": run,
                                          "source": "; ".join(r["source"] for r, _ in found),
                                          "flag": f"several_pages:{pid}"})
                grades.append({"student_id": sid, "item_id": pid, "run": run, "points": points,
                               "max_points": q.max_points, "problem_type": q.problem_type})
    return grades, flag_rows


def write_csv(path: Path, header: list[str], rows: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def write_store(exam_dir: Path, grades: list[dict], flag_rows: list[dict],
                replies: dict[tuple[str, int], dict[str, Any]], parts: dict[str, Question]) -> int:
    """One ``page_part`` item per (student, part): mean points over runs on the part's granularity; risk 1
    with a review flag, else the runs' spread as a share of the maximum."""
    points: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for g in grades:
        points[(g["student_id"], g["item_id"])][g["run"]] = g["points"]
    flags: dict[tuple[str, str], list[str]] = defaultdict(list)
    for f in flag_rows:
        if f["item_id"]:
            flags[(f["student_id"], f["item_id"])].append(f"run {f['run']}: {f['flag']}")
    where: dict[tuple[str, str], dict[str, Any]] = {}
    for _, rec in sorted(replies.items(), key=lambda kv: kv[0][1], reverse=True):
        for p in rec["parts"]:
            where[(rec["student_id"], p["item_id"])] = {"page_id": rec["page_id"], "explanation": p["explanation"],
                                                        "transcription": rec.get("transcription", "")}
    with ExamStore.open(exam_dir) as store:
        for (sid, pid), by_run in points.items():
            q = parts[pid]
            mean = statistics.fmean(by_run.values())
            ai = math.floor(mean / q.granularity + 0.5) * q.granularity  # half up, not to even
            spread = max(by_run.values()) - min(by_run.values())
            review = [f for f in flags[(sid, pid)] if f.split(": ", 1)[1].startswith(REVIEW_FLAGS)]
            risk = 1.0 if review else min(1.0, spread / q.max_points)
            reason = "; ".join(review) if review else (f"runs differ by {spread:g} points" if spread else "")
            info = where.get((sid, pid), {})
            store.put_item({"answer_id": f"{sid}:{pid}:page", "student_id": sid, "question_id": pid,
                            "kind": "page_part", "page_id": info.get("page_id"),
                            "transcription": info.get("transcription", ""), "ai_points": ai,
                            "max_points": q.max_points, "granularity": q.granularity, "risk": risk,
                            "risk_reason": reason,
                            "details": {"runs": {str(r): v for r, v in sorted(by_run.items())},
                                        "justification": info.get("explanation", ""), "flags": flags[(sid, pid)],
                                        "grader": "vision_page"}})
    return len(points)


def run(cfg: DictConfig) -> dict[str, Any]:
    """``scripts/grade_pages.py``: returns the run's metrics (also written to ``metrics.json``)."""
    t0 = time.perf_counter()
    check_range("runs", cfg.runs, 1, 1000)
    check_range("chunk_size", cfg.chunk_size, 1, 100_000)
    check_range("max_consecutive_failures", cfg.max_consecutive_failures, 1, 10_000)
    settings = load_settings(cfg.llm)
    pages = find_pages(cfg.pages, float(cfg.pdf_dpi))
    rubric = load_rubric_source(cfg.rubric, cfg.parts, float(cfg.pdf_dpi))
    template_path = cfg.template
    if template_path is None and pages.exam_dir is not None:
        with ExamStore.open(pages.exam_dir) as store:
            stored = store.meta("template")
        template_path = pages.exam_dir / stored if stored else None
    template = load_page_template(template_path) if template_path else None
    check_page_counts(pages, rubric, template)
    folder = start_run(hydra_output_dir(cfg.out_dir), cfg)
    client = LLMClient(settings, cfg.paths.cache_dir, PROMPT_VERSION)
    pseudonym = Pseudonyms(Path(cfg.paths.cache_dir) / "pseudonym_salt")
    write_csv(folder.file("pseudonyms.csv"), ["student_id", "pseudonym"],
              [{"student_id": s, "pseudonym": pseudonym(s)} for s in pages.students])
    grader = PageGrader(cfg, client, pages, rubric, template, folder, pseudonym)
    grader.grade()

    replies = latest_replies(folder.file("replies.jsonl"))
    parts = rubric.parts
    grades, flag_rows = build_grades(replies, pages.students, grader.runs, parts, grader.problems)
    write_csv(folder.file("grades.csv"), GRADES_HEADER, grades)
    write_csv(folder.file("flags.csv"), ["student_id", "item_id", "run", "source", "flag"], flag_rows)
    totals: dict[tuple[str, int], float] = defaultdict(float)
    for g in grades:
        totals[(g["student_id"], g["run"])] += g["points"]
    exam_max = sum(q.max_points for q in parts.values())
    write_csv(folder.file("totals.csv"), ["student_id", "run", "points", "max_points"],
              [{"student_id": s, "run": r, "points": round(v, 6), "max_points": exam_max}
               for (s, r), v in sorted(totals.items())])
    stored = None
    if pages.exam_dir is not None and cfg.write_store:
        stored = write_store(pages.exam_dir, grades, flag_rows, replies, parts)

    per_run = {}
    for r in range(1, grader.runs + 1):
        recs = [rec for (_, run), rec in replies.items() if run == r]
        run_totals = [v for (_, rr), v in totals.items() if rr == r]
        per_run[str(r)] = {
            "pages_graded": sum(rec["status"] == "graded" for rec in recs),
            "pages_failed": sum(rec["status"] == "failed" for rec in recs),
            "prompt_tokens": sum(rec["prompt_tokens"] for rec in recs),
            "completion_tokens": sum(rec["completion_tokens"] for rec in recs),
            "cost_usd": round(sum(rec["cost_usd"] for rec in recs), 6),
            "mean_total": round(statistics.fmean(run_totals), 4) if run_totals else math.nan}
    kinds = Counter(f["flag"].split(":", 1)[0] for f in flag_rows)
    unusable = {(p.student_id, p.index) for p in grader.problems}
    gradable = [j.page.key for j in grader.planned if (j.page.student_id, j.page.index) not in unusable]
    complete = all(replies.get((k, r), {}).get("status") == "graded" for k in gradable
                   for r in range(1, grader.runs + 1))
    metrics: dict[str, Any] = {
        "model": settings.model, "provider": settings.provider, "prompt_version": PROMPT_VERSION,
        "students": len(pages.students), "pages": len(pages.pages), "bad_inputs": len(grader.problems),
        "runs": grader.runs, "transcribe_first": bool(cfg.transcribe_first),
        "page_replies": sum(v["pages_graded"] for v in per_run.values()),
        "complete": complete,
        "per_run": per_run, "flags": dict(sorted(kinds.items())), "grade_rows": len(grades),
        "store_items": stored, "llm_usage": client.usage.as_dict(),
        "seconds": round(time.perf_counter() - t0, 2)}
    folder.finish(metrics)
    log.info("graded %d pages x %d runs (%d flags) -> %s", len(pages.pages), grader.runs, len(flag_rows),
             folder.path)
    return metrics
