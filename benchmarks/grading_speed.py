"""Cold grading speed: each grader under each encoding variant, side by side in one run, and a naive baseline.

Every pass grades new answers with the embedding model loaded and the caches empty (its own cache folder and
a fresh :class:`Embedder`), after a warm-up that loads the models and embeds the questions' concept phrases
and reference answers. ``graders`` (``kg``, ``hybrid``) are timed separately; ``variants`` maps a name to
settings merged over the defaults (``embedder``: the encoder, e.g. ``variant: onnx-int8``; ``kg``: the KG
grader, alone or inside the hybrid, e.g. ``span_encoding: pooled``; ``other``: the hybrid's partner, e.g.
``model_path: semantic_semeval_static.json``; ``answers``: grade only the first that many, for a slow
variant). All passes run in alternating rounds on interleaved blocks of the answers, so a
change in the machine's load hits every variant alike. Also timed:
- ``naive`` (``n_naive`` > 0): per answer, a full spaCy parse and one un-batched, un-cached encode call for
  the KG spans and one for the whole answer (default settings);
- ``<first variant>/<grader>/warm``: fresh grader objects reading the caches its cold pass filled (a re-run).

The answers are the sample exam's, recombined into distinct texts: sentences of two answers to the same
question in shuffled order, each sentence edited once (a filler word inserted, a word dropped or two words
swapped) so that sentences, clauses and windows rarely repeat across answers; noun chunks still do, as in a
real class. Every parse and embedding is real work in a cold pass.
"""

from __future__ import annotations

import copy
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from grading.embed import Embedder
from grading.grade import grade_answers
from grading.graders import Grader, build_grader
from grading.graders.concepts import extract_spans, load_nlp, normalise, span_options
from grading.rubric import Answer, Rubric, load_answers, load_rubric
from inkbase.errors import ConfigError, check_range
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


def naive_grade(rubric: Rubric, answers: list[Answer], kg_cfg: DictConfig, model) -> None:
    """Baseline: the same KG spans and whole-answer cosine, one answer at a time, no batching, no cache."""
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


@dataclass
class Pass:
    """One grader under one variant: its answers, its cache folder and the seconds it took so far."""

    variant: str
    grader_name: str
    grader_cfg: DictConfig
    answers: list[Answer]
    cache: Path
    grader: Grader | None = None
    seconds: float = 0.0


def _grader(cfg: DictConfig, grader_cfg: DictConfig, variant: dict, cache: Path) -> Grader:
    """A fresh grader (and embedder) with the variant's settings, its caches in ``cache``."""
    e = OmegaConf.merge(cfg.embedder, variant.get("embedder") or {})
    embedder = Embedder(e.model, batch_size=e.batch_size, device=e.device, cache_dir=cache, variant=e.variant,
                        max_seq_length=e.max_seq_length)
    kg_settings = OmegaConf.merge(variant.get("kg") or {}, {"cache_dir": str(cache)})
    grader_cfg = copy.deepcopy(grader_cfg)
    if "kg" in grader_cfg:  # a hybrid: the settings go to its KG part, ``other`` to its partner
        grader_cfg.kg = OmegaConf.merge(grader_cfg.kg, kg_settings)
        grader_cfg.other = OmegaConf.merge(grader_cfg.other, variant.get("other") or {})
    elif "span_encoding" in grader_cfg:
        grader_cfg = OmegaConf.merge(grader_cfg, kg_settings)
    return build_grader(grader_cfg, embedder)


def _ours(grader: Grader, rubric: Rubric, answers: list[Answer], path: Path, chunk_size: int) -> float:
    t0 = time.perf_counter()
    grade_answers(grader, rubric, answers, path, chunk_size=chunk_size, progress=False)
    return time.perf_counter() - t0


def _load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _warm_up(grader: Grader, rubric: Rubric) -> None:
    """Load the models and embed every question's phrases and reference answer (not timed)."""
    for question in rubric.questions:
        grader.grade(question, [Answer(answer_id="warm-up", question_id=question.id, text=question.reference_answer)])


