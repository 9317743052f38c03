"""CPU speed of line recognisers, side by side in one run on the same lines.

``python scripts/benchmark_recognizers.py [manifest=<lines.jsonl>] [rounds=5] [threads=2]``. The lines are
a manifest's (e.g. the real validation lines of ``data_prep/handwriting_lines/prepare.py``; unreadable
images are named and skipped) or, without one, ``lines`` rendered lines (``htr.synth``, held-out fonts,
fixed seed). Every recogniser reads all of them, as the pipeline calls it:

* ``ours``: :class:`htr.recognize.ModelRecognizer` as shipped (``recognizer=model``): lines sorted by
  length and batched (``batch_size``, ``max_pad_ratio``), the model in onnxruntime (:mod:`htr.ctc_onnx`),
  beam search with the language model of :mod:`htr.lm`;
* ``ours_no_lm``: the same without the language model (``recognizer.lm=none``);
* ``ours_torch``: the same weights, batching and decoding as ``ours``, the model in PyTorch
  (``recognizer.fast=false``, the path used for training and GPUs);
* ``rapidocr`` (``recognizer=rapidocr``: the same PP-OCR architecture with its own weights and
  preprocessing in onnxruntime, greedy decoding) and, with ``tesseract=true``, Tesseract.

After one untimed warm-up pass each, ``rounds`` rounds time one pass of every recogniser, the order
rotating from round to round so that a busy moment of a shared machine does not always hit the same one.
Reported per recogniser: the median (and range) over rounds of lines/s (wall clock) and of CPU ms per
line (this process's CPU time: less sensitive to other jobs; onnxruntime's spinning threads count in it),
CER against the texts, and the share of lines whose text is identical to ``ours_torch``'s. The load
average is recorded before and after. Writes ``rows.jsonl`` (one row per recogniser and round, as timed),
``results.json`` and ``results.md``; ``metrics.json`` holds the medians and ``ours_vs_rapidocr`` (the
ratio of median lines/s; the goal is >= 0.8).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from tabulate import tabulate

from htr.evaluate import error_rates
from inkbase.errors import ConfigError, check_range
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


def manifest_lines(path: str, skipped_log) -> tuple[list, list[str]]:
    from htr.data import open_image, read_manifest, usable_records

    records, _ = usable_records(read_manifest(path), skipped_log)
    if not records:
        raise ConfigError("manifest", f"{path} has no readable line images")
    return [open_image(r.image)[0] for r in records], [r.text for r in records]


def _one_pass(recognize, images) -> tuple[list[str], float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = recognize(images)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run(cfg: DictConfig) -> dict[str, Any]:
    from omegaconf import OmegaConf

    from htr.recognize import ModelRecognizer, RapidOCRRecognizer, TesseractRecognizer
    from inkbase.runs import CONFIG_DIR

    rec = OmegaConf.load(CONFIG_DIR / "recognizer" / "model.yaml")  # the shipped settings
    cfg.num_beams = cfg.num_beams or rec.num_beams
    cfg.batch_size = cfg.batch_size or rec.batch_size
    check_range("lines", cfg.lines, 1, 100_000)
    check_range("batch_size", cfg.batch_size, 1, 4096)
    check_range("rounds", cfg.rounds, 1, 100)
    folder = start_run(cfg.out_dir, cfg)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    load_before = _load()
    if cfg.manifest:
        images, texts = manifest_lines(cfg.manifest, folder.file("skipped.jsonl"))
    else:
        images, texts = render_lines(cfg.lines, cfg.seed, cfg.max_chars)
    shipped = {"num_beams": cfg.num_beams, "batch_size": cfg.batch_size, "device": "cpu", "lm": rec.lm,
               "lm_weight": rec.lm_weight, "lm_bonus": rec.lm_bonus, "max_pad_ratio": rec.max_pad_ratio,
               "workers": rec.workers}
    ours = ModelRecognizer(cfg.model_dir, **shipped)
    plain = ModelRecognizer(cfg.model_dir, **shipped, fast=False)
    batches = (f"batches of <= {cfg.batch_size} (length ratio <= {rec.max_pad_ratio}, {rec.workers} at once), "
               f"beam {cfg.num_beams}")
    setups = {
        "ours": (f"shipped: onnxruntime, {batches}, LM {rec.lm}", ours.recognize),
        "ours_no_lm": (f"onnxruntime, {batches}, no LM", ours.without_language_model().recognize),
        "ours_torch": (f"PyTorch graph (fast=false), {batches}, LM {rec.lm}", plain.recognize),
        "rapidocr": ("RapidOCR: PP-OCR in onnxruntime, its own weights and preprocessing, greedy",
                     RapidOCRRecognizer(threads=cfg.threads or None).recognize),
    }
    if cfg.tesseract:
        setups["tesseract"] = ("Tesseract 5, --psm 7", TesseractRecognizer().recognize)
    names = list(setups)
    outputs = {name: _one_pass(setups[name][1], images)[0] for name in names}  # warm-up: sessions, caches
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    with JsonlAppender(folder.file("rows.jsonl")) as out:
        for r in range(cfg.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                again, wall, cpu = _one_pass(setups[name][1], images)
                if again != outputs[name]:
                    raise RuntimeError(f"{name} gave different outputs on a repeated pass")
                timings[name].append((wall, cpu))
                out.write({"round": r, "recognizer": name, "wall_s": round(wall, 4), "cpu_s": round(cpu, 4),
                           "load_1min": _load()[0]})
    load_after = _load()
    rows = []
    for name in names:
        rates = [len(images) / wall for wall, _ in timings[name]]
        cpu_ms = [1000 * cpu / len(images) for _, cpu in timings[name]]
        same = np.mean([a == b for a, b in zip(outputs[name], outputs["ours_torch"], strict=True)])
        rows.append({"recognizer": name, "setting": setups[name][0],
                     "lines_per_s": round(statistics.median(rates), 2),
                     "lines_per_s_range": [round(min(rates), 2), round(max(rates), 2)],
                     "cpu_ms_per_line": round(statistics.median(cpu_ms), 2),
                     "cer": round(error_rates(texts, outputs[name])["cer"], 4),
                     "same_as_torch": round(float(same), 4)})
    by_name = {r["recognizer"]: r for r in rows}
    ratio = round(by_name["ours"]["lines_per_s"] / by_name["rapidocr"]["lines_per_s"], 3)
    cpu_ratio = round(by_name["rapidocr"]["cpu_ms_per_line"] / by_name["ours"]["cpu_ms_per_line"], 3)
    import onnxruntime

    result = {"rows": rows, "lines": len(images), "source": cfg.manifest or f"{cfg.lines} rendered lines",
              "rounds": cfg.rounds, "num_beams": cfg.num_beams, "batch_size": cfg.batch_size, "lm": rec.lm,
              "max_pad_ratio": rec.max_pad_ratio,
              "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_before": load_before,
              "load_after": load_after, "model_dir": ours.model_dir, "onnx_file": str(getattr(ours.bundle.model, "onnx_file", None)),
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "onnxruntime": onnxruntime.__version__},
              "ours_vs_rapidocr": ratio, "ours_vs_rapidocr_cpu": cpu_ratio}
    write_json(folder.file("results.json"), result)
    table = tabulate([[r["recognizer"], r["setting"], r["lines_per_s"], "{}-{}".format(*r["lines_per_s_range"]),
                       r["cpu_ms_per_line"], r["cer"], r["same_as_torch"]] for r in rows],
                     headers=["recogniser", "setting", "lines/s (median)", "range", "CPU ms/line", "CER",
                              "same text as ours_torch"], tablefmt="pipe")
    folder.file("results.md").write_text(
        f"{result['lines']} lines ({result['source']}), {cfg.rounds} interleaved rounds, {result['threads']} threads "
        f"on {result['cpus']} CPUs, load average {load_before} before, {load_after} after\n\n{table}\n\n"
        f"ours / rapidocr: {ratio} (median lines/s), {cpu_ratio} (CPU time per line)\n")
    folder.finish({"ours_vs_rapidocr": ratio, "ours_vs_rapidocr_cpu": cpu_ratio,
                   "load_before": load_before, "load_after": load_after,
                   **{f"{r['recognizer']}_lines_per_s": r["lines_per_s"] for r in rows},
                   **{f"{r['recognizer']}_cpu_ms_per_line": r["cpu_ms_per_line"] for r in rows},
                   **{f"{r['recognizer']}_cer": r["cer"] for r in rows}})
    return result
