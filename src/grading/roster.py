"""Class rosters and matching the identity read off a script (ID and NAME regions) against them.

OCR of handwritten ids is error-prone (Wong cross-checks against the provided name list), so the
read id and name are matched to the closest roster entry and the match confidence is kept for review.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from rapidfuzz import fuzz, process

from inkbase.errors import InputError

ROSTER_COLUMNS = ("student_id", "name", "class")


@dataclass(frozen=True)
class Student:
    student_id: str
    name: str
    class_: str


@dataclass(frozen=True)
class IdentityMatch:
    student_id: str | None
    score: float  # 0-100, rapidfuzz similarity of the best candidate
    read_id: str
    read_name: str

    def needs_review(self, min_score: float) -> bool:
        return self.student_id is None or self.score < min_score


def load_roster(path: str | Path) -> list[Student]:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "(file)", "not found")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ROSTER_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(path, f"column {missing[0]!r}", "missing")
        students, seen = [], set()
        for row_no, row in enumerate(reader, start=2):
            sid = (row["student_id"] or "").strip()
            if not sid:
                raise InputError(path, f"row {row_no}: student_id", "empty")
            if sid in seen:
                raise InputError(path, f"row {row_no}: student_id", f"duplicate {sid!r}")
            seen.add(sid)
            students.append(Student(sid, (row["name"] or "").strip(), (row["class"] or "").strip()))
    return students


def _norm(text: str) -> str:
    return "".join(ch for ch in text.upper() if ch.isalnum())


def match_identity(read_id: str, read_name: str, roster: list[Student]) -> IdentityMatch:
    """Best roster entry for what was read: id similarity and name similarity, whichever is stronger."""
    ids = {s.student_id: _norm(s.student_id) for s in roster}
    names = {s.student_id: s.name.upper() for s in roster}
    best_id = process.extractOne(_norm(read_id), ids, scorer=fuzz.ratio) if _norm(read_id) else None
    best_name = process.extractOne(read_name.upper(), names, scorer=fuzz.token_sort_ratio) if read_name.strip() else None
    candidates = [c for c in (best_id, best_name) if c is not None]
    if not candidates:
        return IdentityMatch(None, 0.0, read_id, read_name)
    _text, score, key = max(candidates, key=lambda c: c[1])
    return IdentityMatch(key, float(score), read_id, read_name)
