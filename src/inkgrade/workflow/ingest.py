"""``scripts/grade_exam.py``: scanned exams in, graded items in ``<exam_dir>/exam.sqlite`` out.

Stages, each resumable (what the store already holds is skipped, and every page and item is written
the moment it is finished, so a crash or an interruption loses nothing finished):

1. ``ingest``  every scan page: which template page it is (:func:`~inkgrade.workflow.template.place_page`),
               aligned to it (``pages/<name>.jpg``), regions cropped (``crops/<name>/<label>.png``), the
               booklet code read, and on a page with ID/NAME regions the identity read and matched to
               the roster. A page goes to a student only on a confident match; else ``needs_identity``.
               A page that cannot be read or placed is recorded ``unreadable`` and the run goes on.
2. ``assign``  pages without an ID region follow their booklet's ID page (same printed booklet code,
               or the only ID page of the same file when each student has a PDF of their own).
3. ``read``    answer crops of assigned pages: preprocess, segment lines, recognise; an empty answer is
               an item with 0 points and status ``auto`` (Wong), the others wait for grading.
4. ``grade``   the waiting items, question by question, with the configured grader.
5. ``risk``    every item's risk and reason (:mod:`~inkgrade.workflow.risk`), IRT once enough students.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from omegaconf import DictConfig
from PIL import Image
from rapidfuzz import fuzz, process
from tqdm import tqdm

from grading.analysis.irt import IrtPrior
from grading.roster import Student, load_roster, match_identity
from grading.rubric import Answer, Question, Rubric, load_rubric
from htr.preprocess import PreprocessConfig, preprocess
from htr.recognize import Recognizer, build_recognizer
from htr.regions import IDENTITY_LABELS, crop_regions
from htr.segment import SegmenterConfig, segment_lines
from inkbase.errors import config_dataclass
from inkbase.runs import hydra_output_dir, start_run
from inkgrade.store import ExamStore
from inkgrade.workflow.risk import RiskOptions, combine, grader_uncertainty, irt_risks
from inkgrade.workflow.scans import ScanPage, check_scans, iter_pages
from inkgrade.workflow.template import PageCode, TemplatePage, load_exam_template, place_page

log = logging.getLogger(__name__)

STAGES = ("ingest", "assign", "read", "grade", "risk")


# ---------------------------------------------------------------- reading regions
@dataclass
class RegionReader:
    """Crops in, text out, the way the pipeline reads answer boxes (preprocess, lines, recognise)."""

    recognizer: Recognizer
    pre: PreprocessConfig
    seg: SegmenterConfig

    def read(self, crops: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
        """Identity regions (ID, name) are read without the recogniser's language model: no word list
        predicts a name or a student number."""
        groups: dict[bool, tuple[list[Image.Image], list[tuple[str, int]]]] = {True: ([], []), False: ([], [])}
        out: dict[str, dict[str, Any]] = {}
        for label, crop in crops.items():
            image, scale = preprocess(crop, self.pre)
            boxes = segment_lines(image, self.seg)
            out[label] = {"lines": [{k: int(round(v / scale)) for k, v in b.as_dict().items()} for b in boxes]}
            images, owners = groups[label in IDENTITY_LABELS]
            for i, box in enumerate(boxes):
                images.append(Image.fromarray(box.crop(image)))
                owners.append((label, i))
        for identity, (images, owners) in groups.items():
            if not images:
                continue
            rec = self.recognizer
            if identity:
                rec = getattr(rec, "without_language_model", lambda r=rec: r)()  # duck-typed recognisers have none
            for (label, i), text in zip(owners, rec.recognize(images), strict=True):
                out[label]["lines"][i]["text"] = text
        for region in out.values():
            region["text"] = " ".join(line["text"] for line in region["lines"] if line["text"]).strip()
        return out


# ---------------------------------------------------------------- identity
def identify(read_id: str, read_name: str, roster: list[Student], min_score: float,
             min_margin: float) -> tuple[str | None, float, str]:
    """(student_id or None, score, problem). A student only when the roster match reaches ``min_score``,
    no confident, unambiguous reading of the other field names someone else, and the runner-up is ``min_margin``
    behind unless the other field confirms the student."""
    read_name = " ".join(re.sub(r"[^\w\s'-]|(?<!\w)[-']|[-'](?!\w)", " ", read_name).split())  # stray marks
    match = match_identity(read_id, read_name, roster)
    if match.student_id is None:
        return None, 0.0, "nothing legible in the ID and NAME regions"
    if match.score < min_score:
        return None, match.score, f"best roster match {match.student_id} scores {match.score:.0f} < {min_score:g}"
    norm = {s.student_id: "".join(ch for ch in s.student_id.upper() if ch.isalnum()) for s in roster}
    fields = {
        "ID": process.extract("".join(ch for ch in read_id.upper() if ch.isalnum()), norm, scorer=fuzz.ratio,
                              limit=2) if read_id.strip() else [],
        "NAME": process.extract(read_name.upper(), {s.student_id: s.name.upper() for s in roster},
                                scorer=fuzz.token_sort_ratio, limit=2) if read_name.strip() else [],
    }
    confirms = {f: bool(h) and h[0][2] == match.student_id and h[0][1] >= 60 for f, h in fields.items()}
    for field, hits in fields.items():
        decided = hits and hits[0][1] >= min_score and (len(hits) == 1 or hits[0][1] - hits[1][1] >= min_margin)
        if decided and hits[0][2] != match.student_id:
            return None, match.score, (f"ID and NAME disagree: {field} reads as {hits[0][2]}, the other field as "
                                       f"{match.student_id}")
        other = "NAME" if field == "ID" else "ID"
        if (hits and hits[0][2] == match.student_id and len(hits) > 1 and hits[0][1] - hits[1][1] < min_margin
                and not confirms[other]):
            return None, match.score, (f"{field} {read_id if field == 'ID' else read_name!r} fits {hits[0][2]} and "
                                       f"{hits[1][2]} alike and the other field does not decide")
    return match.student_id, match.score, ""


def roster_emails(path: str | Path) -> dict[str, str]:
    """The roster's optional ``email`` column (``grading.roster`` reads the required columns)."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if "email" not in (reader.fieldnames or []):
            return {}
        return {(r["student_id"] or "").strip(): (r["email"] or "").strip() for r in reader}


