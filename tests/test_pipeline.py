"""A tiny end-to-end run of the main job: two handwritten scripts rendered, read, graded and analysed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from inkbase.jsonio import read_jsonl

REPO = Path(__file__).resolve().parents[1]


def test_pipeline_two_scripts(tmp_path):
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "run_pipeline.py"), "scripts.max_students=2",
                          f"out_dir={out}", f"paths.cache_dir={tmp_path / 'cache'}"],
                         capture_output=True, text=True, timeout=900, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_scripts"] == 2 and metrics["n_answers"] == 10
    template = json.loads((out / "template.json").read_text())
    labels = {r["label"] for regions in template.values() for r in regions}
    assert {"NAME", "ID", "CLASS", "Q1", "Q2", "Q3", "Q4", "Q5"} <= labels
    # Recognition must actually read the handwriting: most characters right on held-out hands.
    assert metrics["answer_cer"] < 0.05  # 0.0186 when written
    scores = read_jsonl(out / "scores.jsonl")
    assert len(scores) == 10 and all(0 <= s["points"] <= s["max_points"] for s in scores)
    transcripts = read_jsonl(out / "transcriptions.jsonl")
    assert all(t["regions"]["Q1"]["lines"] for t in transcripts)
    assert pd.read_csv(out / "ai.csv").shape[0] == 10
    analysis = json.loads((out / "analysis" / "analysis.json").read_text())
    assert analysis["agreement"]["item"]["n"] == 10
    table = pd.read_csv(out / "table_agreement.csv")
    assert list(table["question"]) == ["Q1", "Q2", "Q3", "Q4", "Q5", "all"] and list(table["n"]) == [2] * 5 + [10]
    assert (out / "table_agreement.md").read_text().count("\n") == len(table) + 2  # header, rule, rows
    for name in ("scatter.png", "analysis/risk_matrix.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
