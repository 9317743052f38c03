"""The speed benchmark runs end to end on the CPU (tiny architecture) and its fast path matches naive generate."""

from __future__ import annotations

import json

import pytest

from benchmarks.htr_speed import benchmark
from inkbase.cli import compose
from inkbase.errors import ConfigError


def test_cpu_smoke_run_end_to_end(tmp_path):
    cfg = compose("benchmark_htr", ["speed_profile=cpu_smoke", f"out_dir={tmp_path / 'run'}"])
    summary = benchmark.run(cfg)
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    assert (run / "metrics.json").exists() and (run / "results.md").read_text().startswith("# HTR speed benchmark")
    assert summary["errors"] == []
    rows = results["rows"]
    fast = [r for r in rows if r.get("method", "").startswith("fast_decode")]
    assert {r["num_beams"] for r in fast} == {1, 5} and all(r["lines_per_s"] > 0 for r in fast)
    for r in fast:
        same_dtype = r.get("exact_match_vs_naive_same_dtype", r.get("exact_match_vs_hf_batched_same_dtype"))
        assert same_dtype == 1.0, r
    equivalence = [r for r in rows if r.get("section") == "equivalence"]
    assert {(r["model"], r["num_beams"]) for r in equivalence} == {(m, b) for m in ("peaked", "trained_copy")
                                                                    for b in (1, 5)}
    for r in equivalence:
        assert r["fast_float32_vs_naive_float32"] == 1.0, r
        assert 0.0 <= r["fast_bfloat16_vs_naive_bfloat16"] <= 1.0
        assert r["generated_length_min"] < r["generated_length_max"], r  # EOS at different steps
    train = {r["setting"]: r for r in rows if r.get("section") == "train"}
    assert set(train) == set(cfg.train.settings) and all(r["samples_per_s"] > 0 for r in train.values())
    assert any(r.get("section") == "loader" and r["images_per_s"] > 0 for r in rows)


def test_unknown_sdpa_backend_is_refused_before_anything_runs(tmp_path):
    cfg = compose("benchmark_htr", ["speed_profile=cpu_smoke", f"out_dir={tmp_path / 'run'}",
                                    "++train.settings.ours.sdpa_backend=fastest"])
    with pytest.raises(ConfigError, match=r"train\.settings\.ours\.sdpa_backend"):
        benchmark.run(cfg)
    assert not (tmp_path / "run").exists()
