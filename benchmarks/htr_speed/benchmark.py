"""HTR speed benchmark: decoding (naive, batched, fast) and training throughput side by side in one run.

Writes ``rows.jsonl`` (each measurement as it finishes), ``results.json`` and ``results.md`` into the
run folder. Entry point: ``python scripts/benchmark_htr.py`` (configs/benchmark_htr.yaml).
"""

from __future__ import annotations

import platform
import time
import traceback
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tabulate import tabulate

from benchmarks.htr_speed.decode_bench import DTYPES, DecodeBenchmark, release_memory
from benchmarks.htr_speed.models import ARCHITECTURES
from benchmarks.htr_speed.train_bench import AMP_DTYPES, SDPA_BACKENDS, run_training
from inkbase.errors import ConfigError, check_range
from inkbase.jsonio import JsonlAppender, write_json
from inkbase.runs import start_run


def validate(cfg) -> None:
    if cfg.device not in ("cuda", "cpu"):
        raise ConfigError("device", f"{cfg.device!r} is not 'cuda' or 'cpu'")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda requested but no CUDA device is visible (use device=cpu)")
    if cfg.model.size not in ARCHITECTURES:
        raise ConfigError("model.size", f"{cfg.model.size!r} is not one of {sorted(ARCHITECTURES)}")
    if cfg.model.size not in cfg.equivalence_model:
        raise ConfigError("equivalence_model", f"has no entry for model.size={cfg.model.size}")
    dc = cfg.decode
    if dc.dtype not in DTYPES:
        raise ConfigError("decode.dtype", f"{dc.dtype!r} is not one of {sorted(DTYPES)}")
    if dc.attention not in ("eager", "sdpa"):
        raise ConfigError("decode.attention", f"{dc.attention!r} is not 'eager' or 'sdpa'")
    if dc.compare_attention not in (None, "eager", "sdpa"):
        raise ConfigError("decode.compare_attention", f"{dc.compare_attention!r} is not null, 'eager' or 'sdpa'")
    for name in dc.equivalence_models:
        if name not in ("peaked", "trained_copy"):
            raise ConfigError("decode.equivalence_models", f"{name!r} is not 'peaked' or 'trained_copy'")
    check_range("copy_model.steps", cfg.copy_model.steps, 1, 100_000)
    check_range("decode.num_beams", dc.num_beams, 1, 64)
    check_range("decode.max_new_tokens", dc.max_new_tokens, 1, 510)
    for key in ("naive_fp32_lines", "naive_lines", "hf_batch_size", "hf_batched_lines", "hf_greedy_lines",
                "fast_lines", "eager_lines", "equivalence_lines", "equivalence_batch_size"):
        check_range(f"decode.{key}", dc[key], 1, 100_000)
    if not dc.fast_batch_sizes:
        raise ConfigError("decode.fast_batch_sizes", "needs at least one batch size")
    for bs in dc.fast_batch_sizes:
        check_range("decode.fast_batch_sizes", bs, 1, 4096)
    check_range("time_budget_s", cfg.time_budget_s, 10, 86_400)
    for name, s in cfg.train.settings.items():
        if s.precision not in AMP_DTYPES:
            raise ConfigError(f"train.settings.{name}.precision", f"{s.precision!r} is not one of {sorted(AMP_DTYPES)}")
        check_range(f"train.settings.{name}.batch_size", s.batch_size, 1, 4096)
        if s.get("sdpa_backend") not in (None, *SDPA_BACKENDS):
            raise ConfigError(f"train.settings.{name}.sdpa_backend",
                              f"{s.sdpa_backend!r} is not null or one of {list(SDPA_BACKENDS)}")
    check_range("train.peak_tflops", cfg.train.peak_tflops, 0.001, 100_000)
    for mode in cfg.train.loader.modes:
        if mode not in ("processor", "uint8"):
            raise ConfigError("train.loader.modes", f"{mode!r} is not 'processor' or 'uint8'")


