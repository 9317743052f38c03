"""``scripts/benchmark_single_answer.py``: how long the single-answer page takes from upload to result.

Sample-exam answers are written out in a held-out handwriting font (a paragraph image per answer) and
uploaded with the sample rubric to ``POST /api/grade`` of an in-process app, exactly as the page does.
The first upload (which waits for the models to load) is reported apart from the warm ones; a private
embedding cache (``paths.cache_dir`` inside the run folder) keeps earlier runs from answering for this one.
"""

from __future__ import annotations

import io
import json
import logging
import os
import textwrap
import time
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from inkbase.errors import InputError, check_range
from inkbase.runs import hydra_output_dir, start_run

log = logging.getLogger(__name__)


def render_answer(text: str, font: Any, rng: np.random.Generator, width: int = 820, wrap: int = 52,
                  scale: float = 0.7) -> Image.Image:
    """``text`` handwritten in ``font`` (an ``htr.synth.fonts.Font``), wrapped into lines on white paper."""
    from htr.synth.lines import render_line

    if not text:
        return Image.new("L", (width, 150), 255)
    lines = []
    for part in textwrap.wrap(text, wrap):
        line = render_line(part, font, rng).convert("L")
        s = min(scale, (width - 24) / line.width)
        lines.append(line.resize((int(line.width * s), int(line.height * s))))
    out = Image.new("L", (width, sum(im.height for im in lines) + 24), 255)
    y = 12
    for im in lines:
        out.paste(im, (12, y))
        y += im.height
    return out


def run(cfg: DictConfig) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from grading.rubric import load_answers, load_rubric
    from htr.synth.fonts import list_fonts
    from inkgrade.review.app import ReviewSettings, create_app
    from inkgrade.review.single import SingleAnswerEngine
    from inkgrade.store import ExamStore

    check_range("n_answers", cfg.n_answers, 2, 10_000)
    rubric_path = Path(cfg.rubric)
    load_rubric(rubric_path)
    answers = [a for a in load_answers(cfg.answers) if a.text.strip()][: cfg.n_answers]
    fonts = [f for f in list_fonts(cfg.fonts) if not f.uppercase_only]
    if not fonts:
        raise InputError("fonts", cfg.fonts, "no mixed-case handwriting font is installed")
    folder = start_run(hydra_output_dir(cfg.out_dir), cfg)
    rng = np.random.default_rng(cfg.seed)
    store = ExamStore.open(folder.file("exam"), create=True)  # the app needs a store; this one stays empty
    engine = SingleAnswerEngine(cfg)
    client = TestClient(create_app(store, ReviewSettings(), engine), base_url="http://127.0.0.1")
    rubric_bytes = rubric_path.read_bytes()
    load_before = os.getloadavg()[0]
    rows = []
    with open(folder.file("results.jsonl"), "w") as out:
        for k, answer in enumerate(tqdm(answers, desc="upload", unit="answer")):
            image = render_answer(answer.text, fonts[k % len(fonts)], rng)
            buf = io.BytesIO()
            image.save(buf, "PNG")
            t0 = time.perf_counter()
            res = client.post("/api/grade", files={"image": ("answer.png", buf.getvalue(), "image/png"),
                                                   "rubric": ("rubric.json", rubric_bytes, "application/json")},
                              data={"question_id": answer.question_id})
            seconds = time.perf_counter() - t0
            if res.status_code != 200:
                raise RuntimeError(f"upload {answer.answer_id}: {res.status_code} {res.text}")
            body = res.json()
            row = {"answer_id": answer.answer_id, "seconds": round(seconds, 4), "server": body["seconds"],
                   "points": body["points"], "reference_points": answer.extra.get("reference_points"),
                   "text": answer.text, "transcription": body["transcription"], "cold": k == 0}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            rows.append(row)
    store.close()
    warm = np.array([r["seconds"] for r in rows[1:]])
    metrics = {
        "n_uploads": len(rows),
        "first_upload_seconds": rows[0]["seconds"],
        "warm_median_seconds": round(float(np.median(warm)), 3),
        "warm_p90_seconds": round(float(np.percentile(warm, 90)), 3),
        "warm_max_seconds": round(float(warm.max()), 3),
        "warm_read_median_seconds": round(float(np.median([r["server"]["read"] for r in rows[1:]])), 3),
        "warm_grade_median_seconds": round(float(np.median([r["server"]["grade"] for r in rows[1:]])), 3),
        "cer": round(float(jiwer.cer([r["text"] for r in rows], [r["transcription"] for r in rows])), 4),
        # The machine's 1-minute load average before and after: latencies on a shared machine depend on it.
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpu_count": os.cpu_count(),
        "recognizer": cfg.recognizer.name,
        "grader": cfg.grader.name,
    }
    folder.finish(metrics)
    log.info("single answer: warm median %.2f s (p90 %.2f s), first upload %.1f s -> %s",
             metrics["warm_median_seconds"], metrics["warm_p90_seconds"], metrics["first_upload_seconds"], folder.path)
    return metrics
