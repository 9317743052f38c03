"""Export a benchmark as a rubric JSON + answers JSONL for scripts/grade.py (gold in ``reference_points``).

python data_prep/mohler/prepare.py <shared data dir> <out dir>
The same script serves data_prep/semeval and data_prep/asap (dataset name from the folder name).
Splits are those of the source (SemEval: train/UA/UQ/UD, kept in each answer's ``split``);
grading/benchmarks reads the CSVs directly, so this export is only for the grading pipeline.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from grading.benchmarks.datasets import load_benchmark
from grading.rubric import Rubric
from inkbase.cli import compose


def export(name: str, data_dir: Path, out_dir: Path) -> None:
    bench = load_benchmark(OmegaConf.create(compose("benchmark_grading", [f"benchmark={name}"]).benchmark), data_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rubric = Rubric(exam_id=name, questions=list(bench.questions.values()))
    (out_dir / "rubric.json").write_text(rubric.model_dump_json(indent=1), encoding="utf-8")
    with (out_dir / "answers.jsonl").open("w", encoding="utf-8") as fh:
        for row in bench.answers.itertuples():
            fh.write(json.dumps({"answer_id": row.answer_id, "question_id": row.question_id, "text": row.text,
                                 "reference_points": row.gold, "split": row.split}, ensure_ascii=False) + "\n")
    print(f"{len(bench.answers)} answers, {len(bench.questions)} questions -> {out_dir}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: python {sys.argv[0]} <shared data dir> <out dir>")
    export(Path(__file__).resolve().parent.name, Path(sys.argv[1]), Path(sys.argv[2]))
