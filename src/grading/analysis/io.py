"""Grade tables: reading and validating the long-format CSVs, and building them from grading runs.

A grade table has one row per (student_id, item_id[, run]) with ``points`` and ``max_points``, and
optionally ``problem_type`` (Table 1's rows) and ``problem`` (the panels of the per-problem scatter;
by default every item is its own problem). The AI table may carry a ``run`` column (repeated
gradings of the same scripts); without it, it is one run named ``1``.

Errors name the file, the row and the column: ``row N`` is line N of the file (the header is line 1).
Points are kept as given: points above ``max_points`` or below 0 are counted and listed, never clipped.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inkbase.errors import InputError

REQUIRED = ("student_id", "item_id", "points", "max_points")
OPTIONAL = ("problem_type", "problem", "run")
SINGLE_RUN = "1"


def run_sort_key(run: str) -> tuple:
    """Runs sort numerically when they are numbers (2 before 10), else as text."""
    try:
        return (0, float(run), run)
    except ValueError:
        return (1, 0.0, run)


@dataclass
class GradeTable:
    """One validated grade table (long format) with the line number of every row."""

    path: Path
    rows: pd.DataFrame  # student_id, item_id, run, points, max_points, problem_type, problem, line
    has_run: bool
    has_problem_type: bool
    has_problem: bool

    @property
    def runs(self) -> list[str]:
        return sorted(self.rows["run"].unique(), key=run_sort_key)


@dataclass
class GradeData:
    """AI and human grades on the same students and items, as dense student x item matrices."""

    students: list[str]
    items: list[str]
    max_points: np.ndarray  # (n_items,)
    problem_type: list[str | None]  # per item; None when neither table names it
    problem: list[str]  # per item
    human: np.ndarray  # (n_students, n_items)
    ai: dict[str, np.ndarray]  # run -> (n_students, n_items)
    out_of_range: list[dict[str, Any]] = field(default_factory=list)

    @property
    def runs(self) -> list[str]:
        return sorted(self.ai, key=run_sort_key)


def _number(path: Path, line: int, column: str, text: str) -> float:
    if text == "":
        raise InputError(path, f"row {line}: {column}", "empty")
    try:
        value = float(text)
    except ValueError:
        raise InputError(path, f"row {line}: {column}", f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(path, f"row {line}: {column}", f"{text!r} is not a finite number")
    return value


def read_grade_table(path: str | Path, allow_run: bool) -> GradeTable:
    """Read and validate one grade table; raise :class:`InputError` naming file, row and column."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "(file)", "not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise InputError(path, "(file)", "empty (no header row)")
            header = [h.strip() for h in header]
            for col in REQUIRED:
                if col not in header:
                    raise InputError(path, f"column {col!r}", "missing")
            if "run" in header and not allow_run:
                raise InputError(path, "column 'run'", "not allowed here: this table holds one grading per "
                                                       "(student_id, item_id)")
            for col in set(header):
                if col and header.count(col) > 1:
                    raise InputError(path, f"column {col!r}", "appears more than once")
            index = {c: header.index(c) for c in (*REQUIRED, *OPTIONAL) if c in header}
            records = []
            for cells in reader:
                line = reader.line_num
                if not any(c.strip() for c in cells):
                    continue
                cells = [c.strip() for c in cells] + [""] * max(0, len(header) - len(cells))
                rec: dict[str, Any] = {"line": line}
                for col in ("student_id", "item_id", "run"):
                    if col in index:
                        rec[col] = cells[index[col]]
                        if rec[col] == "":
                            raise InputError(path, f"row {line}: {col}", "empty")
                rec["points"] = _number(path, line, "points", cells[index["points"]])
                rec["max_points"] = _number(path, line, "max_points", cells[index["max_points"]])
                if rec["max_points"] <= 0:
                    raise InputError(path, f"row {line}: max_points", f"must be > 0 (got {rec['max_points']:g})")
                for col in ("problem_type", "problem"):
                    if col in index:
                        rec[col] = cells[index[col]] or None
                records.append(rec)
    except UnicodeDecodeError:
        raise InputError(path, "(file)", "not UTF-8 text") from None
    except csv.Error as err:
        raise InputError(path, "(file)", f"not a readable CSV ({err})") from None
    if not records:
        raise InputError(path, "(file)", "no data rows")
    rows = pd.DataFrame.from_records(records)
    has_run = "run" in index
    if not has_run:
        rows["run"] = SINGLE_RUN
    for col in ("problem_type", "problem"):
        if col not in rows:
            rows[col] = None
    table = GradeTable(path=path, rows=rows, has_run=has_run, has_problem_type="problem_type" in index,
                       has_problem="problem" in index)
    _check_duplicates(table)
    _check_item_attributes(table)
    _check_complete(table)
    return table


