"""Grading speed: KG + similarity graders on many distinct answers, ours vs a naive baseline in one run.

Three timings on the same answers, after a warm-up (models loaded, concept phrases embedded); the naive and
cold passes run in alternating rounds on interleaved blocks of the answers:
- ``naive``: per answer, a full spaCy parse and one un-batched, un-cached encode call per grader (the
  straightforward way to write the seed's pipeline);
- ``ours_cold``: the graders as ``scripts/grade.py`` runs them (chunks, ``nlp.pipe``, one batched
  encode per chunk) with empty caches;
- ``ours_warm``: fresh grader objects reading the caches the cold pass filled (a re-run, a sweep);
- ``ours_cold_<name>`` for each entry of ``variants`` (KG settings merged over ``kg``, e.g. ``span_encoding:
  pooled``): the cold pass with those settings, own empty caches, timed in the same rounds.

The answers are the sample exam's, recombined into distinct texts: sentences of two answers to the same
question in shuffled order, each sentence edited once (a filler word inserted, a word dropped or two words
swapped) so that sentences, clauses and windows rarely repeat across answers; noun chunks still do, as in a
real class. Every parse and embedding is real work in the cold pass.
"""

from __future__ import annotations

import cProfile
import io
import json
import logging
import os
import pstats
import random
import re
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from grading.embed import Embedder
from grading.grade import grade_answers
from grading.graders import build_grader
from grading.graders.concepts import extract_spans, load_nlp, normalise, span_options
from grading.rubric import Answer, Rubric, load_answers, load_rubric
from inkbase.errors import check_range
from inkbase.jsonio import write_json
from inkbase.runs import hydra_output_dir, start_run

log = logging.getLogger(__name__)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_FILLERS = ("also", "then", "basically", "really", "just", "actually", "clearly", "so")