def environment(device: torch.device) -> dict:
    import transformers

    env = {"device": device.type, "torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version(), "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


def run(cfg) -> dict:
    validate(cfg)
    run_folder = start_run(cfg.out_dir, cfg)
    device = torch.device(cfg.device)
    if cfg.cpu_threads is not None:
        torch.set_num_threads(int(cfg.cpu_threads))
    deadline = time.monotonic() + cfg.time_budget_s
    results = {"environment": environment(device), "config": OmegaConf.to_container(cfg, resolve=True),
               "rows": []}
    rows_log = JsonlAppender(run_folder.file("rows.jsonl"))

    def record(row: dict) -> None:
        results["rows"].append(row)
        rows_log.write(row)
        write_json(run_folder.file("results.json"), results)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)

    def section(name: str, fn) -> None:
        try:
            fn()
        except Exception as err:  # one failing section must not lose the others' numbers
            record({"section": "error", "what": name, "error": f"{type(err).__name__}: {err}",
                    "traceback": traceback.format_exc(limit=8)})
        release_memory(device)

    bench = DecodeBenchmark(cfg, device, record, deadline)
    if cfg.decode.enabled:
        section("decode speed", bench.run_speed)
        for name in cfg.decode.equivalence_models:
            section(f"decode equivalence ({name})", lambda name=name: bench.run_equivalence(name))
    if cfg.train.enabled:
        section("training", lambda: run_training(cfg, device, record, bench.time_left))
    rows_log.close()
    summary = summarize(results)
    results["summary"] = summary
    write_json(run_folder.file("results.json"), results)
    Path(run_folder.file("results.md")).write_text(to_markdown(results, cfg), encoding="utf-8")
    run_folder.finish(summary)
    return summary


def summarize(results: dict) -> dict:
    rows = results["rows"]
    speed = [r for r in rows if r.get("lines_per_s") and r.get("model") == "speed"]

    def best(pred) -> float | None:
        vals = [r["lines_per_s"] for r in speed if pred(r)]
        return max(vals) if vals else None

    naive32 = best(lambda r: r["method"] == "naive_generate_one_line" and r["dtype"] == "float32")
    fast_beam = best(lambda r: r["method"].startswith("fast_decode") and r["num_beams"] > 1)
    train = {r["setting"]: r for r in rows if r.get("section") == "train" and "samples_per_s" in r}
    return {
        "naive_fp32_lines_per_s": naive32,
        "naive_lines_per_s": best(lambda r: r["method"] == "naive_generate_one_line" and r["dtype"] != "float32"),
        "hf_batched_beam_lines_per_s": best(lambda r: r["method"] == "hf_generate_batched" and r["num_beams"] > 1),
        "hf_batched_greedy_lines_per_s": best(lambda r: r["method"] == "hf_generate_batched" and r["num_beams"] == 1),
        "fast_beam_lines_per_s": fast_beam,
        "fast_greedy_lines_per_s": best(lambda r: r["method"].startswith("fast_decode") and r["num_beams"] == 1),
        "fast_beam_speedup_vs_naive_fp32": fast_beam / naive32 if fast_beam and naive32 else None,
        "train_samples_per_s": {k: v["samples_per_s"] for k, v in train.items()},
        "train_mfu": {k: v["mfu"] for k, v in train.items()},
        "errors": [r["what"] for r in rows if r.get("section") == "error"],
    }


def _speedups(row: dict) -> str:
    """The optional training speed-ups a row used, in a few words (``-`` for none)."""
    used = [label for key, label in (("speedups", "SDPA decoder + padded vocab"), ("cudnn_benchmark", "cuDNN autotune"))
            if row.get(key)]
    if row.get("sdpa_backend"):
        used.append(f"SDPA={row['sdpa_backend']}")
    if row.get("inductor"):
        used.append("inductor " + ",".join(f"{k}={v}" for k, v in row["inductor"].items()))
    return "; ".join(used) or "-"


def _fmt(v, digits: int = 1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.{digits}f}"
    return v


def _pct(v):
    return "-" if v is None else f"{100 * v:.1f}%"


