"""The speed benchmark runs on the CPU (tiny architecture) and its fast path matches naive generate."""

from __future__ import annotations

import json

import pytest

from benchmarks.htr_speed import benchmark
from inkbase.cli import compose
from inkbase.errors import ConfigError

# Every section once, on fewer lines and settings than speed_profile=cpu_smoke (which the slow tier runs).
QUICK = ["speed_profile=cpu_smoke", "decode.equivalence_models=[peaked]", "decode.naive_fp32_lines=2",
         "decode.naive_lines=4", "decode.hf_batched_lines=8", "decode.hf_greedy_lines=8", "decode.fast_batch_sizes=[8]",
         "decode.fast_lines=8", "decode.eager_lines=8", "decode.compare_attention=null", "train.loader.modes=[uint8]",
         "train.loader.seconds=1", *[f"~train.settings.{name}" for name in ("seed_fp16_b8", "plain_bf16_b48",
                                                                            "ours_compiled_only", "ours_b256")]]


def test_quick_cpu_run_of_every_section(tmp_path):
    cfg = compose("benchmark_htr", [*QUICK, f"out_dir={tmp_path / 'run'}"])
    summary = benchmark.run(cfg)
    assert summary["errors"] == []
    rows = json.loads((tmp_path / "run" / "results.json").read_text())["rows"]
    fast = [r for r in rows if r.get("method", "").startswith("fast_decode")]
    assert sorted((r["num_beams"], r["batch_size"], r["lines"]) for r in fast) == [(1, 8, 8), (5, 8, 8)]
    assert all(r.get("exact_match_vs_naive_same_dtype", r.get("exact_match_vs_hf_batched_same_dtype")) == 1.0
               for r in fast)
    equivalence = [r for r in rows if r.get("section") == "equivalence"]
    assert sorted((r["model"], r["num_beams"]) for r in equivalence) == [("peaked", 1), ("peaked", 5)]
    assert all(r["fast_float32_vs_naive_float32"] == 1.0 for r in equivalence)
    train = [r for r in rows if r.get("section") == "train"]
    assert [(r["setting"], r["batch_size"], r["speedups"]) for r in train] == [("ours_not_compiled", 16, False),
                                                                              ("ours", 16, True)]
    assert [r["mode"] for r in rows if r.get("section") == "loader"] == ["uint8"]
    assert summary["train_samples_per_s"] == {r["setting"]: r["samples_per_s"] for r in train}
    md = (tmp_path / "run" / "results.md").read_text()
    assert md.startswith("# HTR speed benchmark") and "## Training throughput" in md and "## Input pipeline" in md


@pytest.mark.slow
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
        assert r["lines"] == cfg.decode.equivalence_lines and "fast_bfloat16_vs_naive_bfloat16" in r
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
