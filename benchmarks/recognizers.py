"""CPU speed of line recognisers, side by side in one run on the same lines.

``python scripts/benchmark_recognizers.py [model_dir=<dir>] [lines=64] [threads=2]``. The lines are
rendered once (``htr.synth``, held-out fonts, fixed seed) and every recogniser reads all of them:

* ``naive``: the model folder (by default the shipped one) one line at a time, running its graph
  operator by operator in PyTorch (``fast=false``);
* ``ours_single``: the same weights one line at a time, the backbone in onnxruntime (``fast=true``);
* ``ours``: :class:`htr.recognize.ModelRecognizer` as the pipeline uses it: lines sorted by length and
  batched (``batch_size``), backbone in onnxruntime. Batching pads lines to the longest of the batch, and
  PP-OCR's attention neck sees that padding, so a few outputs can differ from one-line reading;
* ``rapidocr`` and ``tesseract``, for reference (their own models; different outputs).

For each: lines/s (best of ``repeats`` timed passes after one warm-up pass), CER against the rendered
text, and the share of lines whose output is identical to ``naive``'s. Writes ``rows.jsonl`` as each
recogniser finishes, then ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from tabulate import tabulate

from htr.evaluate import error_rates
from inkbase.errors import check_range
from inkbase.jsonio import JsonlAppender, write_json
from inkbase.runs import start_run


def render_lines(n: int, seed: int, max_chars: int) -> tuple[list, list[str]]:
    from htr.synth.fonts import list_fonts
    from htr.synth.lines import AugmentConfig, render_line
    from htr.synth.text import chop, sample_exam_sentences

    rng = np.random.default_rng(seed)
    sentences = sample_exam_sentences()
    fonts = list_fonts("heldout")
    images, texts = [], []
    for i in range(n):
        sentence = sentences[int(rng.integers(len(sentences)))]
        text = chop(sentence, max_chars, rng, max(1, max_chars // 3))[0]
        font = fonts[i % len(fonts)]
        text = text.upper() if font.uppercase_only else text
        images.append(render_line(text, font, rng, AugmentConfig()))
        texts.append(text)
    return images, texts


def _time(recognize, images, batch_size: int, repeats: int) -> tuple[list[str], float]:
    def one_pass() -> list[str]:
        out: list[str] = []
        for i in range(0, len(images), batch_size):
            out += recognize(images[i:i + batch_size])
        return out

    outputs = one_pass()  # warm-up (sessions, caches, allocations)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        again = one_pass()
        best = min(best, time.perf_counter() - start)
        if again != outputs:
            raise RuntimeError("a recogniser gave different outputs on a repeated pass")
    return outputs, len(images) / best


def run(cfg: DictConfig) -> dict[str, Any]:
    from htr.recognize import ModelRecognizer, RapidOCRRecognizer, TesseractRecognizer

    check_range("lines", cfg.lines, 1, 100_000)
    check_range("batch_size", cfg.batch_size, 1, 4096)
    check_range("repeats", cfg.repeats, 1, 100)
    folder = start_run(cfg.out_dir, cfg)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    images, texts = render_lines(cfg.lines, cfg.seed, cfg.max_chars)
    model = ModelRecognizer(cfg.model_dir, num_beams=cfg.num_beams, batch_size=cfg.batch_size, device="cpu")
    bundle = model.bundle
    setups = [
        ("naive", "one line at a time, PyTorch graph", lambda ims: bundle.transcribe(ims, cfg.num_beams, fast=False), 1),
        ("ours_single", "one line at a time, onnxruntime backbone",
         lambda ims: bundle.transcribe(ims, cfg.num_beams, fast=True), 1),
        ("ours", f"length-sorted batches of {cfg.batch_size}, onnxruntime backbone (ModelRecognizer)",
         model.recognize, len(images)),
    ]
    if cfg.baselines:
        rapid = RapidOCRRecognizer()
        setups.append(("rapidocr", "RapidOCR (PP-OCR, its own weights and preprocessing)", rapid.recognize, 1))
        try:
            tess = TesseractRecognizer()
            setups.append(("tesseract", "Tesseract 5, --psm 7", tess.recognize, 1))
        except RuntimeError as err:
            print(f"skipping tesseract: {err}")
    rows, reference = [], None
    with JsonlAppender(folder.file("rows.jsonl")) as out:
        for name, what, recognize, batch_size in setups:
            outputs, rate = _time(recognize, images, batch_size, cfg.repeats)
            if reference is None:
                reference = outputs
            row = {"recognizer": name, "setting": what, "lines_per_s": round(rate, 2),
                   "cer": round(error_rates(texts, outputs)["cer"], 4),
                   "same_as_naive": round(float(np.mean([a == b for a, b in zip(outputs, reference, strict=True)])), 4)}
            out.write(row)
            rows.append(row)
            print(f"{name}: {row['lines_per_s']} lines/s, CER {row['cer']}, same as naive {row['same_as_naive']}")
    by_name = {r["recognizer"]: r for r in rows}
    result = {"rows": rows, "lines": cfg.lines, "num_beams": cfg.num_beams, "threads": torch.get_num_threads(),
              "model_dir": model.model_dir,
              "speedup_ours_vs_naive": round(by_name["ours"]["lines_per_s"] / by_name["naive"]["lines_per_s"], 2)}
    write_json(folder.file("results.json"), result)
    table = tabulate([[r["recognizer"], r["setting"], r["lines_per_s"], r["cer"], r["same_as_naive"]] for r in rows],
                     headers=["recogniser", "setting", "lines/s", "CER", "same output as naive"], tablefmt="pipe")
    folder.file("results.md").write_text(
        f"{cfg.lines} rendered lines (held-out fonts), beam {cfg.num_beams} for the model, "
        f"{result['threads']} CPU threads\n\n{table}\n")
    folder.finish({"speedup_ours_vs_naive": result["speedup_ours_vs_naive"],
                   **{f"{r['recognizer']}_lines_per_s": r["lines_per_s"] for r in rows}})
    return result
