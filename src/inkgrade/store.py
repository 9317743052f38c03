"""The exam store: one SQLite file (``<exam_dir>/exam.sqlite``) that the exam workflow, the review app,
page grading and answer tables share.

Every change is one transaction in WAL mode, so a killed process loses nothing that was acknowledged.
Reviews are optimistic: an item carries a ``version`` and a write naming a stale version changes nothing
(:class:`StaleVersion`); every change to an item's points or status appends a row to ``audit``, which is
never updated or deleted. Image paths are stored relative to ``exam_dir``.

Tables
------
students   student_id (key), name, class, email
questions  question_id (key), position, text, max_points, granularity, problem_type
pages      page_id (key), source (file and page number of the scan), image (path), template_page,
           student_id (null until the page is assigned), id_read, id_score, status
           ('assigned' | 'needs_identity' | 'unreadable'), problem (why, when not assigned)
items      answer_id (key), student_id, question_id, kind ('answer' | 'table_cell' | 'page_part'),
           page_id, crop (path), transcription, ai_points, points (null until reviewed or set),
           max_points, granularity, status ('unreviewed' | 'reviewed' | 'skipped' | 'auto'),
           version, risk (0-1, higher = more doubtful), risk_reason, details (JSON: matched / missing
           concepts, justification, spans, flags), updated_at
audit      audit_id (key), answer_id, who, at, old_points, new_points, old_status, new_status, version
meta       key (key), value: exam-level facts (rubric path, template path, grader, finished stages)
page_codes page_id (key), booklet: the booklet number printed on a page (links a page without an ID
           region to its booklet's ID page); added for the exam workflow, absent rows = no code read
sent       student_id (key), address, at, message_id: results mailed to a student (never sent twice)
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inkbase.errors import InputError

DB_NAME = "exam.sqlite"
STATUSES = ("unreviewed", "reviewed", "skipped", "auto")
KINDS = ("answer", "table_cell", "page_part")

SCHEMA = """
CREATE TABLE IF NOT EXISTS students (
    student_id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '', class TEXT NOT NULL DEFAULT '',
    email TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS questions (
    question_id TEXT PRIMARY KEY, position INTEGER NOT NULL, text TEXT NOT NULL DEFAULT '',
    max_points REAL NOT NULL, granularity REAL NOT NULL DEFAULT 0, problem_type TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS pages (
    page_id INTEGER PRIMARY KEY, source TEXT NOT NULL UNIQUE, image TEXT NOT NULL,
    template_page TEXT, student_id TEXT REFERENCES students(student_id), id_read TEXT NOT NULL DEFAULT '',
    id_score REAL, status TEXT NOT NULL CHECK (status IN ('assigned', 'needs_identity', 'unreadable')),
    problem TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS items (
    answer_id TEXT PRIMARY KEY, student_id TEXT NOT NULL, question_id TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'answer' CHECK (kind IN ('answer', 'table_cell', 'page_part')),
    page_id INTEGER REFERENCES pages(page_id), crop TEXT, transcription TEXT NOT NULL DEFAULT '',
    ai_points REAL, points REAL, max_points REAL NOT NULL, granularity REAL NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'unreviewed' CHECK (status IN ('unreviewed', 'reviewed', 'skipped', 'auto')),
    version INTEGER NOT NULL DEFAULT 1, risk REAL NOT NULL DEFAULT 0, risk_reason TEXT NOT NULL DEFAULT '',
    details TEXT NOT NULL DEFAULT '{}', updated_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS items_by_question ON items (question_id, risk DESC);
CREATE TABLE IF NOT EXISTS audit (
    audit_id INTEGER PRIMARY KEY AUTOINCREMENT, answer_id TEXT NOT NULL, who TEXT NOT NULL, at TEXT NOT NULL,
    old_points REAL, new_points REAL, old_status TEXT, new_status TEXT, version INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_is_append_only_u BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit rows are never changed'); END;
CREATE TRIGGER IF NOT EXISTS audit_is_append_only_d BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit rows are never deleted'); END;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS page_codes (
    page_id INTEGER PRIMARY KEY REFERENCES pages(page_id), booklet INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sent (
    student_id TEXT PRIMARY KEY, address TEXT NOT NULL, at TEXT NOT NULL, message_id TEXT NOT NULL DEFAULT '');
"""


class StaleVersion(Exception):
    """A write named an item version that is no longer current (someone else changed it first)."""

    def __init__(self, answer_id: str, given: int, current: int):
        self.answer_id, self.given, self.current = answer_id, given, current
        super().__init__(f"{answer_id}: version {given} is stale (current {current})")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


@dataclass
class Item:
    answer_id: str
    student_id: str
    question_id: str
    kind: str
    page_id: int | None
    crop: str | None
    transcription: str
    ai_points: float | None
    points: float | None
    max_points: float
    granularity: float
    status: str
    version: int
    risk: float
    risk_reason: str
    details: dict[str, Any]
    updated_at: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Item:
        data = dict(row)
        data["details"] = json.loads(data["details"] or "{}")
        return cls(**data)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ExamStore:
    """A connection to ``<exam_dir>/exam.sqlite``; create it with :meth:`open`."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self.exam_dir = path.parent
        self.conn = conn

    @classmethod
    def open(cls, exam_dir: str | Path, create: bool = False) -> ExamStore:
        exam_dir = Path(exam_dir)
        path = exam_dir / DB_NAME
        if not path.is_file() and not create:
            raise InputError(exam_dir, DB_NAME, "not found (run scripts/grade_exam.py with this exam_dir first)")
        exam_dir.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # an acknowledged review survives a power cut, not only a kill
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(SCHEMA)
        return cls(path, conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ExamStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any error."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ------------------------------------------------------------------ meta
    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction() as c:
            c.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                      (key, json.dumps(value)))

    def meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row["value"])

    # ------------------------------------------------------------------ students, questions, pages
    def upsert_students(self, rows: Iterable[dict[str, str]]) -> None:
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO students (student_id, name, class, email) VALUES (:student_id, :name, :class, :email) "
                "ON CONFLICT(student_id) DO UPDATE SET name = excluded.name, class = excluded.class, "
                "email = excluded.email",
                [{"name": "", "class": "", "email": "", **r} for r in rows])

    def upsert_questions(self, rows: Iterable[dict[str, Any]]) -> None:
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO questions (question_id, position, text, max_points, granularity, problem_type) "
                "VALUES (:question_id, :position, :text, :max_points, :granularity, :problem_type) "
                "ON CONFLICT(question_id) DO UPDATE SET position = excluded.position, text = excluded.text, "
                "max_points = excluded.max_points, granularity = excluded.granularity, "
                "problem_type = excluded.problem_type",
                [{"text": "", "granularity": 0.0, "problem_type": "", **r} for r in rows])

    def students(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM students ORDER BY student_id")]

    def questions(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM questions ORDER BY position, question_id")]

    def add_page(self, source: str, image: str, status: str, *, template_page: str | None = None,
                 student_id: str | None = None, id_read: str = "", id_score: float | None = None,
                 problem: str = "", booklet: int | None = None) -> int:
        """Record a page (once per ``source``; a second call returns the first page's id unchanged),
        with the booklet number printed on it when one was read (same transaction)."""
        with self.transaction() as c:
            row = c.execute("SELECT page_id FROM pages WHERE source = ?", (source,)).fetchone()
            if row is not None:
                return int(row["page_id"])
            cur = c.execute(
                "INSERT INTO pages (source, image, template_page, student_id, id_read, id_score, status, problem) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (source, image, template_page, student_id, id_read, id_score, status, problem))
            if booklet is not None:
                c.execute("INSERT INTO page_codes (page_id, booklet) VALUES (?, ?)", (cur.lastrowid, booklet))
            return int(cur.lastrowid)

    def set_page_problem(self, page_id: int, status: str, problem: str) -> None:
        """Mark an unassigned page ``needs_identity`` or ``unreadable`` with the reason."""
        with self.transaction() as c:
            c.execute("UPDATE pages SET status = ?, problem = ? WHERE page_id = ? AND student_id IS NULL",
                      (status, problem, page_id))

    def page_codes(self) -> dict[int, int]:
        """``page_id -> booklet`` for the pages whose printed booklet number was read."""
        return {int(r["page_id"]): int(r["booklet"]) for r in self.conn.execute("SELECT * FROM page_codes")}

    def assign_page(self, page_id: int, student_id: str) -> None:
        with self.transaction() as c:
            c.execute("UPDATE pages SET student_id = ?, status = 'assigned', problem = '' WHERE page_id = ?",
                      (student_id, page_id))

    def pages(self, status: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM pages", ()
        if status is not None:
            sql, args = sql + " WHERE status = ?", (status,)
        return [dict(r) for r in self.conn.execute(sql + " ORDER BY page_id", args)]

    def page(self, page_id: int) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM pages WHERE page_id = ?", (page_id,)).fetchone()
        return None if row is None else dict(row)

    # ------------------------------------------------------------------ items
    def put_item(self, item: dict[str, Any]) -> None:
        """Insert an item as graded by the machine, or refresh the machine's part of an existing one
        (transcription, AI points, risk, details). Points set by a reviewer are never touched here."""
        row = {"kind": "answer", "page_id": None, "crop": None, "transcription": "", "ai_points": None,
               "points": None, "granularity": 0.0, "status": "unreviewed", "risk": 0.0, "risk_reason": "",
               **item}
        row["details"] = json.dumps(row.get("details") or {}, ensure_ascii=False)
        row["updated_at"] = now()
        with self.transaction() as c:
            c.execute(
                "INSERT INTO items (answer_id, student_id, question_id, kind, page_id, crop, transcription, "
                "ai_points, points, max_points, granularity, status, version, risk, risk_reason, details, "
                "updated_at) VALUES (:answer_id, :student_id, :question_id, :kind, :page_id, :crop, "
                ":transcription, :ai_points, :points, :max_points, :granularity, :status, 1, :risk, "
                ":risk_reason, :details, :updated_at) "
                "ON CONFLICT(answer_id) DO UPDATE SET transcription = excluded.transcription, "
                "ai_points = excluded.ai_points, risk = excluded.risk, risk_reason = excluded.risk_reason, "
                "details = excluded.details, crop = excluded.crop, page_id = excluded.page_id, "
                "updated_at = excluded.updated_at",
                row)

    def item(self, answer_id: str) -> Item | None:
        row = self.conn.execute("SELECT * FROM items WHERE answer_id = ?", (answer_id,)).fetchone()
        return None if row is None else Item.from_row(row)

    def items(self, question_id: str | None = None, kind: str | None = None,
              order: str = "risk") -> list[Item]:
        """Items, most doubtful first (``order="risk"``) or by student (``order="student"``)."""
        where, args = [], []
        if question_id is not None:
            where.append("question_id = ?")
            args.append(question_id)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        sql = "SELECT * FROM items" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY risk DESC, answer_id" if order == "risk" else " ORDER BY student_id, question_id"
        return [Item.from_row(r) for r in self.conn.execute(sql, args)]

    def set_points(self, answer_id: str, points: float | None, version: int, who: str,
                   status: str = "reviewed") -> Item:
        """Set the reviewed points of one item if ``version`` is current; one transaction with its audit
        row. Raises :class:`KeyError` for an unknown item and :class:`StaleVersion` for a stale version."""
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {STATUSES}")
        with self.transaction() as c:
            row = c.execute("SELECT points, status, version FROM items WHERE answer_id = ?", (answer_id,)).fetchone()
            if row is None:
                raise KeyError(answer_id)
            if int(row["version"]) != int(version):
                raise StaleVersion(answer_id, int(version), int(row["version"]))
            new_version = int(row["version"]) + 1
            at = now()
            c.execute("UPDATE items SET points = ?, status = ?, version = ?, updated_at = ? WHERE answer_id = ?",
                      (points, status, new_version, at, answer_id))
            c.execute("INSERT INTO audit (answer_id, who, at, old_points, new_points, old_status, new_status, "
                      "version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      (answer_id, who, at, row["points"], points, row["status"], status, new_version))
        return self.item(answer_id)

    def audit(self, answer_id: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM audit", ()
        if answer_id is not None:
            sql, args = sql + " WHERE answer_id = ?", (answer_id,)
        return [dict(r) for r in self.conn.execute(sql + " ORDER BY audit_id", args)]

    # ------------------------------------------------------------------ mailing
    def mark_sent(self, student_id: str, address: str, message_id: str = "") -> None:
        with self.transaction() as c:
            c.execute("INSERT INTO sent (student_id, address, at, message_id) VALUES (?, ?, ?, ?)",
                      (student_id, address, now(), message_id))

    def sent(self) -> dict[str, dict[str, Any]]:
        """``student_id -> {address, at, message_id}`` of every student whose results were mailed."""
        return {r["student_id"]: dict(r) for r in self.conn.execute("SELECT * FROM sent ORDER BY at")}

    def final_points(self) -> dict[tuple[str, str], float | None]:
        """``(student_id, question_id) -> points``: the reviewer's points where set, else the AI's."""
        rows = self.conn.execute(
            "SELECT student_id, question_id, SUM(COALESCE(points, ai_points)) AS p FROM items "
            "GROUP BY student_id, question_id")
        return {(r["student_id"], r["question_id"]): r["p"] for r in rows}
