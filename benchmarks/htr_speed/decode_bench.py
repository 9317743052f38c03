"""Decoding speed and equivalence: naive one-line ``generate`` vs batched ``generate`` vs :mod:`htr.fast_decode`.

Every method decodes the same pixel values (already on the device) with the same model weights; a
method's time runs from pixel values to token ids on the CPU. Exact match compares each line's
generated tokens (up to and including EOS) with naive one-line ``generate`` of the same model, in the
same dtype and, separately, in float32.
"""

from __future__ import annotations

import copy
import gc
import time
import traceback
from collections.abc import Callable

import torch
from tqdm import tqdm

from benchmarks.htr_speed.copy_task import train_copy_model
from benchmarks.htr_speed.models import build_trocr, count_parameters, random_pixels
from htr.fast_decode import FastDecoder, resolve_settings, trim_generated

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release_memory(device: torch.device) -> None:
    """Free what finished measurements held (decoders and their buffers form reference cycles)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def timed(fn: Callable, device: torch.device):
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def match_rate(ours: list, reference: list) -> float | None:
    n = min(len(ours), len(reference))
    return None if n == 0 else sum(a == b for a, b in zip(ours[:n], reference[:n], strict=True)) / n


def naive_generate(model, pixel_values, eos, desc: str, **kwargs) -> list[tuple[int, ...]]:
    out = []
    for i in tqdm(range(pixel_values.shape[0]), desc=desc, leave=False):
        out.extend(trim_generated(model.generate(pixel_values=pixel_values[i:i + 1], **kwargs), eos))
    return out


def batched_generate(model, pixel_values, batch_size: int, eos, **kwargs) -> list[tuple[int, ...]]:
    out = []
    for start in range(0, pixel_values.shape[0], batch_size):
        ids = model.generate(pixel_values=pixel_values[start:start + batch_size], **kwargs)
        out.extend(trim_generated(ids, eos))
    return out


class DecodeBenchmark:
    """Runs the decoding comparisons of one model and records rows as they finish."""

    def __init__(self, cfg, device: torch.device, record: Callable[[dict], None], deadline: float):
        self.cfg, self.device, self.record, self.deadline = cfg, device, record, deadline
        self.dtype = DTYPES[cfg.decode.dtype]

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def _row(self, **row) -> dict:
        if row.get("seconds"):
            row["lines_per_s"] = row["lines"] / row["seconds"]
        self.record(row)
        return row

    # ---- speed model: random weights, as the figures -------------------------------------

    def run_speed(self) -> None:
        cfg, dev, dc = self.cfg, self.device, self.cfg.decode
        model32 = build_trocr(cfg.model.size, seed=0, device=dev,
                              cross_attention_hidden_size=cfg.model.cross_attention_hidden_size)
        model16 = copy.deepcopy(model32).to(self.dtype)
        self.record({"section": "model", "model": "speed", "parameters": count_parameters(model32)})
        settings = resolve_settings(model16, dc.num_beams, dc.max_new_tokens)
        eos = settings.eos_token_ids
        beam = dict(num_beams=dc.num_beams, max_new_tokens=dc.max_new_tokens)
        greedy = dict(num_beams=1, max_new_tokens=dc.max_new_tokens)
        n_max = max(dc.fast_lines, dc.hf_batched_lines, dc.hf_greedy_lines, dc.naive_lines)
        pv32 = random_pixels(model32, n_max, seed=1, device=dev)
        pv16 = pv32.to(self.dtype)
        common = dict(model="speed", num_beams=dc.num_beams, max_new_tokens=dc.max_new_tokens)

        # Naive one-line generate, float32 and the benchmark dtype (the references for exact match).
        naive_generate(model32, pv32[:1], eos, "warm-up", **beam)
        ref32, sec = timed(lambda: naive_generate(model32, pv32[:dc.naive_fp32_lines], eos, "naive fp32", **beam), dev)
        self._row(method="naive_generate_one_line", dtype="float32", batch_size=1, lines=len(ref32), seconds=sec,
                  **common)
        naive_generate(model16, pv16[:1], eos, "warm-up", **beam)
        ref16, sec = timed(lambda: naive_generate(model16, pv16[:dc.naive_lines], eos, f"naive {dc.dtype}", **beam),
                           dev)
        self._row(method="naive_generate_one_line", dtype=dc.dtype, batch_size=1, lines=len(ref16), seconds=sec,
                  exact_match_vs_naive_fp32=match_rate(ref16, ref32), **common)

        # transformers' own batched generate (beam and greedy).
        hb = dc.hf_batch_size
        batched_generate(model16, pv16[:hb], hb, eos, **beam)
        out, sec = timed(lambda: batched_generate(model16, pv16[:dc.hf_batched_lines], hb, eos, **beam), dev)
        self._row(method="hf_generate_batched", dtype=dc.dtype, batch_size=hb, lines=len(out), seconds=sec,
                  exact_match_vs_naive_same_dtype=match_rate(out, ref16),
                  exact_match_vs_naive_fp32=match_rate(out, ref32), **common)
        batched_generate(model16, pv16[:hb], hb, eos, **greedy)
        hf_greedy, sec = timed(lambda: batched_generate(model16, pv16[:dc.hf_greedy_lines], hb, eos, **greedy), dev)
        self._row(method="hf_generate_batched", dtype=dc.dtype, batch_size=hb, lines=len(hf_greedy), seconds=sec,
                  model="speed", num_beams=1, max_new_tokens=dc.max_new_tokens)

        # Ours: beam search at several batch sizes, then greedy.
        best = None
        for bs in dc.fast_batch_sizes:
            if self.time_left() < dc.reserve_s:
                self.record({"section": "skipped", "what": f"fast beam batch {bs}", "why": "time budget"})
                break
            row = self._fast(model16, pv16, settings, bs, dc.attention, dc.cuda_graphs, ref16, ref32, common)
            if best is None or row["lines_per_s"] > best[1]:
                best = (bs, row["lines_per_s"])
        if best is not None and self.time_left() > dc.reserve_s:
            if dc.compare_attention:
                self._fast(model16, pv16, settings, best[0], dc.compare_attention, dc.cuda_graphs, ref16, ref32,
                           common)
            if dc.cuda_graphs and dev.type == "cuda":
                self._fast(model16, pv16[:dc.eager_lines], settings, dc.fast_batch_sizes[0], dc.attention, False,
                           ref16, ref32, common)
            gsettings = resolve_settings(model16, 1, dc.max_new_tokens)
            gcommon = dict(common, num_beams=1)
            self._fast(model16, pv16, gsettings, best[0], dc.attention, dc.cuda_graphs, None, None, gcommon,
                       reference_batched=hf_greedy)

    def _fast(self, model, pv, settings, batch_size, attention, graphs, ref16, ref32, common,
              reference_batched=None) -> dict:
        try:
            row = self._fast_once(model, pv, settings, batch_size, attention, graphs, ref16, ref32, common,
                                  reference_batched)
            release_memory(self.device)
            return row
        except Exception as err:
            if not graphs:
                raise
            # Keep a number for this point even if graph capture fails: record why, then time without graphs.
            self.record({"section": "error", "what": f"fast_decode {attention} batch {batch_size} with CUDA graphs",
                         "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(limit=6)})
            release_memory(self.device)
            return self._fast_once(model, pv, settings, batch_size, attention, False, ref16, ref32, common,
                                   reference_batched)

    def _fast_once(self, model, pv, settings, batch_size, attention, graphs, ref16, ref32, common,
                   reference_batched) -> dict:
        dc, dev = self.cfg.decode, self.device
        release_memory(dev)
        decoder = FastDecoder(model, settings=settings, batch_size=batch_size, attention=attention,
                              cuda_graphs=graphs)
        _, setup = timed(lambda: decoder.generate(pv[:batch_size]), dev)  # buffers, warm-up, graph capture
        lines = min(pv.shape[0], dc.fast_lines)
        ids, sec = timed(lambda: decoder.generate(pv[:lines]), dev)
        out = trim_generated(ids, settings.eos_token_ids)
        extra = {}
        if ref16 is not None:
            extra["exact_match_vs_naive_same_dtype"] = match_rate(out, ref16)
            extra["exact_match_vs_naive_fp32"] = match_rate(out, ref32)
        if reference_batched is not None:
            extra["exact_match_vs_hf_batched_same_dtype"] = match_rate(out, reference_batched)
        graph_note = "cuda_graphs" if decoder.cuda_graphs else "eager"
        if dev.type == "cuda":
            extra["peak_memory_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
        return self._row(method=f"fast_decode[{attention},{graph_note}]", dtype=dc.dtype, batch_size=batch_size,
                         lines=lines, seconds=sec, setup_seconds=setup, **extra, **common)

    # ---- equivalence models: outputs with clear margins, EOS at varied steps -------------------------

    def _equivalence_model(self, name: str):
        cfg, dev, n = self.cfg, self.device, self.cfg.decode.equivalence_lines
        if name == "peaked":
            em = cfg.equivalence_model[cfg.model.size]
            model = build_trocr(cfg.model.size, seed=1, device=dev,
                                cross_attention_hidden_size=cfg.model.cross_attention_hidden_size,
                                logit_scale=em.logit_scale, eos_logit=em.eos_logit, cross_gain=em.cross_gain,
                                tie_word_embeddings=em.tie_word_embeddings)
            return model, random_pixels(model, n, seed=2, device=dev), {}
        if name == "trained_copy":
            start = time.perf_counter()
            model, task, loss = train_copy_model(cfg.copy_model.steps, dev)
            pixels, _ = task.batch(n, torch.Generator().manual_seed(12345))
            info = {"train_steps": cfg.copy_model.steps, "train_final_loss": loss,
                    "train_seconds": time.perf_counter() - start}
            return model, pixels.to(dev), info
        raise ValueError(f"unknown equivalence model {name!r}")

    def run_equivalence(self, name: str) -> None:
        dev, dc = self.device, self.cfg.decode
        model32, pv32, info = self._equivalence_model(name)
        model16 = copy.deepcopy(model32).to(self.dtype)
        pv16 = pv32.to(self.dtype)
        for num_beams in (dc.num_beams, 1):
            settings = resolve_settings(model16, num_beams, dc.max_new_tokens)
            eos = settings.eos_token_ids
            kw = dict(num_beams=num_beams, max_new_tokens=dc.max_new_tokens)
            ref32 = naive_generate(model32, pv32, eos, f"naive fp32 ({name})", **kw)
            ref16 = naive_generate(model16, pv16, eos, f"naive {dc.dtype} ({name})", **kw)
            hf16 = batched_generate(model16, pv16, dc.hf_batch_size, eos, **kw)
            lengths = [len(x) for x in ref32]
            bs = dc.equivalence_batch_size
            ours16 = trim_generated(FastDecoder(model16, settings=settings, batch_size=bs, attention=dc.attention,
                                                cuda_graphs=dc.cuda_graphs).generate(pv16), eos)
            ours32 = trim_generated(FastDecoder(model32, settings=settings, batch_size=bs, attention=dc.attention,
                                                cuda_graphs=dc.cuda_graphs).generate(pv32), eos)
            self.record({
                "section": "equivalence", "model": name, "num_beams": num_beams, "attention": dc.attention,
                "max_new_tokens": dc.max_new_tokens, "lines": len(ref32),
                "generated_length_min": min(lengths), "generated_length_max": max(lengths),
                "generated_length_mean": sum(lengths) / len(lengths),
                "distinct_outputs": len(set(ref32)),
                f"fast_{dc.dtype}_vs_naive_{dc.dtype}": match_rate(ours16, ref16),
                f"fast_{dc.dtype}_vs_naive_float32": match_rate(ours16, ref32),
                "fast_float32_vs_naive_float32": match_rate(ours32, ref32),
                f"hf_batched_{dc.dtype}_vs_naive_{dc.dtype}": match_rate(hf16, ref16),
                f"naive_{dc.dtype}_vs_naive_float32": match_rate(ref16, ref32),
                **info,
            })
            release_memory(dev)