def _edit(sentence: str, rng: random.Random) -> str:
    words = sentence.split()
    if len(words) < 3:
        return sentence
    i = rng.randrange(1, len(words) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        words.insert(i, rng.choice(_FILLERS))
    elif kind == 1:
        del words[i]
    else:
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def distinct_answers(rubric: Rubric, seed_answers: list[Answer], n: int, seed: int) -> list[Answer]:
    """``n`` distinct answers built from the sentences of pairs of seed answers to the same question."""
    rng = random.Random(seed)
    by_question: dict[str, list[list[str]]] = defaultdict(list)
    for a in seed_answers:
        if a.text.strip():
            by_question[a.question_id].append(_SENTENCE.split(a.text.strip()))
    questions = sorted(q for q, texts in by_question.items() if len(texts) >= 2)
    if not questions:
        raise ValueError("need two non-empty seed answers to at least one question")
    texts: dict[str, str] = {}
    attempts = 0
    while len(texts) < n:
        attempts += 1
        if attempts > 100 * n:
            raise ValueError(f"cannot build {n} distinct answers from {len(seed_answers)} seed answers")
        qid = questions[len(texts) % len(questions)]
        first, second = rng.sample(by_question[qid], 2)
        sentences = [_edit(x, rng) for x in first + rng.sample(second, k=min(len(second), rng.randint(1, 2)))]
        rng.shuffle(sentences)
        texts.setdefault(" ".join(sentences), qid)
    return [Answer(answer_id=f"bench-{i}", question_id=qid, text=text)
            for i, (text, qid) in enumerate(texts.items())]


def naive_grade(rubric: Rubric, answers: list[Answer], kg_cfg: DictConfig, sim_cfg: DictConfig, model) -> None:
    """Baseline: the same KG and similarity scores, one answer at a time, no batching, no cache."""
    nlp = load_nlp(kg_cfg.spacy_model)
    options = span_options(OmegaConf.to_container(kg_cfg.spans))
    def encode(texts):
        return model.encode(texts, normalize_embeddings=True, show_progress_bar=False)

    phrases = {q.id: encode([normalise(p) for c in q.concepts for p in c.phrases]) for q in rubric.questions}
    references = {q.id: encode(q.reference_answer) for q in rubric.questions}
    for a in answers:
        spans = [text for text, _ in extract_spans(nlp(a.text), options)]
        if spans:
            (encode(spans) @ phrases[a.question_id].T).max(axis=0)
        float(encode(a.text) @ references[a.question_id])


def _graders(cfg: DictConfig, cache_dir: Path, kg_overrides: DictConfig | None = None) -> tuple[Embedder, list]:
    embedder = Embedder(cfg.embedder.model, batch_size=cfg.embedder.batch_size, device=cfg.embedder.device,
                        cache_dir=cache_dir)
    kg_cfg = OmegaConf.merge(cfg.kg, kg_overrides or {}, {"cache_dir": str(cache_dir)})
    return embedder, [build_grader(kg_cfg, embedder), build_grader(cfg.similarity, embedder)]


def _ours(graders: list, rubric: Rubric, answers: list[Answer], folder: Path, tag: str, chunk_size: int) -> float:
    t0 = time.perf_counter()
    for grader in graders:
        grade_answers(grader, rubric, answers, folder / f"{tag}_{grader.name}.jsonl", chunk_size=chunk_size,
                      progress=False)
    return time.perf_counter() - t0


def _load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _warm_up(graders: list, rubric: Rubric) -> None:
    """Load the models and embed every question's phrases and reference answer (not timed)."""
    probe = [Answer(answer_id="warm-up", question_id=q.id, text=q.reference_answer) for q in rubric.questions]
    for grader in graders:
        for question, answer in zip(rubric.questions, probe, strict=True):
            grader.grade(question, [answer])


def run(cfg: DictConfig) -> dict[str, Any]:
    """``scripts/benchmark_grading_speed.py``: results.json and results.md in the run folder."""
    n = int(check_range("n_answers", cfg.n_answers, 10, 10_000_000))
    n_naive = int(check_range("n_naive", cfg.n_naive, 10, n))
    rounds = int(check_range("rounds", cfg.rounds, 1, n_naive))
    torch.set_num_threads(int(check_range("threads", cfg.threads, 1, 1024)))
    folder = start_run(hydra_output_dir(cfg.out_dir), cfg)
    rubric = load_rubric(cfg.rubric)
    answers = distinct_answers(rubric, load_answers(cfg.answers, rubric), n, cfg.seed)
    results: dict[str, Any] = {"n_answers": n, "n_naive": n_naive, "torch_threads": torch.get_num_threads(),
                               "cpu_cores_available": len(os.sched_getaffinity(0)), "load_before": _load(),
                               "kg_spans": OmegaConf.to_container(cfg.kg.spans), "chunk_size": cfg.chunk_size,
                               "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="grading-speed-") as tmp:
        cache = Path(tmp) / "cache"
        embedder, graders = _graders(cfg, cache)
        _warm_up(graders, rubric)
        variants = {name: _graders(cfg, Path(tmp) / f"cache_{name}", over)[1]
                    for name, over in cfg.variants.items()}
        for variant in variants.values():
            _warm_up(variant, rubric)
        variant_s = dict.fromkeys(variants, 0.0)
        profiler = cProfile.Profile() if cfg.profile else None
        naive = cold = 0.0
        # Alternate blocks of the two, so that a change in the machine's load hits both alike.
        for k in tqdm(range(rounds), desc="naive / cold rounds"):
            t0 = time.perf_counter()
            naive_grade(rubric, answers[:n_naive][k::rounds], cfg.kg, cfg.similarity, embedder.model)
            naive += time.perf_counter() - t0
            if profiler:
                profiler.enable()
            cold += _ours(graders, rubric, answers[k::rounds], Path(tmp), "cold", cfg.chunk_size)
            if profiler:
                profiler.disable()
            for name, variant in variants.items():
                variant_s[name] += _ours(variant, rubric, answers[k::rounds], Path(tmp), f"cold_{name}",
                                         cfg.chunk_size)
        if profiler:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
            folder.file("profile_cold.txt").write_text(out.getvalue())
        _, graders = _graders(cfg, cache)  # new objects: nothing in memory, the caches on disk are hot
        _warm_up(graders, rubric)
        warm = _ours(graders, rubric, answers, Path(tmp), "warm", cfg.chunk_size)
    results["load_after"] = _load()
    rates = {"naive": (n_naive, naive), "ours_cold": (n, cold), "ours_warm": (n, warm),
             **{f"ours_cold_{name}": (n, sec) for name, sec in variant_s.items()}}
    results["passes"] = {name: {"answers": count, "seconds": round(sec, 3), "answers_per_s": round(count / sec, 1)}
                         for name, (count, sec) in rates.items()}
    results["speedup_vs_naive"] = {name: round((count / sec) / (n_naive / naive), 2)
                                   for name, (count, sec) in rates.items()}
    results["goal_answers_per_s_warm"] = cfg.goal_answers_per_s
    results["goal_met_warm"] = bool(n / warm > cfg.goal_answers_per_s)
    write_json(folder.file("results.json"), results)
    folder.file("results.md").write_text(results_markdown(results))
    folder.finish({k: v["answers_per_s"] for k, v in results["passes"].items()})
    log.info("%s", json.dumps(results["passes"]))
    return results


def results_markdown(r: dict[str, Any]) -> str:
    rows = "\n".join(f"| {name} | {p['answers']} | {p['seconds']:.2f} | {p['answers_per_s']:.1f} | "
                     f"{r['speedup_vs_naive'][name]:.2f}x |" for name, p in r["passes"].items())
    return (f"KG + similarity grading speed ({r['torch_threads']} torch threads, {r['cpu_cores_available']} "
            f"cores available; spans {r['kg_spans']}).\n\n"
            "| pass | answers | seconds | answers/s | vs naive |\n|---|---:|---:|---:|---:|\n" + rows +
            f"\n\nGoal: > {r['goal_answers_per_s_warm']} answers/s warm: "
            f"{'met' if r['goal_met_warm'] else 'NOT met'}.\n\nLoad before: `{r['load_before']}`  \n"
            f"Load after: `{r['load_after']}`\n")