# ---------------------------------------------------------------- the job
@dataclass
class Exam:
    cfg: DictConfig
    rubric: Rubric
    roster: list[Student]
    templates: list[TemplatePage]
    store: ExamStore
    code: PageCode | None

    @property
    def exam_dir(self) -> Path:
        return self.store.exam_dir

    def template(self, key: str | None) -> TemplatePage | None:
        return next((t for t in self.templates if t.key == key), None)


def _name(page: ScanPage) -> str:
    digest = hashlib.sha1(str(page.file.resolve()).encode()).hexdigest()[:6]
    return f"{page.file.stem}_{digest}_p{page.number:03d}"


def ingest_stage(exam: Exam, reader: RegionReader, files: list[tuple[Path, int]]) -> int:
    cfg, store = exam.cfg, exam.store
    done = {p["source"] for p in store.pages()}
    total = sum(n for _, n in files) - len(done)
    limit = cfg.limit_pages
    count = 0
    bar = tqdm(total=total if limit is None else min(total, limit), desc="ingest", unit="page")
    for page in iter_pages(files, cfg.dpi, skip=done):
        if limit is not None and count >= limit:
            break
        ingest_page(exam, reader, page)
        count += 1
        bar.update(1)
    bar.close()
    return count


def ingest_page(exam: Exam, reader: RegionReader, page: ScanPage) -> None:
    cfg, store = exam.cfg, exam.store
    name = _name(page)
    image_rel = f"pages/{name}.jpg"
    (exam.exam_dir / "pages").mkdir(exist_ok=True)
    if page.image is None:
        log.warning("%s: unreadable: %s", page.source, page.problem)
        store.add_page(page.source, "", "unreadable", problem=page.problem)
        return
    placed = place_page(page.image, exam.templates, cfg.align, page.source, cfg.min_page_score)
    if placed.page is None:
        log.warning("%s: unreadable: %s", page.source, placed.problem)
        cv2.imwrite(str(exam.exam_dir / image_rel), page.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        store.add_page(page.source, image_rel, "unreadable", problem=placed.problem)
        return
    aligned, tpl = placed.aligned, placed.page
    cv2.imwrite(str(exam.exam_dir / image_rel), aligned, [cv2.IMWRITE_JPEG_QUALITY, 90])
    crops = crop_regions(aligned, tpl.regions)
    crop_dir = exam.exam_dir / "crops" / name
    crop_dir.mkdir(parents=True, exist_ok=True)
    for label, crop in crops.items():
        cv2.imwrite(str(crop_dir / f"{label}.png"), crop)
    booklet = exam.code.read(aligned) if exam.code is not None else None
    if not tpl.has_identity:
        store.add_page(page.source, image_rel, "needs_identity", template_page=tpl.key, booklet=booklet,
                       problem="no ID region on this page: it follows its booklet's ID page")
        return
    texts = reader.read({k: crops[k] for k in ("ID", "NAME") if k in crops})
    read_id, read_name = texts.get("ID", {}).get("text", ""), texts.get("NAME", {}).get("text", "")
    student, score, problem = identify(read_id, read_name, exam.roster, cfg.identity.min_score,
                                       cfg.identity.min_margin)
    id_read = f"{read_id} / {read_name}"
    if student is None:
        log.warning("%s: needs identity: read %r: %s", page.source, id_read, problem)
    store.add_page(page.source, image_rel, "assigned" if student else "needs_identity", template_page=tpl.key,
                   student_id=student, id_read=id_read, id_score=round(score, 1), problem=problem, booklet=booklet)


def assign_stage(exam: Exam) -> int:
    """Give pages without an ID region the student of their booklet's (or file's) ID page."""
    store = exam.store
    pages = store.pages()
    codes = store.page_codes()
    id_pages = [p for p in pages if (t := exam.template(p["template_page"])) is not None and t.has_identity]
    by_booklet: dict[int, set[str | None]] = defaultdict(set)
    by_file: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in id_pages:
        if p["page_id"] in codes:
            by_booklet[codes[p["page_id"]]].add(p["student_id"])
        by_file[p["source"].rsplit("#", 1)[0]].append(p)
    assigned = 0
    for p in pages:
        t = exam.template(p["template_page"])
        if p["student_id"] is not None or t is None or t.has_identity:
            continue
        booklet = codes.get(p["page_id"])
        file_ids = by_file.get(p["source"].rsplit("#", 1)[0], [])
        owner, problem = None, ""
        if booklet is not None:
            owners = by_booklet.get(booklet, set())
            if len(owners) == 1 and None not in owners:
                owner = next(iter(owners))
            elif not owners:
                problem = f"booklet {booklet}: its ID page has not been scanned"
            elif None in owners:
                problem = f"booklet {booklet}: its ID page could not be matched to the roster"
            else:
                problem = f"booklet {booklet}: its ID pages name different students ({', '.join(sorted(owners))})"
        elif len(file_ids) == 1 and file_ids[0]["student_id"] is not None:
            owner = file_ids[0]["student_id"]
        else:
            problem = ("no booklet code, and its file holds " +
                       ("no ID page" if not file_ids else f"{len(file_ids)} ID pages" if len(file_ids) > 1
                        else "an ID page that could not be matched"))
        if owner is not None:
            store.assign_page(p["page_id"], owner)
            assigned += 1
        elif problem != p["problem"]:
            store.set_page_problem(p["page_id"], "needs_identity", problem)
    return assigned


def read_stage(exam: Exam, reader: RegionReader) -> int:
    store = exam.store
    questions = {q.id: q for q in exam.rubric.questions}
    have = {i.answer_id: i for i in store.items()}
    work = []
    for p in store.pages("assigned"):
        tpl = exam.template(p["template_page"])
        labels = [lab for lab in tpl.labels if lab in questions] if tpl else []
        todo = [lab for lab in labels if f"{p['student_id']}-{lab}" not in have]
        for lab in labels:
            old = have.get(f"{p['student_id']}-{lab}")
            if old is not None and old.page_id != p["page_id"]:
                log.warning("%s: %s %s is already on page %s; this page's answer is left out", p["source"],
                            p["student_id"], lab, old.page_id)
        if todo:
            work.append((p, todo))
    n = 0
    for p, todo in tqdm(work, desc=f"read[{reader.recognizer.name}]", unit="page"):
        crop_dir = Path(p["image"]).stem
        crops = {}
        for lab in todo:
            crop = cv2.imread(str(exam.exam_dir / "crops" / crop_dir / f"{lab}.png"), cv2.IMREAD_GRAYSCALE)
            if crop is None:
                log.warning("%s: crop of %s is missing or unreadable", p["source"], lab)
                continue
            crops[lab] = crop
        for lab, region in reader.read(crops).items():
            q = questions[lab]
            item = {"answer_id": f"{p['student_id']}-{lab}", "student_id": p["student_id"], "question_id": lab,
                    "page_id": p["page_id"], "crop": f"crops/{crop_dir}/{lab}.png", "transcription": region["text"],
                    "max_points": q.max_points, "granularity": q.granularity}
            if not region["text"]:
                item.update(ai_points=0.0, status="auto", risk=0.0, risk_reason="empty answer: 0 points automatically",
                            details={"matched": [], "missing": [concept_entry(q, c.id) for c in q.concepts],
                                     "justification": "No answer written: 0 points (Wong).",
                                     "flags": ["empty"], "fraction": 0.0, "lines": region["lines"]})
            else:
                item["details"] = {"lines": region["lines"]}
            store.put_item(item)
            n += 1
    return n


def concept_entry(question: Question, concept_id: str, found: dict[str, Any] | None = None) -> dict[str, Any]:
    label = next((c.label for c in question.concepts if c.id == concept_id), concept_id)
    entry = {"id": concept_id, "label": label}
    if found:
        entry.update(span=found.get("span", ""), similarity=found.get("similarity"))
    return entry


def item_details(question: Question, result, grader_name: str, lines: list) -> dict[str, Any]:
    """What the review app shows: matched / missing concepts (with spans and similarities where the
    grader reports them), a justification, flags, and the grader's raw numbers."""
    d = dict(result.details)
    found = {e["id"]: e for e in d.get("matches", []) + d.get("closest_missing", [])}
    matched = [concept_entry(question, c, found.get(c)) for c in result.matched]
    missing = [concept_entry(question, c, found.get(c)) for c in result.missing]
    fraction = float(d.get("fraction", result.points / result.max_points))
    parts = []
    if matched or missing:
        total = sum(c.weight for c in question.concepts) or 1.0
        got = sum(c.weight for c in question.concepts if c.id in set(result.matched))
        parts.append(f"Found {len(matched)} of {len(matched) + len(missing)} rubric concepts (weight {got:g} of "
                     f"{total:g})" + (": " + "; ".join(c["label"] for c in matched) if matched else "") + ".")
        if missing:
            parts.append("Missing: " + "; ".join(
                c["label"] + (f" (closest: \"{c['span']}\", similarity {c['similarity']:.2f})"
                              if c.get("span") and c.get("similarity") is not None else "") for c in missing) + ".")
    if "alpha" in d and "s_kg" in d and "s_other" in d:
        parts.append(f"Score {d['alpha']:g} x concept coverage {d['s_kg']:.2f} + {1 - d['alpha']:g} x "
                     f"{d.get('other', 'other')} {d['s_other']:.2f} = {fraction:.2f}.")
    for key in ("justification", "reasoning", "rationale", "feedback"):
        if isinstance(d.get(key), str) and d[key].strip():
            parts.append(d[key].strip())
    parts.append(f"{fraction:.2f} of {question.max_points:g} points, rounded to {question.granularity:g}: "
                 f"{result.points:g}.")
    flags = []
    if 0 < fraction < 1:
        flags.append("partial_credit")
    if d.get("needs_review"):
        flags.append("grader_needs_review")
    scores = {k: v for k, v in d.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return {"grader": grader_name, "fraction": round(fraction, 6), "threshold": d.get("threshold"),
            "matched": matched, "missing": missing, "justification": " ".join(parts), "flags": flags,
            "needs_review": bool(d.get("needs_review", False)), "scores": scores, "lines": lines}


def grade_stage(exam: Exam, grader_factory) -> int:
    store, cfg = exam.store, exam.cfg
    pending = [i for i in store.items(kind="answer", order="student") if i.ai_points is None]
    if not pending:
        return 0
    grader = grader_factory()
    by_question: dict[str, list] = defaultdict(list)
    for i in pending:
        by_question[i.question_id].append(i)
    bar = tqdm(total=len(pending), desc=f"grade[{grader.name}]", unit="ans")
    opts = config_dataclass(RiskOptions, cfg.risk, "risk")
    for qid, items in by_question.items():
        q = exam.rubric.question(qid)
        for start in range(0, len(items), cfg.chunk_size):
            chunk = items[start:start + cfg.chunk_size]
            results = grader.grade(q, [Answer(answer_id=i.answer_id, question_id=qid, text=i.transcription)
                                       for i in chunk])
            for i, r in zip(chunk, results, strict=True):
                details = item_details(q, r, grader.name, i.details.get("lines", []))
                risk, reason = grader_uncertainty(details, q.max_points, q.granularity, opts)
                store.put_item({**i.as_dict(), "ai_points": r.points, "details": details, "risk": round(risk, 4),
                                "risk_reason": reason})
            bar.update(len(chunk))
    bar.close()
    return len(pending)


def risk_stage(exam: Exam) -> str:
    """Refresh every graded item's risk (IRT needs all students, so it is recomputed on each run)."""
    store, cfg = exam.store, exam.cfg
    opts = config_dataclass(RiskOptions, cfg.risk, "risk")
    items = [i for i in store.items(kind="answer") if i.ai_points is not None]
    fractions = {(i.student_id, i.question_id): i.ai_points / i.max_points for i in items}
    irt, irt_note = irt_risks(fractions, sorted({s for s, _ in fractions}), [q.id for q in exam.rubric.questions],
                              IrtPrior(**cfg.analysis.irt), opts.irt_min_students)
    for i in items:
        if i.status == "auto":
            continue
        grader = grader_uncertainty(i.details, i.max_points, i.granularity, opts)
        risk, reason = combine(grader, irt.get((i.student_id, i.question_id)), i.ai_points / i.max_points)
        if risk != i.risk or reason != i.risk_reason:
            store.put_item({**i.as_dict(), "risk": risk, "risk_reason": reason})
    return irt_note


def open_exam(cfg: DictConfig) -> Exam:
    """Check every input before anything in ``exam_dir`` changes; then open (or create) the store."""
    rubric = load_rubric(cfg.rubric)
    roster = load_roster(cfg.roster)
    templates = load_exam_template(cfg.template, rubric, cfg.blank, cfg.dpi)
    store = ExamStore.open(cfg.exam_dir, create=True)
    emails = roster_emails(cfg.roster)
    store.upsert_students([{"student_id": s.student_id, "name": s.name, "class": s.class_,
                            "email": emails.get(s.student_id, "")} for s in roster])
    store.upsert_questions([{"question_id": q.id, "position": k, "text": q.text, "max_points": q.max_points,
                             "granularity": q.granularity, "problem_type": q.problem_type or ""}
                            for k, q in enumerate(rubric.questions)])
    for key in ("rubric", "template", "roster"):
        store.set_meta(key, str(Path(cfg[key]).resolve()))
    store.set_meta("grader", cfg.grader.name)
    store.set_meta("exam_id", rubric.exam_id)
    store.set_meta("regions", {t.key: t.regions for t in templates})  # for the export and the review app
    code = config_dataclass(PageCode, cfg.page_code, "page_code") if cfg.page_code is not None else None
    return Exam(cfg, rubric, roster, templates, store, code)


def run(cfg: DictConfig, recognizer: Recognizer | None = None, grader_factory=None) -> dict[str, Any]:
    """All stages into ``cfg.exam_dir``; returns (and writes to the run folder) what was done.
    ``recognizer`` / ``grader_factory`` replace the configured ones (tests wrap them to count calls)."""
    if cfg.stop_after not in STAGES:
        from inkbase.errors import ConfigError

        raise ConfigError("stop_after", f"{cfg.stop_after!r} is not one of {', '.join(STAGES)}")
    blank = Path(cfg.blank) if cfg.blank else Path(cfg.template).parent / "blank.pdf"
    files = [(f, n) for f, n in check_scans(cfg.scans) if f.resolve() != blank.resolve()]  # the unfilled exam
    exam = open_exam(cfg)
    folder = start_run(hydra_output_dir(cfg.out_dir), cfg)
    if grader_factory is None:
        def grader_factory():
            from grading.grade import embedder_from_config
            from grading.graders import build_grader

            return build_grader(cfg.grader, embedder_from_config(cfg))
    reader = RegionReader(recognizer or build_recognizer(cfg.recognizer), PreprocessConfig.from_dict(cfg.preprocess),
                          SegmenterConfig.from_dict(cfg.segmenter))
    seconds: dict[str, float] = {}
    done: dict[str, Any] = {}
    steps = (("ingest", lambda: ingest_stage(exam, reader, files)), ("assign", lambda: assign_stage(exam)),
             ("read", lambda: read_stage(exam, reader)), ("grade", lambda: grade_stage(exam, grader_factory)),
             ("risk", lambda: risk_stage(exam)))
    try:
        for name, step in steps:
            t0 = time.perf_counter()
            done[name] = step()
            seconds[name] = round(time.perf_counter() - t0, 2)
            if name == cfg.stop_after:
                break
        metrics = summary(exam.store)
        metrics.update(new_pages=done.get("ingest", 0), pages_assigned_by_booklet=done.get("assign", 0),
                       new_items=done.get("read", 0), graded=done.get("grade", 0), irt=done.get("risk"),
                       seconds=seconds)
    finally:
        exam.store.close()
    folder.finish(metrics)
    log.info("%d pages (%d assigned, %d need identity, %d unreadable), %d items -> %s", metrics["pages"],
             metrics["assigned"], metrics["needs_identity"], metrics["unreadable"], metrics["items"], cfg.exam_dir)
    return metrics


def summary(store: ExamStore) -> dict[str, Any]:
    pages = store.pages()
    items = store.items()
    return {"pages": len(pages), "assigned": sum(p["status"] == "assigned" for p in pages),
            "needs_identity": sum(p["status"] == "needs_identity" for p in pages),
            "unreadable": sum(p["status"] == "unreadable" for p in pages),
            "items": len(items), "auto": sum(i.status == "auto" for i in items),
            "items_graded": sum(i.ai_points is not None for i in items)}