def run(cfg: DictConfig) -> dict[str, Any]:
    """``scripts/benchmark_grading_speed.py``: results.json and results.md in the run folder."""
    n = int(check_range("n_answers", cfg.n_answers, 10, 10_000_000))
    n_naive = int(check_range("n_naive", cfg.n_naive, 0, n))
    rounds = int(check_range("rounds", cfg.rounds, 1, n))
    if not cfg.variants or not cfg.graders:
        raise ConfigError("variants", "need at least one variant and one grader to time")
    torch.set_num_threads(int(check_range("threads", cfg.threads, 1, 1024)))
    folder = start_run(hydra_output_dir(cfg.out_dir), cfg)
    rubric = load_rubric(cfg.rubric)
    answers = distinct_answers(rubric, load_answers(cfg.answers, rubric), n, cfg.seed)
    variants = OmegaConf.to_container(cfg.variants, resolve=True)
    results: dict[str, Any] = {"n_answers": n, "n_naive": n_naive, "torch_threads": torch.get_num_threads(),
                               "cpu_cores_available": len(os.sched_getaffinity(0)), "load_before": _load(),
                               "rounds": rounds, "chunk_size": cfg.chunk_size, "variants": variants,
                               "graders": list(cfg.graders)}
    with tempfile.TemporaryDirectory(prefix="grading-speed-") as tmp:
        passes: dict[str, Pass] = {}
        for vname, variant in variants.items():
            limit = int(check_range(f"variants.{vname}.answers", (variant or {}).get("answers", n), rounds, n))
            for gname, grader_cfg in cfg.graders.items():
                p = Pass(vname, gname, grader_cfg, answers[:limit], Path(tmp) / f"{vname}_{gname}")
                p.grader = _grader(cfg, grader_cfg, variant or {}, p.cache)
                _warm_up(p.grader, rubric)
                passes[f"{vname}/{gname}"] = p
        if cfg.profile and cfg.profile not in passes:
            raise ConfigError("profile", f"{cfg.profile!r} is not one of the passes {list(passes)}")
        profiler = cProfile.Profile() if cfg.profile else None
        naive = 0.0
        naive_model = Embedder(cfg.embedder.model).model if n_naive else None
        # Alternate blocks of all passes, so that a change in the machine's load hits each alike.
        for k in tqdm(range(rounds), desc="rounds"):
            if n_naive:
                t0 = time.perf_counter()
                naive_grade(rubric, answers[:n_naive][k::rounds], cfg.graders.kg, naive_model)
                naive += time.perf_counter() - t0
            for name, p in passes.items():
                if profiler and name == cfg.profile:
                    profiler.enable()
                p.seconds += _ours(p.grader, rubric, p.answers[k::rounds], p.cache / "cold.jsonl", cfg.chunk_size)
                if profiler and name == cfg.profile:
                    profiler.disable()
        if profiler:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
            folder.file("profile_cold.txt").write_text(out.getvalue())
        first = next(iter(variants))
        warm = {}
        for gname in cfg.graders:
            p = passes[f"{first}/{gname}"]
            grader = _grader(cfg, p.grader_cfg, variants[first] or {}, p.cache)  # nothing in memory, caches hot
            _warm_up(grader, rubric)
            warm[f"{first}/{gname}/warm"] = (len(p.answers), _ours(grader, rubric, p.answers, p.cache / "warm.jsonl",
                                                                   cfg.chunk_size))
    results["load_after"] = _load()
    rates = {name: (len(p.answers), p.seconds) for name, p in passes.items()} | warm
    if n_naive:
        rates["naive"] = (n_naive, naive)
    results["passes"] = {name: {"answers": count, "seconds": round(sec, 3), "answers_per_s": round(count / sec, 1)}
                         for name, (count, sec) in rates.items()}
    for name, p in passes.items():
        base = passes[f"{first}/{p.grader_name}"]
        results["passes"][name]["vs_" + first] = round((len(p.answers) / p.seconds) /
                                                       (len(base.answers) / base.seconds), 2)
    results["goal_answers_per_s_cold"] = cfg.goal_answers_per_s
    results["goal_met_cold"] = {name: bool(len(p.answers) / p.seconds >= cfg.goal_answers_per_s)
                                for name, p in passes.items()}
    write_json(folder.file("results.json"), results)
    folder.file("results.md").write_text(results_markdown(results, first))
    folder.finish({k: v["answers_per_s"] for k, v in results["passes"].items()})
    log.info("%s", json.dumps(results["passes"]))
    return results


def results_markdown(r: dict[str, Any], first: str) -> str:
    rows = "\n".join(f"| {name} | {p['answers']} | {p['seconds']:.2f} | {p['answers_per_s']:.1f} | "
                     f"{p.get('vs_' + first, '')} |" for name, p in r["passes"].items())
    settings = "\n".join(f"- `{name}`: `{json.dumps(v)}`" for name, v in r["variants"].items())
    return (f"Cold grading speed ({r['torch_threads']} threads, {r['cpu_cores_available']} cores available, "
            f"{r['rounds']} interleaved rounds).\n\nVariants (over the default configs):\n{settings}\n\n"
            f"| pass | answers | seconds | answers/s | vs {first} |\n|---|---:|---:|---:|---:|\n" + rows +
            f"\n\nGoal: >= {r['goal_answers_per_s_cold']} answers/s cold: met by "
            f"{[k for k, v in r['goal_met_cold'].items() if v] or 'none'}.\n\nLoad before: `{r['load_before']}`  \n"
            f"Load after: `{r['load_after']}`\n")
