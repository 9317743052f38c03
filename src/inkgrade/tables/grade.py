"""``scripts/grade_tables.py``: read the answer tables of scanned scripts in two passes and grade them.

Pages are taken in order and grouped into scripts of ``layout.pages_per_script`` pages. On each page,
every table of the layout is found (:mod:`inkgrade.tables.grid`), its cells are read twice (pass 1
with the key, pass 2 without; :mod:`htr.cells.reader` or a vision LLM), and the script's student is
identified from its ``student_id`` table and the roster (:mod:`inkgrade.tables.identity`).

Outputs in ``out_dir`` (a run folder): ``cells.jsonl`` (written as each script is read; the durable
record), ``cells.csv`` and ``grades.csv`` (rebuilt from it after each script), ``selfcheck/<student>.png``,
``errors.jsonl`` (pages whose tables were not found), ``metrics.json`` at the end. A rerun with the same
config resumes after the last finished script. With ``exam_dir``, every answer cell becomes an item of
kind ``table_cell`` in ``<exam_dir>/exam.sqlite``; flagged ones are high-risk and wait for review there.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from omegaconf import DictConfig

from htr.cells.data import CLASSES, CROSSED, EMPTY
from htr.cells.reader import CellReader, flag_cell, restrict
from inkbase.errors import ConfigError, InputError
from inkbase.jsonio import JsonlAppender, read_jsonl
from inkbase.runs import start_run
from inkgrade.tables.grid import TableFit, cell_crops, find_table, rectify, table_margin
from inkgrade.tables.identity import IdMatch, match_id
from inkgrade.tables.layout import Layout, Table, load_key, load_layout
from inkgrade.tables.scans import load_page, page_sources
from inkgrade.workflow.scans import scan_files

CELL_COLUMNS = ("student_id", "table_id", "item_id", "pass1", "pass2", "accepted", "flag", "confidence")
GRADE_COLUMNS = ("student_id", "item_id", "run", "points", "max_points", "problem_type")
DIGITS = "0123456789"
# key_unverified is lowest: both passes read the key, only the evidence fell short.
FLAG_RISK = {"disagree": 0.95, "unreadable": 0.95, "crossed": 0.9, "outside_alphabet": 0.9, "empty": 0.85, "low_confidence": 0.8,
             "key_unverified": 0.6,
             "unidentified": 0.95}


def _label(c: str) -> str:
    """How a class is written in cells.csv: the character, ``-`` for empty, ``#`` for crossed out."""
    return "-" if c == EMPTY else "#" if c == CROSSED else c


@dataclass
class TableRead:
    table: Table
    fit: TableFit
    image: np.ndarray  # rectified table with margin
    crops: list[np.ndarray]
    probs: np.ndarray  # (n_cells, len(CLASSES)), calibrated, pass 1's network
    probs2: np.ndarray  # the same from pass 2's network (the same array when the reader has one network)
    cells: list[dict[str, Any]] = field(default_factory=list)


class TwoPass:
    """The two passes, each ``model`` (the cell reader) or ``llm`` (a vision model through the LLM client)."""

    def __init__(self, cfg: DictConfig, reader: CellReader):
        for name in ("pass1", "pass2"):
            if cfg[name] not in ("model", "llm"):
                raise ConfigError(name, f"{cfg[name]!r} is not one of model, llm")
        self.kinds = (cfg.pass1, cfg.pass2)
        self.reader = reader
        self.llm = None
        if "llm" in self.kinds:
            if cfg.get("llm") is None:
                raise ConfigError("llm", "pass1=llm or pass2=llm needs an llm config (e.g. llm=openai)")
            from grading.llm import LLMClient, load_settings
            from inkgrade.tables.llm_pass import PROMPT_VERSION, LLMTablePass

            self.llm = LLMTablePass(LLMClient(load_settings(cfg.llm), cfg.get("cache_dir"), PROMPT_VERSION))

    def read(self, tr: TableRead, alphabet: str, keys: list[str | None], source: str) -> list[tuple[str, str, float]]:
        """``(pass1, pass2, confidence)`` per cell; ``confidence`` is the reader's evidence for pass 2's
        reading (:meth:`htr.cells.reader.AcceptRule.evidence`; NaN when both passes are the language model)."""
        p = np.stack([restrict(q, alphabet) for q in tr.probs])
        p2 = np.stack([restrict(q, alphabet) for q in tr.probs2])
        n = len(tr.crops)
        rule = self.reader.rule_for(alphabet)
        if self.kinds[0] == "model":
            first = [rule.pass1(p[i], keys[i]) for i in range(n)]
        else:
            first = self.llm.read(tr.image, n, alphabet, keys, source)
        if self.kinds[1] == "model":
            second = [CLASSES[int(i)] for i in p2.argmax(1)]
        else:
            second = self.llm.read(tr.image, n, alphabet, None, source)
        model1, model2 = self.kinds[0] == "model", self.kinds[1] == "model"
        conf = [rule.evidence(p[i] if model1 else None, p2[i] if model2 else None, second[i]) for i in range(n)]
        return [(first[i], second[i], conf[i]) for i in range(n)]


