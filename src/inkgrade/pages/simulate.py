"""Inputs for the page-grading plumbing experiment (``scripts/simulate_page_grading.py``).

1. The bundled sample exam rendered as scanned handwritten pages by the main job's render stage
   (``pages/<student>_p<k>.png``, ``template.json``, ``truth.jsonl``).
2. ``recorded_replies.jsonl`` for ``scripts/serve_recorded_replies.py``: for every page and run, a reply that
   awards each part on the page its reference points, or (deterministically, per student, part and run) the
   reference plus noise, sometimes one step over the maximum; some pages get a 429 or malformed JSON first.
   **These replies are simulated, not a model's grading**: they exercise grading's plumbing (retries,
   clamping, runs, resume) and the Cvengros & Kortemeyer analysis on known numbers.
3. ``human.csv``: the sample exam's reference points in the long format (``analyze_grades.py human=``).

Each page is keyed by the hash of its image exactly as ``grade_pages`` sends it (identity boxes blanked), so
``grade_pages`` must run with ``redact_identity=true`` (the default) and the ``template.json`` written here.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from omegaconf import DictConfig

from grading.rubric import Question
from inkbase.errors import check_range
from inkbase.jsonio import JsonlAppender
from inkbase.runs import hydra_output_dir, start_run
from inkgrade.pages.grade import GRADES_HEADER, write_csv
from inkgrade.pages.inputs import find_pages, load_page_template, page_bytes
from inkgrade.pages.replay import image_sha256
from inkgrade.pipeline import Exam, render_stage


def simulated_points(reference: float, q: Question, rng: np.random.Generator, sim: DictConfig) -> float:
    """Reference points, or reference + noise on the question's granularity (in range, or one step over)."""
    u = rng.random()
    if u < sim.over_max_share:
        return q.max_points + q.granularity
    if u < sim.over_max_share + sim.exact_share:
        return reference
    noisy = reference + rng.normal(0.0, sim.noise_sd * q.max_points)
    return min(max(math.floor(noisy / q.granularity + 0.5) * q.granularity, 0.0), q.max_points)


def page_replies(parts: list[tuple[int, Question]], reference: dict[str, float], student_index: int,
                 runs: int, sim: DictConfig, page_number: int) -> list[dict[str, Any]]:
    """The recorded entries for one page: optional 429 / malformed first, then one reply per run."""
    entries: list[dict[str, Any]] = []
    if page_number % sim.rate_limited_every == 0:
        entries.append({"status": 429, "headers": {"Retry-After": "0.2"},
                        "body": {"error": {"message": "simulated rate limit"}}})
    if page_number % sim.malformed_every == 0:
        entries.append({"content": '{"grades": [{"problem_part": "', "usage": {}})
    for run in range(1, runs + 1):
        grades = []
        for position, q in parts:
            rng = np.random.default_rng([int(sim.seed), student_index, position, run])
            points = simulated_points(reference[q.id], q, rng, sim)
            grades.append({"problem_part": q.id, "awarded_points": points,
                           "explanation": f"simulated reply: reference {reference[q.id]:g}, awarded {points:g}"})
        entries.append({"content": json.dumps({"grades": grades}), "usage": {}})
    return entries


def run(cfg: DictConfig) -> dict[str, Any]:
    """``scripts/simulate_page_grading.py``: returns the run's metrics (also written to ``metrics.json``)."""
    check_range("runs", cfg.runs, 1, 1000)
    exam = Exam.load(cfg.exam)
    folder = start_run(hydra_output_dir(cfg.out_dir), cfg)
    render_stage(cfg, exam, folder)
    template = load_page_template(folder.file("template.json"))
    parts = exam.rubric.by_id
    position = {q.id: i for i, q in enumerate(exam.rubric.questions)}
    students = [s.student_id for s, _ in exam.scripts(cfg.scripts.max_students)]
    reference = {(a.extra["student_id"], a.question_id): float(a.extra["reference_points"]) for a in exam.answers}
    pages = find_pages(folder.file("pages"), 150.0).pages
    n_replies = n_errors = 0
    # Rewritten whole on every run: the content is a function of the rendered pages and the settings.
    path = folder.file("recorded_replies.jsonl")
    path.unlink(missing_ok=True)
    with JsonlAppender(path) as out:
        for number, page in enumerate(pages, start=1):
            on_page = [(position[pid], parts[pid]) for pid in template.parts_on(page.index, exam.rubric)]
            if not on_page:
                continue
            key = image_sha256(*page_bytes(page, 150.0, template.identity_boxes(page.index)))
            ref = {q.id: reference[(page.student_id, q.id)] for _, q in on_page}
            entries = page_replies(on_page, ref, students.index(page.student_id), int(cfg.runs), cfg.simulation,
                                   number)
            out.write({"image_sha256": key, "page": page.key, "replies": entries})
            n_replies += int(cfg.runs)
            n_errors += len(entries) - int(cfg.runs)
    human = [{"student_id": sid, "item_id": q.id, "points": reference[(sid, q.id)], "max_points": q.max_points,
              "problem_type": q.problem_type} for sid in students for q in exam.rubric.questions]
    write_csv(folder.file("human.csv"), [c for c in GRADES_HEADER if c != "run"], human)
    metrics = {"students": len(students), "pages": len(pages), "runs": int(cfg.runs),
               "simulated_replies": n_replies, "error_entries": n_errors, "human_rows": len(human)}
    folder.finish(metrics)
    return metrics