def to_markdown(results: dict, cfg) -> str:
    env, rows, summary = results["environment"], results["rows"], results["summary"]
    lines = ["# HTR speed benchmark", ""]
    lines.append(f"Device: {env.get('gpu') or env.get('cpu')} ({env['device']}); torch {env['torch']}, "
                 f"transformers {env['transformers']}; architecture `{cfg.model.size}` "
                 + ", ".join(f"{r['parameters'] / 1e6:.3g} M parameters" for r in rows if r.get("section") == "model")
                 + ".")
    lines += ["", f"## Decoding ({cfg.decode.max_new_tokens} new tokens, random weights)", ""]
    naive32 = summary["naive_fp32_lines_per_s"]
    table = []
    for r in rows:
        if r.get("model") != "speed" or "lines_per_s" not in r:
            continue
        table.append([r["method"], r["dtype"], r["num_beams"], r["batch_size"], r["lines"],
                      _fmt(r["lines_per_s"]), _fmt(r["lines_per_s"] / naive32 if naive32 else None),
                      _pct(r.get("exact_match_vs_naive_same_dtype", r.get("exact_match_vs_hf_batched_same_dtype"))),
                      _pct(r.get("exact_match_vs_naive_fp32")), _fmt(r.get("setup_seconds"), 2)])
    lines.append(tabulate(table, headers=["method", "dtype", "beams", "batch", "lines", "lines/s", "x naive fp32",
                                          "exact vs naive same dtype*", "exact vs naive fp32", "setup s"],
                          tablefmt="github"))
    lines += ["", "*greedy rows compare with transformers' batched greedy generate in the same dtype.", ""]
    eq = [r for r in rows if r.get("section") == "equivalence"]
    if eq:
        lines += ["## Exact match with one-line generate (models with meaningful outputs)", "",
                  "`peaked`: random weights, LM head scaled, cross-attention strengthened, EOS logit raised "
                  "(build_trocr); `trained_copy`: a small model of the same architecture trained to read a "
                  "synthetic code (benchmarks.htr_speed.copy_task).", ""]
        keys = [k for k in eq[0] if k.endswith(("_vs_naive_float32", "_vs_naive_bfloat16", "_vs_naive_float16"))]
        table = [[r["model"], r["num_beams"], r["lines"], f"{r['generated_length_min']}-{r['generated_length_max']}",
                  r["distinct_outputs"]] + [_pct(r.get(k)) for k in keys] for r in eq]
        lines.append(tabulate(table, headers=["model", "beams", "lines", "generated length", "distinct outputs"]
                              + keys, tablefmt="github"))
        lines.append("")
    train = [r for r in rows if r.get("section") == "train"]
    if train:
        base = next((r["samples_per_s"] for r in train if "samples_per_s" in r), None)
        lines += [f"## Training throughput ({cfg.train.target_tokens} target tokens, synthetic device-resident "
                  f"batches; MFU against {cfg.train.peak_tflops:g} TFLOP/s)", ""]
        table = [[r["setting"], r.get("batch_size", "-"), r.get("precision", "-"), r.get("fused_adamw", "-"),
                  r.get("compile", "-"), _speedups(r), _fmt(r.get("samples_per_s")),
                  _fmt(r["samples_per_s"] / base if base and "samples_per_s" in r else None, 2),
                  _pct(r.get("mfu")), _fmt(r.get("peak_memory_gib")), r.get("error", "")] for r in train]
        lines.append(tabulate(table, headers=["setting", "batch", "precision", "fused AdamW", "compiled",
                                              "speed-ups", "samples/s", "x first", "MFU", "peak GiB", "error"],
                              tablefmt="github"))
        flops = next((r["train_flops_per_sample"] for r in train if "train_flops_per_sample" in r), None)
        if flops:
            lines.append(f"\nTraining FLOPs per sample (3 x forward matrix products): {flops / 1e9:.1f} GFLOP.")
        lines.append("")
    loaders = [r for r in rows if r.get("section") == "loader"]
    if loaders:
        lines += ["## Input pipeline (PNG line images decoded and resized in DataLoader workers)", ""]
        table = [[r["mode"], r["processor"], r["workers"], r["batch_size"], _fmt(r["images_per_s"], 0)]
                 for r in loaders]
        lines.append(tabulate(table, headers=["mode", "preprocessing", "workers", "batch", "images/s"],
                              tablefmt="github"))
    errors = [r for r in rows if r.get("section") in ("error", "skipped")]
    if errors:
        lines += ["", "## Errors and skipped parts", ""]
        lines += [f"- {r['what']}: {r.get('error') or r.get('why')}" for r in errors]
    return "\n".join(lines) + "\n"
