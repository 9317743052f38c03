"""The training-step profiler on the CPU (tiny architecture): its timings and kernel table add up."""

from __future__ import annotations

import importlib.util
import json

import pytest

from benchmarks.htr_speed import profile_train
from inkbase.cli import compose
from inkbase.errors import ConfigError

CPU_SMOKE = ["device=cpu", "model_size=tiny", "batch_size=2", "compile=false", "warmup_steps=1", "timed_steps=2",
             "profiled_steps=2"]


def test_cpu_profile_adds_up(tmp_path):
    cfg = compose("profile_htr_training", [*CPU_SMOKE, f"out_dir={tmp_path / 'run'}"])
    result = profile_train.run(cfg)
    assert result["samples_per_s"] == pytest.approx(2 / (result["ms_per_step"] / 1000))
    assert sum(result["by_category_ms"].values()) == pytest.approx(result["device_ms_per_step"])
    kernels = {k["name"]: k for k in result["kernels"]}
    # One fused AdamW update and one loss backward per optimiser step; the linear layers run as matrix products.
    assert kernels["aten::_fused_adamw_"]["calls"] == 1 and kernels["aten::nll_loss_backward"]["calls"] == 1
    assert profile_train.category("aten::addmm") == "gemm" and result["by_category_ms"]["gemm"] > 0
    ms = [k["ms"] for k in result["kernels"]]
    assert ms == sorted(ms, reverse=True)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["kernels"] == result["kernels"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["samples_per_s"] == result["samples_per_s"]
    text = (tmp_path / "run" / "profile.txt").read_text().splitlines()
    assert text[0].startswith("batch 2, SDPA backend None") and len(text) == 2 + len(result["by_category_ms"]) + min(
        len(result["kernels"]), cfg.top_kernels)


@pytest.mark.parametrize("override,key", [("sdpa_backend=fastest", "sdpa_backend"), ("model_size=huge", "model_size"),
                                          ("compile_mode=fastest", "compile_mode"), ("timed_steps=0", "timed_steps")]
                         + ([("float8=true", "float8")] if importlib.util.find_spec("torchao") is None else []))
def test_bad_settings_are_refused_before_anything_runs(tmp_path, override, key):
    cfg = compose("profile_htr_training", [*CPU_SMOKE, override, f"out_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match=key):
        profile_train.run(cfg)
    assert not (tmp_path / "run").exists()
