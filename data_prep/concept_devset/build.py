"""Compose the concept development set (``src/grading/devset/``) from the hand-written clauses in
``clauses.json``: ``python data_prep/concept_devset/build.py [--out src/grading/devset] [--per-part 14]``;
``--version v2`` composes the second held-out part from ``clauses_v2.json`` (22 answers per question).

Each answer states some of its question's concepts in other words than the rubric's (a "pos" clause: the
concept is present), denies or reverses others (a "neg" clause: absent) and may add an on-topic clause that
states no concept. The concept labels follow from the clauses chosen, so they are exact. The paraphrases of
each concept are split alternately into two disjoint pools, and likewise the denials: the ``dev`` part is
built from the first pool, the ``heldout`` part from the second, so no held-out clause is ever seen while
developing the matcher. Written to ``rubric.json``, ``answers_dev.jsonl`` and ``answers_heldout.jsonl``.

The second held-out part (``heldout_v2``: four more subjects, written before the matcher of
``grading.graders.entail`` was developed) uses all of its clauses, denials drawn at random; written to
``rubric_v2.json`` and ``answers_heldout_v2.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = ("dev", "heldout")
# version: (clauses file, rubric file, exam id, parts, answers per question)
VERSIONS = {"v1": ("clauses.json", "rubric.json", "concept-devset-v1", PARTS, 14),
            "v2": ("clauses_v2.json", "rubric_v2.json", "concept-devset-v2", ("heldout_v2",), 22)}
P_PRESENT, P_DENIED, P_OTHER = 0.55, 0.2, 0.35


def rubric(questions: list[dict], exam_id: str = "concept-devset-v1") -> dict:
    return {"exam_id": exam_id, "questions": [{
        "id": q["id"], "text": q["text"], "max_points": q["max_points"], "granularity": q["granularity"],
        "problem_type": "explanation", "reference_answer": q["reference_answer"], "subject": q["subject"],
        "concepts": [{"id": c["id"], "label": c["label"], "weight": 1.0, "synonyms": c["synonyms"]}
                     for c in q["concepts"]], "edges": []} for q in questions]}


def sentence(clauses: list[str]) -> str:
    text = ", and ".join(clauses)
    return text[0].upper() + text[1:] + "."


def compose(q: dict, part: str, n: int, seed: int) -> list[dict]:
    # v1 parts draw from alternate halves of the clauses; the v2 part has them all.
    k = PARTS.index(part) if part in PARTS else None
    pos = slice(k, None, 2) if k is not None else slice(None)
    rng = random.Random(f"{seed}-{q['id']}-{part}")
    ids = [c["id"] for c in q["concepts"]]
    answers, seen = [], set()
    while len(answers) < n:
        present, clauses, denied = [], [], False
        for cid in ids:
            r = rng.random()
            if r < P_PRESENT:
                present.append(cid)
                clauses.append(rng.choice(q["pos"][cid][pos]))
            elif r < P_PRESENT + P_DENIED:
                denied = True
                clauses.append(q["neg"][cid][k] if k is not None else rng.choice(q["neg"][cid]))
        if rng.random() < P_OTHER or not clauses:
            clauses.append(rng.choice(q["other"]))
        rng.shuffle(clauses)
        sentences, i = [], 0
        while i < len(clauses):
            take = 2 if i + 1 < len(clauses) and rng.random() < 0.3 else 1
            sentences.append(sentence(clauses[i:i + take]))
            i += take
        text = " ".join(sentences)
        if text in seen:
            continue
        seen.add(text)
        share = len(present) / len(ids)
        points = round(round(share * q["max_points"] / q["granularity"]) * q["granularity"], 6)
        student = f"{'V' if k is None else part[0].upper()}{len(answers) + 1:02d}"
        answers.append({"answer_id": f"{student}-{q['id']}", "question_id": q["id"], "student_id": student,
                        "text": text, "reference_points": points, "concepts": present,
                        "category": "negated" if denied else "paraphrase", "split": part})
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE.parents[1] / "src" / "grading" / "devset")
    parser.add_argument("--version", choices=sorted(VERSIONS), default="v1")
    parser.add_argument("--per-part", type=int, default=None, help="answers per question in each part")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    clauses, rubric_file, exam_id, parts, per_part = VERSIONS[args.version]
    questions = json.loads((HERE / clauses).read_text(encoding="utf-8"))["questions"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / rubric_file).write_text(json.dumps(rubric(questions, exam_id), indent=1) + "\n", encoding="utf-8")
    for part in parts:
        rows = [a for q in questions for a in compose(q, part, args.per_part or per_part, args.seed)]
        with open(args.out / f"answers_{part}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        print(f"{part}: {len(rows)} answers")


if __name__ == "__main__":
    main()
