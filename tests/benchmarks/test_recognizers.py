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
    naive, single = result["rows"][0], result["rows"][1]
    assert naive["same_as_naive"] == 1.0 and single["same_as_naive"] == 1.0  # same weights, same numbers
    assert all(r["lines_per_s"] > 0 and 0 <= r["cer"] < 0.5 for r in result["rows"])
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["speedup_ours_vs_naive"] == result["speedup_ours_vs_naive"] > 0
    assert (tmp_path / "run" / "results.md").read_text().count("\n|") == 5  # header, rule, 3 rows