def _alphabet(table: Table, layout: Layout) -> str:
    """What a table's cells may hold: digits for a student ID, else the layout's alphabet."""
    return DIGITS if table.role == "student_id" else layout.alphabet


def read_table(gray: np.ndarray, table: Table, reader: CellReader, search: float, alphabet: str) -> TableRead:
    fit = find_table(gray, table, search=search)
    image = rectify(gray, fit, table_margin(fit))
    crops = cell_crops(image, fit, len(table.cells))
    return TableRead(table, fit, image, crops, *reader.pass_probs(crops, alphabet))


def _selfcheck(path: Path, reads: list[TableRead]) -> None:
    """The cropped tables with the recognised letters written above each cell (red: flagged)."""
    from PIL import Image, ImageDraw, ImageFont

    rows = []
    for tr in reads:
        h, w = tr.image.shape
        band = max(28, h // 2)
        canvas = Image.new("RGB", (w, h + band), "white")
        canvas.paste(Image.fromarray(tr.image).convert("RGB"), (0, band))
        draw = ImageDraw.Draw(canvas)
        font = ImageFont.load_default(size=int(band * 0.7))
        m, n = table_margin(tr.fit), len(tr.cells)
        for i, cell in enumerate(tr.cells):
            x = m + (i + 0.5) * tr.fit.size[0] / n
            text = cell["pass2"] if cell["accepted"] else f"{cell['pass2']}?"
            draw.text((x, band / 2), text, fill="black" if cell["accepted"] else "red", font=font, anchor="mm")
        draw.text((2, 2), tr.table.id, fill="grey", font=ImageFont.load_default(size=12))
        rows.append(canvas)
    width = max(r.width for r in rows)
    out = Image.new("RGB", (width, sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    out.save(tmp)
    tmp.replace(path)


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    tmp.replace(path)


def final_cells(folder_path: Path) -> list[dict[str, Any]]:
    """Rows of finished scripts only, the last reading of each cell (a script cut short is read again)."""
    done = {r["script"] for r in read_jsonl(folder_path / "scripts.jsonl")}
    rows: dict[tuple, dict] = {}
    for r in read_jsonl(folder_path / "cells.jsonl"):
        if r["script"] in done:
            rows[(r["script"], r["table_id"], r["item_id"])] = r
    return list(rows.values())


def grade_rows(cells: list[dict[str, Any]], layout: Layout, key: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """The analysis long format: points for each keyed answer cell (pass 2's reading against the key)."""
    out = []
    for r in cells:
        table = layout.table(r["table_id"])
        expected = key.get(table.id, {}).get(r["item_id"])
        if table.role != "answers" or expected is None:
            continue
        pts = next(c.points for c in table.cells if c.item_id == r["item_id"])
        out.append({"student_id": r["student_id"], "item_id": r["item_id"], "run": "1",
                    "points": pts if r["pass2"] == expected else 0.0, "max_points": pts,
                    "problem_type": table.id})
    return out


def _identify(reads: list[TableRead], roster: list[str] | None, cfg: DictConfig, script: int) -> IdMatch | None:
    id_reads = [tr for tr in reads if tr.table.role == "student_id"]
    if not id_reads:
        return None
    # Both networks' probabilities averaged: the ID match weighs every digit of every roster ID.
    probs = np.concatenate([(tr.probs + tr.probs2) / 2 for tr in id_reads])
    if roster is not None:
        return match_id(probs, roster, cfg.identity.min_posterior, cfg.identity.min_digit_prob)
    p = np.stack([restrict(q, DIGITS) for q in probs])
    read = "".join(CLASSES[int(i)] for i in p.argmax(1))
    low = float(p.max(1).min())
    ok = read.isdigit() and low >= cfg.identity.min_digit_prob_no_roster
    return IdMatch(read if ok else None, read, float("nan"), low, "" if ok else f"ID {read} not read confidently")


class _Store:
    """The review queue in ``<exam_dir>/exam.sqlite`` (one item of kind ``table_cell`` per answer cell)."""

    def __init__(self, exam_dir: str, layout: Layout, roster_rows: list[dict[str, str]] | None):
        from inkgrade.store import ExamStore

        self.store = ExamStore.open(exam_dir, create=True)
        self.dir = Path(exam_dir)
        if roster_rows:
            self.store.upsert_students(roster_rows)
        pos = 0
        questions = []
        for t in layout.tables:
            if t.role != "answers":
                continue
            for c in t.cells:
                pos += 1
                questions.append({"question_id": c.item_id, "position": pos, "text": f"table {t.id}",
                                  "max_points": c.points, "problem_type": "table_cell"})
        self.store.upsert_questions(questions)
        self.store.set_meta("tables.layout_exam_id", layout.exam_id)

    def add(self, script: int, student_id: str, ident: IdMatch | None, pages: dict[str, np.ndarray],
            reads: list[TableRead], key: dict[str, dict[str, str]]) -> None:
        crops_dir = self.dir / "crops" / "tables"
        pages_dir = self.dir / "pages" / "tables"
        crops_dir.mkdir(parents=True, exist_ok=True)
        pages_dir.mkdir(parents=True, exist_ok=True)
        page_ids = {}
        for n, (source, gray) in enumerate(pages.items()):
            image = Path("pages") / "tables" / f"{script:04d}_{n + 1}.jpg"
            cv2.imwrite(str(self.dir / image), gray, [cv2.IMWRITE_JPEG_QUALITY, 85])
            assigned = ident is None or ident.student_id is not None
            page_ids[source] = self.store.add_page(
                source, str(image), "assigned" if assigned else "needs_identity",
                student_id=student_id if assigned and ident is not None else None,
                id_read=ident.read if ident else "", id_score=None if ident is None or math.isnan(ident.posterior)
                else ident.posterior, problem="" if assigned else ident.problem)
        for tr in reads:
            if tr.table.role != "answers":
                continue
            for cell, crop in zip(tr.cells, tr.crops, strict=True):
                name = f"{script:04d}_{tr.table.id}_{cell['item_id']}.png"
                cv2.imwrite(str(crops_dir / name), crop)
                expected = key.get(tr.table.id, {}).get(cell["item_id"])
                pts = next(c.points for c in tr.table.cells if c.item_id == cell["item_id"])
                flag = cell["flag"] or ("unidentified" if student_id.startswith("unidentified") else "")
                ai = None if expected is None else (pts if cell["pass2"] == expected else 0.0)
                self.store.put_item({
                    "answer_id": f"{student_id}:{tr.table.id}:{cell['item_id']}", "student_id": student_id,
                    "question_id": cell["item_id"], "kind": "table_cell", "page_id": page_ids.get(cell["source"]),
                    "crop": str(Path("crops") / "tables" / name), "transcription": cell["pass2"],
                    "ai_points": ai, "max_points": pts, "status": "unreviewed" if flag else "auto",
                    "risk": FLAG_RISK.get(flag, 0.0) if flag else round(1.0 - cell["confidence"], 4)
                    if not math.isnan(cell["confidence"]) else 0.0,
                    "risk_reason": flag, "details": {"pass1": cell["pass1"], "pass2": cell["pass2"],
                                                     "key": expected, "flags": [flag] if flag else [],
                                                     "confidence": cell["confidence"], "table_id": tr.table.id}})

    def close(self) -> None:
        self.store.close()


def run(cfg: DictConfig) -> dict[str, Any]:
    from tqdm import tqdm

    layout = load_layout(cfg.layout)
    key = load_key(cfg.key, layout)
    roster_rows = roster_ids = None
    if cfg.get("roster"):
        from grading.roster import load_roster

        students = load_roster(cfg.roster)
        roster_rows = [{"student_id": s.student_id, "name": s.name, "class": s.class_} for s in students]
        roster_ids = [s.student_id for s in students]
    files = scan_files(cfg.scans)
    pages = page_sources(files)
    folder = start_run(cfg.out_dir, cfg)
    reader = CellReader(cfg.weights)
    passes = TwoPass(cfg, reader)
    store = _Store(cfg.exam_dir, layout, roster_rows) if cfg.get("exam_dir") else None
    done = {r["script"] for r in read_jsonl(folder.file("scripts.jsonl"))}
    cells_log, scripts_log = JsonlAppender(folder.file("cells.jsonl")), JsonlAppender(folder.file("scripts.jsonl"))
    errors_log = JsonlAppender(folder.file("errors.jsonl"))
    pps = layout.pages_per_script
    width = int(max(t.page_size[0] for t in layout.tables))
    n_scripts = (len(pages) + pps - 1) // pps
    if len(pages) % pps:
        print(f"warning: {cfg.scans}: {len(pages)} pages is not a multiple of {pps} pages per script; the last "
              "script is incomplete", file=sys.stderr)
    for script in tqdm(range(n_scripts), desc="scripts", disable=not cfg.progress):
        if script in done:
            continue
        reads: list[TableRead] = []
        sources: dict[str, np.ndarray] = {}
        cell_source: dict[str, str] = {}
        for offset, (source, file, index) in enumerate(pages[script * pps:(script + 1) * pps]):
            tables = [t for t in layout.tables if t.page == offset + 1]
            if not tables:
                continue
            try:
                gray = load_page(file, index, width)
            except InputError as err:
                print(f"error: {err}", file=sys.stderr)
                errors_log.write({"script": script, "source": source, "problem": str(err)})
                continue
            page_reads = [read_table(gray, t, reader, cfg.grid.search, _alphabet(t, layout)) for t in tables]
            if not any(tr.fit.found for tr in page_reads):
                msg = f"{source}: no answer table found near the layout boxes ({', '.join(t.id for t in tables)})"
                print(f"error: {msg}", file=sys.stderr)
                errors_log.write({"script": script, "source": source, "problem": msg})
                continue
            for tr in page_reads:
                if not tr.fit.found:
                    print(f"warning: {source}: table {tr.table.id}: {tr.fit.problem}; reading the layout box",
                          file=sys.stderr)
                cell_source[tr.table.id] = source
            reads += page_reads
            sources[source] = gray
        ident = _identify(reads, roster_ids, cfg, script)
        student_id = f"script{script + 1:03d}" if ident is None else ident.student_id or f"unidentified{script + 1:03d}"
        if ident is not None and ident.student_id is None:
            print(f"warning: script {script + 1} ({', '.join(sources)}): {ident.problem}; flagged as {student_id}",
                  file=sys.stderr)
        for tr in reads:
            is_id = tr.table.role == "student_id"
            alphabet = _alphabet(tr.table, layout)
            if is_id:
                keys = list(ident.student_id) if ident and ident.student_id else [None] * len(tr.crops)
            else:
                keys = [key.get(tr.table.id, {}).get(c.item_id) for c in tr.table.cells]
            read = passes.read(tr, alphabet, keys, cell_source[tr.table.id])
            for cell, expected, (p1, p2, conf) in zip(tr.table.cells, keys, read, strict=True):
                flag = flag_cell(p1, p2, alphabet, conf, reader.rule_for(alphabet), expected)
                if is_id and not flag and ident is not None and ident.student_id is None:
                    flag = "unidentified"
                tr.cells.append({"script": script, "source": cell_source[tr.table.id], "student_id": student_id,
                                 "table_id": tr.table.id, "item_id": cell.item_id, "pass1": _label(p1),
                                 "pass2": _label(p2), "accepted": not flag, "flag": flag,
                                 "confidence": round(conf, 5) if not math.isnan(conf) else conf})
            cells_log.write_many(tr.cells)
        if reads:
            _selfcheck(folder.file("selfcheck", f"{student_id}.png"), reads)
        if store is not None:
            store.add(script, student_id, ident, sources, reads, key)
        scripts_log.write({"script": script, "student_id": student_id, "sources": list(sources),
                           "id_read": ident.read if ident else "", "id_problem": ident.problem if ident else ""})
        cells = final_cells(folder.path)
        _write_csv(folder.file("cells.csv"), CELL_COLUMNS, cells)
        _write_csv(folder.file("grades.csv"), GRADE_COLUMNS, grade_rows(cells, layout, key))
    if store is not None:
        store.close()
    cells = final_cells(folder.path)
    _write_csv(folder.file("cells.csv"), CELL_COLUMNS, cells)
    _write_csv(folder.file("grades.csv"), GRADE_COLUMNS, grade_rows(cells, layout, key))
    answers = [c for c in cells if layout.table(c["table_id"]).role == "answers"]
    scripts = read_jsonl(folder.file("scripts.jsonl"))
    metrics = {"scripts": len(scripts), "cells": len(answers),
               "accepted": sum(c["accepted"] for c in answers),
               "share_flagged": 1 - sum(c["accepted"] for c in answers) / max(len(answers), 1),
               "flags": dict(Counter(c["flag"] for c in answers if c["flag"])),
               "unidentified": sum(1 for s in scripts if s["student_id"].startswith("unidentified")),
               "page_errors": len(read_jsonl(folder.file("errors.jsonl")))}
    folder.finish(metrics)
    return metrics
