"""``scripts/evaluate_exam.py``: how well grade_exam did on scans whose truth is known (the sample exam
rendered by ``scripts/make_sample_scans.py``).

- identity: share of pages assigned to the student who wrote them, pages assigned to someone else
  (must be 0), pages left in ``needs_identity`` or ``unreadable``, template pages recognised;
- speed: pages per second of the grade_exam runs in ``exam_dir`` (their ``metrics.json`` stage times);
- grading: the AI's points against the sample exam's reference points (Pearson r, MAE, RMSE), the
  transcriptions against the typed answers (CER, WER), and whether the risk points at the errors
  (Spearman correlation of risk with |AI - reference|, and the error in the riskiest fifth vs the rest).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
from omegaconf import DictConfig
from scipy import stats

from grading.agreement import summary_agreement
from inkbase.errors import InputError
from inkbase.jsonio import read_jsonl
from inkbase.runs import hydra_output_dir, start_run
from inkgrade.store import ExamStore

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    scans_dir, exam_dir = Path(cfg.scans_dir), Path(cfg.exam_dir)
    truth_path = scans_dir / "truth.jsonl"
    if not truth_path.is_file():
        raise InputError(scans_dir, "truth.jsonl", "not found (render the scans with scripts/make_sample_scans.py)")
    truth = {str((scans_dir / t["file"]).resolve()) + f"#{t['page']}": t for t in read_jsonl(truth_path)}
    reference = {r["answer_id"]: r for r in read_jsonl(cfg.answers)}
    folder = start_run(hydra_output_dir(cfg.out_dir), cfg)
    with ExamStore.open(exam_dir) as store:
        pages, items = store.pages(), store.items()
    right = wrong = waiting = unreadable = template_ok = 0
    for p in pages:
        t = truth.get(str(Path(p["source"].rsplit("#", 1)[0]).resolve()) + "#" + p["source"].rsplit("#", 1)[1])
        if t is None:
            raise InputError(exam_dir, p["source"], "page not in truth.jsonl (graded from other scans?)")
        template_ok += p["template_page"] == t["template_page"]
        if p["status"] == "unreadable":
            unreadable += 1
        elif p["student_id"] is None:
            waiting += 1
        elif p["student_id"] == t["student_id"]:
            right += 1
        else:
            wrong += 1
    runs = [json.loads(m.read_text()) for m in sorted(exam_dir.glob("runs/grade_exam_*/metrics.json"))]
    seconds: dict[str, float] = {}
    for m in runs:
        for stage, s in m["seconds"].items():
            seconds[stage] = round(seconds.get(stage, 0.0) + s, 2)
    total = sum(seconds.values())
    graded = [i for i in items if i.ai_points is not None and i.answer_id in reference]
    ai = np.array([i.ai_points for i in graded])
    ref = np.array([reference[i.answer_id]["reference_points"] for i in graded])
    err = np.abs(ai - ref)
    risk = np.array([i.risk for i in graded])
    top = risk >= np.quantile(risk, 0.8) if len(risk) else risk.astype(bool)
    written = [(reference[i.answer_id]["text"], i.transcription) for i in graded if reference[i.answer_id]["text"]]
    metrics = {
        "pages": len(pages), "students": len({t["student_id"] for t in truth.values()}),
        "identity": {"pages_right": right, "pages_wrong": wrong, "pages_needs_identity": waiting,
                     "pages_unreadable": unreadable, "accuracy": round(right / len(pages), 4) if pages else None,
                     "template_page_accuracy": round(template_ok / len(pages), 4) if pages else None},
        "seconds": seconds, "pages_per_second": round(len(pages) / total, 3) if total else None,
        "ingest_pages_per_second": round(len(pages) / seconds["ingest"], 3) if seconds.get("ingest") else None,
        "items_graded": len(graded), "items_reference": len(reference),
        "ai_vs_reference": summary_agreement(ai, ref),
        "answer_cer_vs_typed": round(float(jiwer.cer([w for w, _ in written], [r for _, r in written])), 4),
        "answer_wer_vs_typed": round(float(jiwer.wer([w for w, _ in written], [r for _, r in written])), 4),
        "risk": {"spearman_risk_vs_abs_error": round(float(stats.spearmanr(risk, err).statistic), 4),
                 "mae_riskiest_fifth": round(float(err[top].mean()), 4),
                 "mae_rest": round(float(err[~top].mean()), 4)},
    }
    folder.finish(metrics)
    log.info("identity %d/%d right, %d wrong; %.2f pages/s; r %.3f", right, len(pages), wrong,
             metrics["pages_per_second"] or 0, metrics["ai_vs_reference"]["pearson_r"])
    return metrics
