"""End-to-end handwriting benchmark: writing answers out, reading them back, comparing results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from grading.benchmarks.datasets import Benchmark, replace_texts
from grading.rubric import Question
from inkbase.errors import InputError
from inkgrade.handwritten_benchmark import compare, handwrite, read_box

REPO = Path(__file__).resolve().parents[2]


def tiny_bench() -> Benchmark:
    q = Question(id="q", text="t", max_points=5, granularity=0.25, reference_answer="r")
    answers = pd.DataFrame({"answer_id": ["a", "b"], "question_id": ["q", "q"], "text": ["x", "y"],
                            "gold": [1.0, 2.0], "split": "all", "group": "1", "subset": "s"})
    return Benchmark("mohler", "regression", {"q": q}, answers)


def test_replace_texts_swaps_every_answer_and_rejects_gaps(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"answer_id": "a", "text": "read a"}\n{"answer_id": "b", "text": "read b"}\n')
    bench = replace_texts(tiny_bench(), path)
    assert list(bench.answers["text"]) == ["read a", "read b"]
    path.write_text('{"answer_id": "a", "text": "read a"}\n')
    with pytest.raises(InputError, match="b has no text"):
        replace_texts(tiny_bench(), path)


def test_compare_lines_up_methods_and_protocols(tmp_path):
    typed = {"results": {"mohler": {"semantic": {"unseen_answers": {"pearson_r": 0.76, "rmse": 0.72}}}}}
    hand = {"results": {"mohler": {"semantic": {"unseen_answers": {"pearson_r": 0.73, "rmse": 0.75}},
                                   "kg": {"unseen_answers": {"pearson_r": 0.3, "rmse": 1.0}}}}}
    (tmp_path / "typed.json").write_text(json.dumps(typed))
    (tmp_path / "hand.json").write_text(json.dumps(hand))
    table = compare(tmp_path / "typed.json", tmp_path / "hand.json")
    assert len(table) == 1  # kg has no typed counterpart
    row = table.iloc[0]
    assert row["pearson_r change"] == pytest.approx(-0.03)
    assert row["rmse handwritten"] == 0.75


def test_written_box_is_segmented_into_its_lines():
    from htr.preprocess import PreprocessConfig
    from htr.segment import SegmenterConfig
    from htr.synth.fonts import list_fonts
    from htr.synth.lines import AugmentConfig

    font = next(f for f in list_fonts("heldout") if not f.uppercase_only)
    text = "A prototype simulates parts of the final program so that risky problems are found early on."
    image = handwrite(text, font, np.random.default_rng(0), AugmentConfig(), width=500, line_pitch=52)
    lines = read_box(image, PreprocessConfig(), SegmenterConfig())
    assert image.dtype == np.uint8 and image.shape[1] == 500
    assert 2 <= len(lines) <= 5  # about 90 characters wrapped to a 500 px box


def test_handwrite_answers_script(tmp_path, data_dir):
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "handwrite_answers.py"), f"data_dir={data_dir}",
                          "recognizer=rapidocr", "limit=4", f"out_dir={out}"], capture_output=True, text=True,
                         timeout=600, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "transcriptions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["n_lines"] >= 1 for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cer"] < 0.05  # RapidOCR on the rendered answers: 0.0052 when written