def _key_text(table: GradeTable, row: pd.Series) -> str:
    key = f"student_id={row.student_id}, item_id={row.item_id}"
    return key + (f", run={row.run}" if table.has_run else "")


def _check_duplicates(table: GradeTable) -> None:
    rows = table.rows
    dup = rows.duplicated(["student_id", "item_id", "run"], keep=False)
    if dup.any():
        first = rows[dup].iloc[0]
        same = rows[dup & (rows.student_id == first.student_id) & (rows.item_id == first.item_id)
                    & (rows.run == first.run)]
        raise InputError(table.path, f"rows {same.line.iloc[0]} and {same.line.iloc[1]}",
                         f"duplicate ({_key_text(table, first)})")


def _check_item_attributes(table: GradeTable) -> None:
    """``max_points``, ``problem_type`` and ``problem`` describe the item, so they agree on every row of it."""
    for col in ("max_points", "problem_type", "problem"):
        seen: dict[str, tuple[Any, int]] = {}
        for row in table.rows.itertuples():
            value = getattr(row, col)
            if row.item_id not in seen:
                seen[row.item_id] = (value, row.line)
            elif seen[row.item_id][0] != value:
                first, line = seen[row.item_id]
                raise InputError(table.path, f"row {row.line}: {col}", f"{_shown(col, value)} differs from "
                                 f"{_shown(col, first)} for item {row.item_id} (row {line})")


def _check_complete(table: GradeTable) -> None:
    """Every run grades every student, and every student on every item (the analyses need full grids)."""
    rows = table.rows
    runs = table.runs
    students = {r: set(g.student_id) for r, g in rows.groupby("run")}
    for run in runs:
        for other in runs:
            missing = sorted(students[other] - students[run])
            if missing:
                raise InputError(table.path, f"run {run}", f"student {missing[0]} missing (present in run {other})")
    items = list(dict.fromkeys(rows.item_id))
    for (run, student), group in rows.groupby(["run", "student_id"], sort=False):
        graded = set(group.item_id)
        missing = [i for i in items if i not in graded]
        if missing:
            where = f"run {run}: student {student}" if table.has_run else f"student {student}"
            raise InputError(table.path, where, f"item {missing[0]} missing (graded for other students)")


def _shown(col: str, value: Any) -> str:
    return f"{value:g}" if col == "max_points" else repr(value)


def _cross_check(ai: GradeTable, human: GradeTable) -> None:
    for col in ("student_id", "item_id"):
        a, h = set(ai.rows[col]), set(human.rows[col])
        if a - h:
            raise InputError(ai.path, col, f"{sorted(a - h)[0]} not in {human.path} ({len(a - h)} value(s) unmatched)")
        if h - a:
            raise InputError(human.path, col, f"{sorted(h - a)[0]} not in {ai.path} ({len(h - a)} value(s) unmatched)")
    for col in ("max_points", "problem_type", "problem"):
        if col != "max_points" and not (getattr(ai, f"has_{col}") and getattr(human, f"has_{col}")):
            continue
        hv = human.rows.drop_duplicates("item_id").set_index("item_id")[col].to_dict()
        for row in ai.rows.drop_duplicates("item_id").itertuples():
            if getattr(row, col) != hv[row.item_id]:
                raise InputError(ai.path, f"row {row.line}: {col}",
                                 f"{_shown(col, getattr(row, col))} but {human.path} has "
                                 f"{_shown(col, hv[row.item_id])} for item {row.item_id}")


