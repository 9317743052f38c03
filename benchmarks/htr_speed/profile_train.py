"""Where the time of one TrOCR training step goes: timed steps, then a few profiled ones, kernels by category.

``python scripts/profile_htr_training.py`` (configs/profile_htr_training.yaml). The set-up is that of the
speed benchmark's compiled settings (random TrOCR weights, autocast, fused AdamW, each transformer layer
compiled, device-resident batches of random images and ``target_tokens`` targets); ``speedups=true``
applies :func:`htr.fast_train.speed_up_training` and cuDNN autotuning first, as in its ``ours`` setting.
A diagnostic, not a benchmark: throughput claims come from ``scripts/benchmark_htr.py``. Writes
``results.json`` (time per step, device time per step by category, the top kernels) and ``profile.txt``.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import torch
from omegaconf import DictConfig
from torch.profiler import ProfilerActivity, profile

from benchmarks.htr_speed.decode_bench import synchronize
from benchmarks.htr_speed.models import ARCHITECTURES, build_trocr
from benchmarks.htr_speed.train_bench import AMP_DTYPES, SDPA_BACKENDS, compile_layers, sdpa_only, train_step
from inkbase.errors import ConfigError, check_range
from inkbase.jsonio import write_json
from inkbase.runs import start_run

CATEGORIES = (  # kernel-name fragments, first match wins (CUDA kernels; aten operators on the CPU)
    ("attention", ("flash", "fmha", "cudnn", "attention", "sdpa")),
    ("gemm", ("gemm", "nvjet", "sm90", "cutlass", "cublas", "xmma", "matmul", "aten::mm", "aten::addmm",
              "aten::bmm")),
    ("triton (fused elementwise/norm)", ("triton",)),
    ("optimizer", ("adam", "multi_tensor")),
    ("loss", ("softmax", "nll", "cross")),
)


def category(kernel: str) -> str:
    name = kernel.lower()
    return next((label for label, keys in CATEGORIES if any(k in name for k in keys)), "other")


def validate(cfg: DictConfig) -> None:
    if cfg.device not in ("cuda", "cpu"):
        raise ConfigError("device", f"{cfg.device!r} is not 'cuda' or 'cpu'")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda requested but no CUDA device is visible (use device=cpu)")
    if cfg.model_size not in ARCHITECTURES:
        raise ConfigError("model_size", f"{cfg.model_size!r} is not one of {sorted(ARCHITECTURES)}")
    if cfg.precision not in AMP_DTYPES:
        raise ConfigError("precision", f"{cfg.precision!r} is not one of {sorted(AMP_DTYPES)}")
    if cfg.sdpa_backend not in (None, *SDPA_BACKENDS):
        raise ConfigError("sdpa_backend", f"{cfg.sdpa_backend!r} is not null or one of {list(SDPA_BACKENDS)}")
    if cfg.compile_mode not in (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
        raise ConfigError("compile_mode", f"{cfg.compile_mode!r} is not a torch.compile mode")
    if cfg.float8:
        try:
            import torchao.float8  # noqa: F401
        except ImportError as err:
            raise ConfigError("float8", f"needs torchao installed ({err})") from err
    check_range("batch_size", cfg.batch_size, 1, 4096)
    check_range("target_tokens", cfg.target_tokens, 2, 510)
    check_range("warmup_steps", cfg.warmup_steps, 0, 1000)
    check_range("timed_steps", cfg.timed_steps, 1, 10_000)
    check_range("profiled_steps", cfg.profiled_steps, 0, 100)


def build_step(cfg: DictConfig, device: torch.device) -> tuple[Any, dict]:
    """The model and optimiser as configured, and a function running one optimiser step on a fixed batch."""
    model = build_trocr(cfg.model_size, seed=cfg.seed, device=device).train()
    notes: dict[str, Any] = {"attn_implementation": {"encoder": model.config.encoder._attn_implementation,
                                                     "decoder": model.config.decoder._attn_implementation}}
    if cfg.speedups:
        from htr.fast_train import speed_up_training

        notes["speedups"] = speed_up_training(model)
        torch.backends.cudnn.benchmark = True
    if cfg.float8:
        from torchao.float8 import convert_to_float8_training

        convert_to_float8_training(model, module_filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear)
                                   and m.in_features % 16 == 0 and m.out_features % 16 == 0
                                   and "output_projection" not in fqn)
    if cfg.compile:
        compile_layers(model, mode=cfg.compile_mode)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01, fused=True)
    size = model.config.encoder.image_size
    g = torch.Generator().manual_seed(cfg.seed)
    pixels = torch.randn(cfg.batch_size, 3, size, size, generator=g).to(device)
    labels = torch.randint(3, model.config.decoder.vocab_size, (cfg.batch_size, cfg.target_tokens), generator=g)
    labels = labels.to(device)
    amp_dtype = AMP_DTYPES[cfg.precision]
    scaler = torch.amp.GradScaler(device.type) if amp_dtype is torch.float16 else None
    return (lambda: train_step(model, opt, pixels, labels, amp_dtype, scaler)), notes


def kernel_table(prof, device: torch.device, steps: int) -> dict[str, Any]:
    """Self device time per step: the total, by category, and per kernel (largest first)."""
    kind = torch.autograd.DeviceType.CUDA if device.type == "cuda" else torch.autograd.DeviceType.CPU

    def self_time(e) -> float:
        return e.self_device_time_total if device.type == "cuda" else e.self_cpu_time_total

    events = [e for e in prof.key_averages() if e.device_type == kind and self_time(e) > 0]
    by_category: collections.Counter = collections.Counter()
    for e in events:
        by_category[category(e.key)] += self_time(e)
    kernels = [{"ms": self_time(e) / steps / 1000, "calls": e.count // steps, "name": e.key}
               for e in sorted(events, key=lambda e: -self_time(e))]
    return {"device_ms_per_step": sum(self_time(e) for e in events) / steps / 1000,
            "by_category_ms": {label: us / steps / 1000 for label, us in by_category.most_common()},
            "kernels": kernels}


def run(cfg: DictConfig) -> dict[str, Any]:
    validate(cfg)
    folder = start_run(cfg.out_dir, cfg)
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    step, notes = build_step(cfg, device)
    results: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                               "torch": torch.__version__, **notes}
    with sdpa_only(cfg.sdpa_backend):
        start = time.perf_counter()
        for _ in range(cfg.warmup_steps):
            step()
        synchronize(device)
        results["warmup_s"] = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(cfg.timed_steps):
            step()
        synchronize(device)
        per_step = (time.perf_counter() - start) / cfg.timed_steps
        results.update(ms_per_step=per_step * 1000, samples_per_s=cfg.batch_size / per_step)
        if device.type == "cuda":
            results.update(alloc_retries=torch.cuda.memory_stats(device)["num_alloc_retries"],
                           peak_memory_gib=torch.cuda.max_memory_allocated(device) / 2**30)
        print(f"{results['ms_per_step']:.1f} ms/step, {results['samples_per_s']:.1f} samples/s", flush=True)
        if cfg.profiled_steps:
            activity = ProfilerActivity.CUDA if device.type == "cuda" else ProfilerActivity.CPU
            with profile(activities=[activity]) as prof:
                for _ in range(cfg.profiled_steps):
                    step()
                synchronize(device)
            results.update(kernel_table(prof, device, cfg.profiled_steps))
    write_json(folder.file("results.json"), results)
    folder.file("profile.txt").write_text(to_text(results, cfg, top=cfg.top_kernels), encoding="utf-8")
    folder.finish({k: results[k] for k in ("ms_per_step", "samples_per_s", "device_ms_per_step") if k in results})
    return results


def to_text(results: dict[str, Any], cfg: DictConfig, top: int) -> str:
    lines = [f"batch {cfg.batch_size}, SDPA backend {cfg.sdpa_backend}, speed-ups {cfg.speedups}, float8 "
             f"{cfg.float8}, compiled {cfg.compile} (mode {cfg.compile_mode}) on {results['device']}: "
             f"{results['ms_per_step']:.1f} ms/step, {results['samples_per_s']:.1f} samples/s"]
    if "peak_memory_gib" in results:
        lines.append(f"alloc retries {results['alloc_retries']}, peak {results['peak_memory_gib']:.1f} GiB")
    if "device_ms_per_step" in results:
        lines.append(f"device time per step {results['device_ms_per_step']:.1f} ms "
                     f"(wall {results['ms_per_step']:.1f} ms)")
        lines += [f"  {label:35s} {ms:8.1f} ms  {100 * ms / results['device_ms_per_step']:5.1f}%"
                  for label, ms in results["by_category_ms"].items()]
        lines += [f"{k['ms']:8.2f} ms {k['calls']:5d}x  {k['name'][:160]}" for k in results["kernels"][:top]]
    return "\n".join(lines) + "\n"
