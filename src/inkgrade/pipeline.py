"""The main job: render an exam as scanned handwritten scripts, read them back, grade and analyse.

Stages, each writing files in the run folder that the next one reads (and each resumable: work
already on disk is skipped when an interrupted run is started again):

1. ``render``     -> ``template.json``, ``pages/<script>_p<k>.png``, ``truth.jsonl`` (what was written where)
2. ``read``       -> ``regions/<script>/<label>.png`` (aligned crops), ``transcriptions.jsonl``
                     (per script: identity read off the NAME/ID regions and matched to the roster;
                     per answer region: line boxes after preprocessing and segmentation, and texts)
3. ``grade``      -> ``answers.jsonl`` (transcribed answers), ``scores.jsonl``; and, to measure what
                     recognition costs, ``scores_typed.jsonl`` from grading the written text itself
4. ``analyse``    -> ``ai.csv`` / ``human.csv`` (long format), ``analysis/`` (Cvengros & Kortemeyer tables and
                     figures), ``table_*.md|csv``, ``scatter.png``, ``metrics.json``

A script is named by the roster id of the student whose answers it carries (the demo knows who wrote
what); the identity the pipeline *reads* is recorded and scored separately.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import jiwer
import numpy as np
import pandas as pd
from omegaconf import DictConfig
from tqdm import tqdm

from grading.agreement import summary_agreement
from grading.grade import embedder_from_config, grade_answers
from grading.graders import build_grader
from grading.roster import Student, load_roster, match_identity
from grading.rubric import Answer, Rubric, load_answers, load_rubric
from htr.regions import IDENTITY_LABELS
from inkbase.errors import InputError, config_dataclass
from inkbase.jsonio import JsonlAppender, read_jsonl, write_json
from inkbase.runs import RunFolder, hydra_output_dir, start_run

log = logging.getLogger(__name__)



@dataclass
class Exam:
    rubric: Rubric
    answers: list[Answer]
    roster: list[Student]

    @classmethod
    def load(cls, cfg: DictConfig) -> Exam:
        rubric = load_rubric(cfg.rubric)
        answers = load_answers(cfg.answers, rubric)
        roster = load_roster(cfg.roster)
        ids = {s.student_id for s in roster}
        for a in answers:
            sid = a.extra.get("student_id")
            if sid not in ids:
                raise InputError(cfg.answers, f"answer {a.answer_id}: student_id", f"{sid!r} is not in the roster")
        return cls(rubric, answers, roster)

    def scripts(self, limit: int | None) -> list[tuple[Student, dict[str, Answer]]]:
        by_student: dict[str, dict[str, Answer]] = {}
        for a in self.answers:
            by_student.setdefault(a.extra["student_id"], {})[a.question_id] = a
        chosen = [s for s in self.roster if s.student_id in by_student]
        return [(s, by_student[s.student_id]) for s in chosen[:limit]]


# ---------------------------------------------------------------- render
def exam_layout(cfg: DictConfig, exam: Exam):
    """The printed layout (pages, boxes, registration marks); deterministic, so each stage rebuilds it."""
    from htr.synth.pages import PageConfig, layout_exam

    return layout_exam(exam.rubric.exam_id, question_boxes(exam.rubric),
                       config_dataclass(PageConfig, cfg.scripts.page, "scripts.page"))


def question_boxes(rubric: Rubric) -> list:
    """What the printed page shows of each rubric question (id, text, points)."""
    from htr.synth.pages import QuestionBox

    return [QuestionBox(q.id, q.text, q.max_points) for q in rubric.questions]


def render_stage(cfg: DictConfig, exam: Exam, folder: RunFolder) -> None:
    from htr.synth.fonts import list_fonts
    from htr.synth.lines import AugmentConfig
    from htr.synth.pages import ScanConfig, render_exam

    layout = exam_layout(cfg, exam)
    write_json(folder.file("template.json"), layout.template())
    fonts = [f for f in list_fonts(cfg.scripts.fonts) if not f.uppercase_only]
    if not fonts:
        raise InputError("fonts", cfg.scripts.fonts, "no mixed-case handwriting font is installed")
    scan = config_dataclass(ScanConfig, cfg.scripts.scan, "scripts.scan")
    augment = AugmentConfig.from_dict(cfg.augment)
    done = {r["script"] for r in read_jsonl(folder.file("truth.jsonl"))}
    (folder.path / "pages").mkdir(exist_ok=True)
    with JsonlAppender(folder.file("truth.jsonl")) as out:
        for index, (student, answers) in enumerate(tqdm(exam.scripts(cfg.scripts.max_students), desc="render",
                                                        unit="script")):
            if student.student_id in done:
                continue
            # One generator per script, so a resumed run renders exactly what a fresh one would.
            rng = np.random.default_rng([int(cfg.scripts.seed), index])
            font = fonts[int(rng.integers(len(fonts)))]
            rendered = render_exam(layout, {"name": student.name, "id": student.student_id, "class": student.class_},
                                   {qid: a.text for qid, a in answers.items()}, font, rng, scan, augment)
            pages = []
            for k, page in enumerate(rendered.pages):
                name = f"pages/{student.student_id}_p{k}.png"
                page.save(folder.file(name))
                pages.append(name)
            out.write({"script": student.student_id, **rendered.truth, "page_files": pages})


# ---------------------------------------------------------------- read
def read_stage(cfg: DictConfig, exam: Exam, folder: RunFolder) -> None:
    from htr.preprocess import PreprocessConfig
    from htr.recognize import build_recognizer
    from htr.regions import align_page, crop_regions
    from htr.segment import SegmenterConfig
    from inkgrade.workflow.ingest import RegionReader

    layout = exam_layout(cfg, exam)
    template = layout.template()
    recognizer = build_recognizer(cfg.recognizer)
    reader = RegionReader(recognizer, PreprocessConfig.from_dict(cfg.preprocess),
                          SegmenterConfig.from_dict(cfg.segmenter))
    done = {r["script"] for r in read_jsonl(folder.file("transcriptions.jsonl"))}
    truth = read_jsonl(folder.file("truth.jsonl"))
    with JsonlAppender(folder.file("transcriptions.jsonl")) as out:
        for script in tqdm(truth, desc=f"read[{recognizer.name}]", unit="script"):
            if script["script"] in done:
                continue
            crops_dir = folder.path / "regions" / script["script"]
            crops_dir.mkdir(parents=True, exist_ok=True)
            crops, pages = {}, {}
            for k, page_file in enumerate(script["page_files"]):
                scan = cv2.imread(str(folder.file(page_file)), cv2.IMREAD_GRAYSCALE)
                if scan is None:
                    raise InputError(folder.file(page_file), "(image)", "unreadable")
                aligned = align_page(scan, k, layout, method=cfg.align, source=str(folder.file(page_file)))
                for label, crop in crop_regions(aligned, template[str(k)]).items():
                    cv2.imwrite(str(crops_dir / f"{label}.png"), crop)
                    crops[label], pages[label] = crop, k
            regions = {label: {"page": pages[label], **region} for label, region in reader.read(crops).items()}
            match = match_identity(regions.get("ID", {}).get("text", ""), regions.get("NAME", {}).get("text", ""),
                                   exam.roster)
            out.write({"script": script["script"], "student_id_read": match.student_id,
                       "identity_score": round(match.score, 1),
                       "identity_review": match.needs_review(cfg.identity_min_score), "regions": regions})


# ---------------------------------------------------------------- grade
def grade_stage(cfg: DictConfig, exam: Exam, folder: RunFolder) -> None:
    reference = {a.answer_id: a for a in exam.answers}
    truth = {r["script"]: r for r in read_jsonl(folder.file("truth.jsonl"))}
    rows, typed = [], []
    for tr in read_jsonl(folder.file("transcriptions.jsonl")):
        for q in exam.rubric.questions:
            answer_id = f"{tr['script']}-{q.id}"
            ref = reference.get(answer_id)
            written = truth[tr["script"]]["regions"].get(q.id, {}).get("text", "")
            extra = {"student_id": tr["script"], "reference_points": ref.extra.get("reference_points") if ref else None}
            rows.append({"answer_id": answer_id, "question_id": q.id, "text": tr["regions"].get(q.id, {}).get("text", ""),
                         "written_text": written, **extra})
            typed.append({"answer_id": answer_id, "question_id": q.id, "text": written, **extra})
    pd.DataFrame(rows).to_json(folder.file("answers.jsonl"), orient="records", lines=True, force_ascii=False)
    grader = build_grader(cfg.grader, embedder_from_config(cfg))
    for name, records in (("scores.jsonl", rows), ("scores_typed.jsonl", typed)):
        answers = [Answer.model_validate(r) for r in records]
        grade_answers(grader, exam.rubric, answers, folder.file(name), chunk_size=cfg.chunk_size)


# ---------------------------------------------------------------- analyse
def analyse_stage(cfg: DictConfig, exam: Exam, folder: RunFolder, timings: dict[str, float]) -> dict[str, Any]:
    from grading.analysis.analyze import AnalysisOptions, analyze, write_outputs
    from grading.analysis.io import load_grades, scores_to_long_csv

    answers = folder.file("answers.jsonl")
    ai_csv, human_csv = scores_to_long_csv({"handwritten": folder.file("scores.jsonl")}, answers, cfg.exam.rubric,
                                           folder.file("ai.csv"), folder.file("human.csv"))
    data = load_grades(ai_csv, human_csv)
    options = AnalysisOptions.from_config(cfg.analysis)
    analysis = analyze(data, options)
    (folder.path / "analysis").mkdir(exist_ok=True)
    write_json(folder.file("analysis", "analysis.json"), analysis.result)
    write_outputs(data, analysis, options, folder.path / "analysis")

    rows = pd.read_json(answers, lines=True, dtype={"answer_id": str, "student_id": str})
    scores = pd.DataFrame(read_jsonl(folder.file("scores.jsonl"))).set_index("answer_id")
    typed = pd.DataFrame(read_jsonl(folder.file("scores_typed.jsonl"))).set_index("answer_id")
    rows["points"] = rows["answer_id"].map(scores["points"])
    rows["points_typed"] = rows["answer_id"].map(typed["points"])
    rows = rows.dropna(subset=["reference_points"])
    table = agreement_table(rows, exam.rubric)
    table.to_csv(folder.file("table_agreement.csv"), index=False)
    folder.file("table_agreement.md").write_text(table.to_markdown(index=False, floatfmt=".3f") + "\n")
    scatter_plot(rows, exam.rubric, folder.file("scatter.png"))

    written = [t for t in rows["written_text"] if t.strip()]
    read = [r for r, t in zip(rows["text"], rows["written_text"], strict=True) if t.strip()]
    transcripts = read_jsonl(folder.file("transcriptions.jsonl"))
    identity_ok = [t["student_id_read"] == t["script"] for t in transcripts]
    hand = summary_agreement(rows["points"], rows["reference_points"])
    typed_m = summary_agreement(rows["points_typed"], rows["reference_points"])
    return {
        "n_scripts": len(transcripts),
        "n_answers": int(len(rows)),
        "n_lines": int(sum(len(r["lines"]) for t in transcripts for lab, r in t["regions"].items()
                           if lab not in IDENTITY_LABELS)),
        "recognizer": cfg.recognizer.name,
        "grader": cfg.grader.name,
        "answer_cer": round(float(jiwer.cer(written, read)), 4) if written else None,
        "answer_wer": round(float(jiwer.wer(written, read)), 4) if written else None,
        "identity_accuracy": round(float(np.mean(identity_ok)), 4),
        "identity_review": int(sum(t["identity_review"] for t in transcripts)),
        "handwritten_vs_reference": hand,
        "typed_vs_reference": typed_m,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }


def agreement_table(rows: pd.DataFrame, rubric: Rubric) -> pd.DataFrame:
    """Pearson r / MAE / RMSE of points from transcriptions and from the written text, per question."""
    out = []
    groups = [(q.id, q.subject or "", rows[rows["question_id"] == q.id]) for q in rubric.questions]
    groups.append(("all", "", rows))
    for qid, subject, part in groups:
        hand = summary_agreement(part["points"], part["reference_points"])
        typed = summary_agreement(part["points_typed"], part["reference_points"])
        out.append({"question": qid, "subject": subject, "n": hand["n"],
                    "r (handwritten)": hand["pearson_r"], "MAE (handwritten)": hand["mae"],
                    "RMSE (handwritten)": hand["rmse"], "r (typed)": typed["pearson_r"],
                    "MAE (typed)": typed["mae"], "RMSE (typed)": typed["rmse"]})
    return pd.DataFrame(out)


def scatter_plot(rows: pd.DataFrame, rubric: Rubric, path: Path) -> None:
    """Machine vs reference points with the least-squares line, handwritten and typed side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharex=True, sharey=True)
    top = max(q.max_points for q in rubric.questions)
    rng = np.random.default_rng(0)  # jitter only separates overlapping points in the picture
    for ax, column, title in ((axes[0], "points", "from handwriting (recognised)"),
                              (axes[1], "points_typed", "from the written text (typed)")):
        for q in rubric.questions:
            part = rows[rows["question_id"] == q.id]
            jitter = rng.uniform(-0.06, 0.06, size=(2, len(part)))
            ax.scatter(part["reference_points"] + jitter[0], part[column] + jitter[1], s=18, alpha=0.75,
                       label=f"{q.id} {q.subject or ''}".strip())
        m = summary_agreement(rows[column], rows["reference_points"])
        xs = np.linspace(0, top, 2)
        fit, = ax.plot(xs, m["slope"] * xs + m["offset"], color="black",
                       label=f"fit: y = {m['slope']:.2f}x + {m['offset']:.2f}, R² = {m['r2']:.2f}")
        ax.plot(xs, xs, color="grey", linestyle=":", linewidth=1)
        if ax is axes[0]:
            ax.legend(handles=[fit], fontsize=7, loc="upper left")
        ax.set_title(f"{title}\nr = {m['pearson_r']:.3f}, MAE = {m['mae']:.2f}, RMSE = {m['rmse']:.2f}")
        ax.set_xlabel("reference points")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("machine points")
    axes[1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def run(cfg: DictConfig) -> dict[str, Any]:
    """``scripts/run_pipeline.py``: all stages into one run folder; returns the headline metrics."""
    exam = Exam.load(cfg.exam)
    folder = start_run(hydra_output_dir(cfg.out_dir), cfg)
    timings: dict[str, float] = {}
    for name, stage in (("render", render_stage), ("read", read_stage), ("grade", grade_stage)):
        t0 = time.perf_counter()
        stage(cfg, exam, folder)
        timings[name] = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = analyse_stage(cfg, exam, folder, timings)
    metrics["seconds"]["analyse"] = round(time.perf_counter() - t0, 1)
    folder.finish(metrics)
    log.info("pipeline: %d scripts, answer CER %.3f, r %.3f (typed %.3f) -> %s", metrics["n_scripts"],
             metrics["answer_cer"] or float("nan"), metrics["handwritten_vs_reference"]["pearson_r"],
             metrics["typed_vs_reference"]["pearson_r"], folder.path)
    return metrics