def load_grades(ai_path: str | Path, human_path: str | Path) -> GradeData:
    """Read both tables, check they cover the same students and items, and build dense matrices."""
    human = read_grade_table(human_path, allow_run=False)
    ai = read_grade_table(ai_path, allow_run=True)
    _cross_check(ai, human)
    items = list(dict.fromkeys(human.rows.item_id))
    students = sorted(set(human.rows.student_id))
    first = human.rows.drop_duplicates("item_id").set_index("item_id")
    ai_first = ai.rows.drop_duplicates("item_id").set_index("item_id")

    def attribute(col: str, item: str) -> str | None:
        value = first.at[item, col] if getattr(human, f"has_{col}") else None
        return value if value is not None else (ai_first.at[item, col] if getattr(ai, f"has_{col}") else None)

    def matrix(rows: pd.DataFrame) -> np.ndarray:
        return rows.pivot(index="student_id", columns="item_id", values="points").loc[students, items].to_numpy(float)

    out_of_range = []
    for table in (human, ai):
        bad = table.rows[(table.rows.points > table.rows.max_points) | (table.rows.points < 0)]
        for row in bad.itertuples():
            out_of_range.append({"file": table.path.name, "row": int(row.line), "student_id": row.student_id,
                                 "item_id": row.item_id, "run": row.run if table.has_run else None,
                                 "points": float(row.points), "max_points": float(row.max_points)})
    return GradeData(
        students=students, items=items,
        max_points=first.loc[items, "max_points"].to_numpy(float),
        problem_type=[attribute("problem_type", i) for i in items],
        problem=[attribute("problem", i) or i for i in items],
        human=matrix(human.rows),
        ai={run: matrix(g) for run, g in ai.rows.groupby("run")},
        out_of_range=out_of_range,
    )


def scores_to_long_csv(scores: Mapping[str, str | Path], answers: str | Path, rubric: str | Path,
                       ai_csv: str | Path, human_csv: str | Path) -> tuple[Path, Path]:
    """Turn grading runs into the two tables :func:`load_grades` reads.

    ``scores`` maps a run name to a ``scores.jsonl`` (``answer_id, question_id, points, max_points``);
    ``answers`` is the answers JSONL whose lines carry ``student_id`` and ``reference_points`` (the
    human points); the rubric gives each question's ``problem_type``. Every run must score every
    answer that has reference points. Writes ``ai_csv`` (with a ``run`` column) and ``human_csv``.
    """
    from grading.rubric import load_answers, load_rubric
    from inkbase.jsonio import read_jsonl

    rubric_obj = load_rubric(rubric)
    types = {q.id: q.problem_type for q in rubric_obj.questions}
    max_points = {q.id: q.max_points for q in rubric_obj.questions}
    reference = {}
    for a in load_answers(answers, rubric_obj):
        extra = a.extra
        if extra.get("reference_points") is None:
            continue
        if extra.get("student_id") in (None, ""):
            raise InputError(answers, f"answer {a.answer_id}: student_id", "missing")
        reference[a.answer_id] = (str(extra["student_id"]), a.question_id, float(extra["reference_points"]))
    if not reference:
        raise InputError(answers, "reference_points", "no answer carries reference points")
    human_rows = [{"student_id": s, "item_id": q, "points": p, "max_points": max_points[q], "problem_type": types[q]}
                  for s, q, p in reference.values()]
    ai_rows = []
    for run, path in sorted(scores.items(), key=lambda kv: run_sort_key(str(kv[0]))):
        records = {r["answer_id"]: r for r in read_jsonl(path)}
        missing = sorted(set(reference) - set(records))
        if missing:
            raise InputError(path, "answer_id", f"{missing[0]} not scored ({len(missing)} of {len(reference)} "
                                                "answers missing)")
        for answer_id, (student, question, _) in reference.items():
            r = records[answer_id]
            ai_rows.append({"student_id": student, "item_id": question, "run": str(run), "points": r["points"],
                            "max_points": r["max_points"], "problem_type": types[question]})
    ai_csv, human_csv = Path(ai_csv), Path(human_csv)
    for path, rows in ((ai_csv, ai_rows), (human_csv, human_rows)):
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(path, index=False)
    return ai_csv, human_csv
