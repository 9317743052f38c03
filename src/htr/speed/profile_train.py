"""Where the GPU time of one training step of TrOCR-base goes: a kernel table by category (GPU only).

    python -m htr.speed.profile_train BATCH SDPA_BACKEND MODE

BATCH: lines per step. SDPA_BACKEND: ``none`` (torch's choice) or one of ``htr.speed.train_bench.SDPA_BACKENDS``.
MODE: ``prof`` (time 8 steps, then profile 2 and print the table), ``fp8`` (torchao float8 training of the
linear layers; needs ``torchao`` installed), ``ro`` (layers compiled with ``mode="reduce-overhead"``), or
anything else (time only). The set-up is that of the benchmark's compiled settings (random TrOCR-base
weights, bf16 autocast, fused AdamW, each transformer layer compiled, device-resident batches of 384x384
images and 40 target tokens). With ``FAST=1`` in the environment, ``htr.fast_train.speed_up_training`` and
cuDNN autotuning are applied first, as in the benchmark's ``ours`` setting. Results are in
``experiments/htr_speed/tries/``. A GPU-only diagnostic with positional arguments, not a benchmark: throughput claims come from
``scripts/benchmark_htr.py``.
"""

from __future__ import annotations

import collections
import os
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from htr.speed.models import build_trocr
from htr.speed.train_bench import compile_layers, sdpa_only, train_step

CATEGORIES = (  # kernel-name fragments, first match wins
    ("attention", ("flash", "fmha", "cudnn", "attention", "sdpa")),
    ("gemm", ("gemm", "nvjet", "sm90", "cutlass", "cublas", "xmma", "matmul")),
    ("triton (fused elementwise/norm)", ("triton",)),
    ("optimizer", ("adam", "multi_tensor")),
    ("loss", ("softmax", "nll", "cross")),
)


def category(kernel: str) -> str:
    name = kernel.lower()
    return next((label for label, keys in CATEGORIES if any(k in name for k in keys)), "other")


def build(batch: int, mode: str, device: torch.device):
    torch.manual_seed(0)
    model = build_trocr("base", device=device).train()
    for name, module in model.named_modules():  # the layer structure of the installed transformers
        if isinstance(module, torch.nn.ModuleList):
            print(name, type(module[0]).__name__, [n for n, _ in module[0].named_children()], flush=True)
            for sub_name, sub in module[0].named_modules():
                if sub_name.count(".") <= 1:
                    print("   ", sub_name, type(sub).__name__)
    print("attn impl", model.config.encoder._attn_implementation, model.config.decoder._attn_implementation)
    if os.environ.get("FAST"):
        from htr.fast_train import speed_up_training

        print(speed_up_training(model))
        torch.backends.cudnn.benchmark = True
    if mode == "fp8":
        from torchao.float8 import convert_to_float8_training

        convert_to_float8_training(model, module_filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear)
                                   and m.in_features % 16 == 0 and m.out_features % 16 == 0
                                   and "output_projection" not in fqn)
        print("fp8 converted")
    compile_layers(model, mode="reduce-overhead" if mode == "ro" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01, fused=True)
    pixels = torch.randn(batch, 3, 384, 384, device=device)
    labels = torch.randint(3, 50265, (batch, 40), device=device)

    return lambda: train_step(model, opt, pixels, labels, torch.bfloat16)


def main() -> None:
    batch, backend, mode = int(sys.argv[1]), (None if sys.argv[2] == "none" else sys.argv[2]), sys.argv[3]
    step = build(batch, mode, torch.device("cuda"))
    with sdpa_only(backend):
        start = time.perf_counter()
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        print(f"warm-up {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        for _ in range(8):
            step()
        torch.cuda.synchronize()
        dt = (time.perf_counter() - start) / 8
        stats = torch.cuda.memory_stats()
        print(f"RESULT batch {batch} backend {backend} mode {mode}: {dt * 1000:.1f} ms/step, {batch / dt:.1f} "
              f"samples/s, alloc retries {stats['num_alloc_retries']}, peak "
              f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)
        if mode != "prof":
            return
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(2):
                step()
            torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.self_device_time_total for e in events)
    by_category = collections.Counter()
    for e in events:
        by_category[category(e.key)] += e.self_device_time_total
    print(f"GPU kernel time per step {total / 2 / 1000:.1f} ms (wall {dt * 1000:.1f} ms)")
    for label, us in by_category.most_common():
        print(f"  {label:35s} {us / 2 / 1000:8.1f} ms  {100 * us / total:5.1f}%")
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:50]:
        print(f"{e.self_device_time_total / 2 / 1000:8.2f} ms {e.count // 2:5d}x  {e.key[:160]}")


if __name__ == "__main__":
    main()
