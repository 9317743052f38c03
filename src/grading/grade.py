"""Grade an answers file against a rubric: ``scores.jsonl`` in a run folder, resumable.

Answers are graded question by question in chunks; each finished chunk is appended to
``scores.jsonl`` at once, so an interrupted run loses nothing and resumes with the answers it had not
graded yet.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from tqdm import tqdm

from grading.embed import MAX_UNKNOWN_SHARE, get_embedder, unknown_token_share
from grading.graders import Grader, build_grader
from grading.rubric import Answer, Rubric, load_answers, load_rubric
from inkbase.errors import InputError
from inkbase.jsonio import JsonlAppender, read_jsonl
from inkbase.runs import hydra_output_dir, start_run

log = logging.getLogger(__name__)


def embedder_from_config(cfg: DictConfig):
    e = cfg.embedder
    return get_embedder(e.model, batch_size=e.batch_size, device=e.device, cache_dir=cfg.paths.cache_dir,
                        cache=e.cache, variant=e.get("variant", "torch"), max_seq_length=e.get("max_seq_length"))


def check_points(record: dict[str, Any], granularity: float) -> None:
    """Every grader must return points in [0, max] on the question's granularity; anything else is a bug."""
    p, m = record["points"], record["max_points"]
    steps = p / granularity
    if not (0 <= p <= m) or abs(steps - round(steps)) > 1e-6 or math.isnan(p):
        raise RuntimeError(f"grader returned {p} points for answer {record['answer_id']} "
                           f"(max {m}, granularity {granularity})")


def check_readable(answers: list[Answer], path: str, model: str) -> None:
    """An answer the embedding model's tokenizer cannot read (mostly unknown word pieces) is an input error:
    its embedding would say nothing about its content, and every grader would give it a meaningless score."""
    shares = unknown_token_share([a.text for a in answers], model)
    for answer, share in zip(answers, shares, strict=True):
        if share >= MAX_UNKNOWN_SHARE:
            raise InputError(path, f"answer {answer.answer_id!r}: text",
                             f"{share:.0%} of its word pieces are unknown to the tokenizer of {model} "
                             f"(a language or script it cannot read): {answer.text[:40]!r}")


def grade_answers(grader: Grader, rubric: Rubric, answers: list[Answer], scores_path: Path,
                  chunk_size: int = 256, progress: bool = True) -> list[dict]:
    """Grade what ``scores_path`` does not hold yet, appending as chunks finish; return all records."""
    done = {r["answer_id"] for r in read_jsonl(scores_path)}
    by_question: dict[str, list[Answer]] = defaultdict(list)
    for a in answers:
        if a.answer_id not in done:
            by_question[a.question_id].append(a)
    todo = sum(len(v) for v in by_question.values())
    if done:
        log.info("resuming: %d answers already graded, %d to go", len(done), todo)
    with JsonlAppender(scores_path) as out, tqdm(total=todo, desc=f"grade[{grader.name}]", unit="ans",
                                                  disable=not progress) as bar:
        for qid, group in by_question.items():
            question = rubric.question(qid)
            for start in range(0, len(group), chunk_size):
                chunk = group[start:start + chunk_size]
                results = grader.grade(question, chunk)
                if len(results) != len(chunk):
                    raise RuntimeError(f"grader {grader.name} returned {len(results)} results for {len(chunk)}")
                records = [r.record(a, grader.name) for a, r in zip(chunk, results, strict=True)]
                for rec in records:
                    check_points(rec, question.granularity)
                out.write_many(records)
                bar.update(len(chunk))
    order = {a.answer_id: i for i, a in enumerate(answers)}
    return sorted(read_jsonl(scores_path), key=lambda r: order.get(r["answer_id"], len(order)))


def run(cfg: DictConfig) -> dict[str, Any]:
    """``scripts/grade.py``: returns the run's metrics (also written to ``metrics.json``)."""
    rubric = load_rubric(cfg.rubric)
    answers = load_answers(cfg.answers, rubric)
    check_readable(answers, cfg.answers, cfg.embedder.model)
    folder = start_run(hydra_output_dir(cfg.out_dir), cfg)
    grader = build_grader(cfg.grader, embedder_from_config(cfg))
    t0 = time.perf_counter()
    records = grade_answers(grader, rubric, answers, folder.file("scores.jsonl"), chunk_size=cfg.chunk_size)
    elapsed = time.perf_counter() - t0
    metrics: dict[str, Any] = {
        "grader": grader.name,
        "n_answers": len(records),
        "total_points": round(sum(r["points"] for r in records), 4),
        "mean_fraction": round(sum(r["points"] / r["max_points"] for r in records) / len(records), 4),
        "seconds": round(elapsed, 3),
    }
    if hasattr(grader, "usage_summary"):  # graders that call a paid endpoint report requests, tokens and cost
        metrics["llm_usage"] = grader.usage_summary()
    reference = {a.answer_id: a.extra.get("reference_points") for a in answers}
    pairs = [(r["points"], reference[r["answer_id"]]) for r in records if reference.get(r["answer_id"]) is not None]
    if len(pairs) >= 3:
        from grading.agreement import summary_agreement

        metrics["vs_reference"] = summary_agreement([p for p, _ in pairs], [q for _, q in pairs])
    folder.finish(metrics)
    log.info("graded %d answers with %s -> %s", len(records), grader.name, folder.path)
    return metrics
