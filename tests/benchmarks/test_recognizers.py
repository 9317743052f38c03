"""The CPU recogniser benchmark runs end to end on a few lines and writes its results files."""

from __future__ import annotations

import json

from benchmarks import recognizers
from inkbase.cli import compose


def test_recognizer_benchmark_writes_rows_and_results(tmp_path):
    cfg = compose("benchmark_recognizers", [f"out_dir={tmp_path / 'run'}", "lines=3", "repeats=1", "baselines=false",
                                            "batch_size=2", "num_beams=2"])
    result = recognizers.run(cfg)
    names = [r["recognizer"] for r in result["rows"]]
    assert names == ["naive", "ours_single", "ours"]
    naive, single, ours = result["rows"]
    # The onnxruntime backbone computes what the PyTorch graph does: the same text, line for line.
    assert single["same_as_naive"] == 1.0 and single["cer"] == naive["cer"]
    assert naive["cer"] < 0.05  # the shipped model reads these rendered lines (0.012 when written)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved == result
    assert result["speedup_ours_vs_naive"] == round(ours["lines_per_s"] / naive["lines_per_s"], 2)
    assert (tmp_path / "run" / "results.md").read_text().count("\n|") == 5  # header, rule, 3 rows
