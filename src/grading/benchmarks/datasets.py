"""Loaders for the public short-answer benchmarks in ``paths.data_dir`` (see its README).

Each loader returns a :class:`Benchmark`: one rubric :class:`Question` per question (concepts made
from the reference answer where the data has no concept rubric, see :mod:`.auto_rubric`) and a table
of answers with a gold score. Columns are checked on load; a missing one is an :class:`InputError`
naming the file and the column.

- ``mohler``: ``mohler_unt_v2/mohler_unt_v2_tidy.csv``, the standard 2,273 answers / 81 questions
  (``excluded_in_original_papers == 0``). Gold (``gold``): ``mean`` = exact mean of the two graders'
  scores on 0-5 (exam scores halved), as in the widely used "edited" CSV; ``official`` = the
  distributed ``ave`` (differs on 214 exam answers).
- ``semeval``: ``semeval2013_task7_2way``, SciEntsBank and Beetle with the official splits; gold is
  1 for "correct", 0 for "incorrect". Beetle's several reference answers are all kept (``references``).
- ``asap``: ``asap_sas/public_leaderboard_with_gold.csv`` (evaluation only); prompt, reference
  content and score range are read from ``rubrics/setN_ReadMeFirst.txt``.
- ``nn_exam``: ``nn_exam_hbrs/cleaned/`` (evaluation only), a university neural-networks exam: 40 questions,
  1,137 answers graded 0/1/2. The reference is the data's ``solution``, a full-score student answer taken out
  of the answer pool (not an instructor's answer). nbgrader's ``YOUR ANSWER HERE`` placeholder is removed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from grading.benchmarks.auto_rubric import auto_concepts
from grading.rubric import Concept, Question
from inkbase.errors import ConfigError, InputError

# Benchmarks nothing may be trained or tuned on: they are graded zero-shot (or with a few graded examples
# calibrating the score map) by the shipped scorer.
EVALUATION_ONLY = {"asap", "nn_exam"}


@dataclass
class Benchmark:
    """Questions plus one row per answer: answer_id, question_id, text, gold, split, group, subset."""

    name: str
    task: str
    questions: dict[str, Question]
    answers: pd.DataFrame
    references: dict[str, list[str]] = field(default_factory=dict)  # all reference answers per question
    notes: list[str] = field(default_factory=list)

    def refs(self, question_id: str) -> list[str]:
        return self.references.get(question_id) or [self.questions[question_id].reference_answer]


def read_csv(path: Path, required: list[str], **kwargs) -> pd.DataFrame:
    """Read a CSV and check that ``required`` columns are there (clear error naming file and column)."""
    if not path.is_file():
        raise InputError(path, "(file)", "not found (is paths.data_dir / data_dir the shared data folder?)")
    try:
        df = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise InputError(path, "(file)", f"not a readable CSV ({str(err).splitlines()[0]})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(path, missing[0], f"missing column (found: {', '.join(map(str, df.columns))})")
    return df


def _question(qid: str, text: str, reference: str, max_points: float, granularity: float,
              concepts: list[Concept] | None = None, subject: str | None = None) -> Question:
    return Question(id=qid, text=text, max_points=max_points, granularity=granularity,
                    reference_answer=reference, concepts=concepts if concepts else auto_concepts(reference),
                    subject=subject, concepts_from="rubric" if concepts else "reference")


def load_mohler(data_dir: str | Path, gold: str) -> Benchmark:
    path = Path(data_dir) / "mohler_unt_v2" / "mohler_unt_v2_tidy.csv"
    cols = ["question_id", "assignment", "excluded_in_original_papers", "answer_index", "question",
            "reference_answer", "student_answer", "score_grader_me_raw", "score_grader_other_raw",
            "raw_scale_max", "score_avg_0to5"]
    df = read_csv(path, cols, dtype={"question_id": str})
    df = df[df["excluded_in_original_papers"] == 0].copy()
    if gold == "mean":
        scale = 5.0 / df["raw_scale_max"].astype(float)
        df["gold"] = (df["score_grader_me_raw"] * scale + df["score_grader_other_raw"] * scale) / 2
    elif gold == "official":
        df["gold"] = df["score_avg_0to5"].astype(float)
    else:
        raise ConfigError("benchmark.gold", f"{gold!r} is not one of mean, official")
    questions = {}
    for qid, g in df.groupby("question_id", sort=False):
        first = g.iloc[0]
        questions[qid] = _question(qid, str(first["question"]), str(first["reference_answer"]), 5.0, 0.25,
                                   subject=f"assignment {first['assignment']}")
    answers = pd.DataFrame({
        "answer_id": df["question_id"] + "-" + df["answer_index"].astype(str),
        "question_id": df["question_id"], "text": df["student_answer"].fillna("").astype(str),
        "gold": df["gold"].astype(float), "split": "all", "group": df["assignment"].astype(str),
        "subset": "mohler"})
    notes = [f"{len(answers)} answers, {len(questions)} questions (standard set); gold = "
             + ("exact mean of the two graders on 0-5" if gold == "mean" else "official 'ave' column")]
    return Benchmark("mohler", "regression", questions, answers.reset_index(drop=True), notes=notes)


SEMEVAL_SPLITS = {"train": "train", "test-unseen-answers": "UA", "test-unseen-questions": "UQ",
                  "test-unseen-domains": "UD"}


def load_semeval(data_dir: str | Path, corpora: list[str]) -> Benchmark:
    root = Path(data_dir) / "semeval2013_task7_2way"
    q = read_csv(root / "questions_and_reference_answers.csv",
                 ["corpus", "split", "question_id", "question_text", "reference_answers_json"])
    a = read_csv(root / "student_answers.csv",
                 ["corpus", "split", "question_id", "student_answer_id", "label_2way", "student_answer"])
    unknown = sorted(set(corpora) - set(q["corpus"]))
    if unknown:
        raise ConfigError("benchmark.corpora", f"unknown corpus {unknown}; the data has {sorted(set(q['corpus']))}")
    questions, references = {}, {}
    for row in q[q["corpus"].isin(corpora)].itertuples():
        key = f"{row.corpus}/{row.question_id}"
        if key in questions:  # the same question file appears in train and in UA
            continue
        try:
            refs = json.loads(row.reference_answers_json)
        except json.JSONDecodeError:
            raise InputError(root / "questions_and_reference_answers.csv", "reference_answers_json",
                             f"invalid JSON for {key}") from None
        best = [r["text"] for r in refs if r.get("category") == "BEST"] or [r["text"] for r in refs]
        texts = list(dict.fromkeys(best + [r["text"] for r in refs]))
        references[key] = texts
        questions[key] = _question(key, str(row.question_text), texts[0], 1.0, 1.0, subject=row.corpus)
    a = a[a["corpus"].isin(corpora)].copy()
    bad = sorted(set(a["label_2way"]) - {"correct", "incorrect"})
    if bad:
        raise InputError(root / "student_answers.csv", "label_2way", f"unexpected value(s) {bad}")
    a["qkey"] = a["corpus"] + "/" + a["question_id"]
    answers = pd.DataFrame({
        "answer_id": a["corpus"] + "/" + a["student_answer_id"], "question_id": a["qkey"],
        "text": a["student_answer"].fillna("").astype(str), "gold": (a["label_2way"] == "correct").astype(float),
        "split": a["split"].map(SEMEVAL_SPLITS), "group": a["qkey"], "subset": a["corpus"]})
    notes = [f"{len(answers)} answers; corpora {corpora}; official splits train/UA/UQ/UD (2-way labels)"]
    return Benchmark("semeval", "binary", questions, answers.reset_index(drop=True), references, notes)


_SCORE_LINE = re.compile(r"^(score( point)? \d|\d points?\b|rubric:)", re.I)
_REFERENCE_START = re.compile(r"^(rubric for |key elements)", re.I)
_NUMBERS = {w: i for i, w in enumerate("one two three four five six seven eight nine ten".split(), 1)}
# "Four key elements", "describes three additional pieces of information": the top level counts listed items.
_COUNTED = re.compile(r"\b(one|two|three|four|five|six|seven|eight|nine|ten|\d+)\s+(?:additional\s+)?"
                      r"(?:key\s+elements?|pieces?\s+of\s+information)", re.I)


class AsapRubric(NamedTuple):
    """What a ``setN_ReadMeFirst.txt`` says: ``content`` is the reference content's lines, from the
    description of the top score level where ``from_levels``; ``for_full_marks`` is how many listed items
    the top level asks for (None where it does not count them)."""

    question: str
    reference: str
    content: list[str]
    max_score: int
    from_levels: bool
    for_full_marks: int | None


def parse_asap_rubric(path: Path) -> AsapRubric:
    """The question text, reference content and score levels of a ``setN_ReadMeFirst.txt``.

    The reference is the block that follows "Rubric for ..." / "Key Elements" up to the first score
    level; where that block is empty (rubrics that describe only score levels), the description of the
    top score level is used instead."""
    if not path.is_file():
        raise InputError(path, "(file)", "not found")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    m = next((re.search(r"(\d+)\s*[-–]\s*(\d+)", ln) for ln in lines if ln.lower().startswith("rubric range")), None)
    if m is None:
        raise InputError(path, "Rubric range", "missing")
    max_score = int(m.group(2))
    prompt_at = max((i for i, ln in enumerate(lines) if ln.lower().startswith("prompt")), default=None)
    if prompt_at is None:
        raise InputError(path, "Prompt", "missing")
    prompt = []
    for ln in lines[prompt_at + 1:]:
        if _REFERENCE_START.match(ln) or ln.lower().startswith(("scoring rubric", "reading for information scoring")):
            break
        if ln:
            prompt.append(ln)
    question = " ".join(prompt)[-600:]  # reading passages precede the actual question; keep its end
    start = next((i for i in range(prompt_at, len(lines)) if _REFERENCE_START.match(lines[i])), None)
    content: list[str] = []
    if start is not None:
        for ln in lines[start + 1:]:
            if _SCORE_LINE.match(ln):
                break
            if ln and not ln.endswith(":") and not ln.lower().startswith("other"):
                content.append(ln)
    # The last description of the top level is the item's own (a general holistic scale may precede it).
    top = max((i for i in range(prompt_at, len(lines)) if _SCORE_LINE.match(lines[i])
               and re.search(rf"\b{max_score}\b", lines[i])), default=None)
    top_lines = []
    for ln in lines[top + 1:] if top is not None else []:
        if _SCORE_LINE.match(ln):
            break
        if ln:
            top_lines.append(ln)
    from_levels = not content
    if from_levels:  # rubric by score levels only: describe the top level
        if not top_lines:
            raise InputError(path, "rubric", "neither key content nor a top score level found")
        content = top_lines
    counted = None if from_levels else _COUNTED.search(" ".join(top_lines))
    for_full_marks = None
    if counted:
        word = counted.group(1).lower()
        for_full_marks = int(word) if word.isdigit() else _NUMBERS[word]
    return AsapRubric(question, " ".join(content), content, max_score, from_levels, for_full_marks)


def load_asap(data_dir: str | Path, sets: list[int]) -> Benchmark:
    """Listed key elements / acceptable responses become concepts (``concepts_from: rubric``, with the top
    level's count as ``concepts_for_full_marks``, else one item per point); lines of a score level's
    description become ``concepts_from: score_levels``."""
    root = Path(data_dir) / "asap_sas"
    df = read_csv(root / "public_leaderboard_with_gold.csv", ["id", "essay_set", "essay_score", "essay_text"])
    questions, notes = {}, []
    for s in sets:
        r = parse_asap_rubric(root / "rubrics" / f"set{s}_ReadMeFirst.txt")
        question = _question(str(s), r.question, r.reference, float(r.max_score), 1.0, subject=f"set {s}")
        if len(r.content) >= 2:  # one concept per line
            concepts = [Concept(id=f"k{i + 1}", label=ln[:300], weight=1.0) for i, ln in enumerate(r.content[:20])]
            for_full = None if r.from_levels else min(r.for_full_marks or r.max_score, len(concepts))
            question = question.model_copy(update={
                "concepts": concepts, "concepts_from": "score_levels" if r.from_levels else "rubric",
                "concepts_for_full_marks": for_full})
        questions[str(s)] = question
    df = df[df["essay_set"].isin(sets)]
    too_high = df[df["essay_score"] > df["essay_set"].map(lambda s: questions[str(s)].max_points)]
    if len(too_high):
        raise InputError(root / "public_leaderboard_with_gold.csv", "essay_score",
                         f"{len(too_high)} score(s) above the rubric's range")
    answers = pd.DataFrame({
        "answer_id": df["id"].astype(str), "question_id": df["essay_set"].astype(str),
        "text": df["essay_text"].fillna("").astype(str), "gold": df["essay_score"].astype(float),
        "split": "test", "group": df["essay_set"].astype(str), "subset": "set " + df["essay_set"].astype(str)})
    notes.append(f"{len(answers)} answers, sets {sets}; evaluation only (nothing is trained or tuned on it)")
    return Benchmark("asap", "ordinal", questions, answers.reset_index(drop=True), notes=notes)


_PLACEHOLDER = re.compile(r"^\s*YOUR ANSWER HERE\s*", re.I)


def load_nn_exam(data_dir: str | Path) -> Benchmark:
    root = Path(data_dir) / "nn_exam_hbrs" / "cleaned"
    q = read_csv(root / "questions.csv", ["id", "question", "solution"], sep="\t")
    a = read_csv(root / "answers.csv", ["id", "answer", "score"], sep="\t")
    unknown = sorted(set(a["id"]) - set(q["id"]))
    if unknown:
        raise InputError(root / "answers.csv", "id", f"question id(s) {unknown[:5]} not in questions.csv")
    bad = sorted(set(a["score"]) - {0, 1, 2})
    if bad:
        raise InputError(root / "answers.csv", "score", f"unexpected value(s) {bad}; the exam grades 0, 1 or 2")
    questions = {str(r.id): _question(str(r.id), str(r.question), str(r.solution).strip(), 2.0, 1.0,
                                      subject="neural networks exam") for r in q.itertuples()}
    text = a["answer"].fillna("").astype(str).map(lambda t: _PLACEHOLDER.sub("", t).strip())
    answers = pd.DataFrame({
        "answer_id": a["id"].astype(str) + "-" + a.index.astype(str), "question_id": a["id"].astype(str),
        "text": text, "gold": a["score"].astype(float), "split": "test", "group": a["id"].astype(str),
        "subset": "nn_exam"})
    notes = [f"{len(answers)} answers, {len(questions)} questions (cleaned set); reference = a full-score student "
             "answer; evaluation only (nothing is trained or tuned on it)"]
    return Benchmark("nn_exam", "regression", questions, answers.reset_index(drop=True), notes=notes)


def load_benchmark(cfg, data_dir: str | Path) -> Benchmark:
    """Dispatch on ``cfg.name`` (configs/benchmark/<name>.yaml); ``cfg.texts`` swaps in other answer texts."""
    if not Path(data_dir).is_dir():
        raise ConfigError("data_dir", f"{data_dir} is not a folder")
    if cfg.name == "mohler":
        bench = load_mohler(data_dir, cfg.gold)
    elif cfg.name == "semeval":
        bench = load_semeval(data_dir, list(cfg.corpora))
    elif cfg.name == "asap":
        bench = load_asap(data_dir, [int(s) for s in cfg.sets])
    elif cfg.name == "nn_exam":
        bench = load_nn_exam(data_dir)
    else:
        raise ConfigError("benchmark.name", f"{cfg.name!r} is not one of mohler, semeval, asap, nn_exam")
    return replace_texts(bench, cfg.texts) if cfg.texts else bench


def replace_texts(bench: Benchmark, path: str | Path) -> Benchmark:
    """Grade other texts of the same answers (e.g. transcriptions of their handwritten versions):
    ``path`` is JSONL with ``answer_id`` and ``text`` for every answer of the benchmark."""
    from inkbase.jsonio import iter_jsonl_objects

    path = Path(path)
    texts = {}
    for i, row in iter_jsonl_objects(path):
        if "answer_id" not in row or "text" not in row:
            raise InputError(path, f"line {i}", "needs answer_id and text")
        texts[str(row["answer_id"])] = str(row["text"])
    missing = [a for a in bench.answers["answer_id"] if a not in texts]
    if missing:
        raise InputError(path, "answer_id", f"{missing[0]} has no text ({len(missing)} of {len(bench.answers)} missing)")
    answers = bench.answers.assign(text=bench.answers["answer_id"].map(texts))
    return Benchmark(bench.name, bench.task, bench.questions, answers, bench.references,
                     [*bench.notes, f"answer texts from {path}"])
