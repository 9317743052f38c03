"""End-to-end benchmark: a dataset's typed answers written out as handwriting, then read back.

Each answer is written into an answer box by a hand the recogniser never trained on (held-out fonts),
with scan artefacts; the box then goes through the same chain as a scanned exam (preprocess ->
segment lines -> recognise). ``transcriptions.jsonl`` keeps, per answer, the written text and the
recognised text; ``scripts/benchmark_grading.py benchmark.texts=<that file>`` grades the recognised
texts under the dataset's usual protocols, and :func:`compare` sets those results beside the typed ones.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import pandas as pd
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from grading.benchmarks.datasets import load_benchmark
from inkbase.errors import InputError
from inkbase.jsonio import JsonlAppender, read_jsonl, write_json
from inkbase.runs import hydra_output_dir, start_run

log = logging.getLogger(__name__)


def handwrite(text: str, font, rng: np.random.Generator, augment, width: int, line_pitch: int) -> np.ndarray:
    """``text`` written into a box ``width`` px wide (as tall as it needs), on scanned-looking paper."""
    from htr.synth.lines import degrade, ink_on_paper, paper
    from htr.synth.pages import Region, wrap_handwriting, write_in_box, writer_style
    from htr.synth.text import to_charset

    style = writer_style(font, rng, line_pitch, augment)
    text = to_charset(text.upper() if font.uppercase_only else text)
    padding = 12
    n_lines = max(1, len(wrap_handwriting(text, style, (width - 2 * padding) * 0.97)))
    region = Region(x=0, y=0, width=width, height=(n_lines + 1) * line_pitch + 2 * padding, label="answer")
    mask = np.zeros((region.height, region.width), np.uint8)
    if text.strip():
        write_in_box(text, region, style, rng, line_pitch, padding, mask)
    background = paper(mask.shape, rng, augment)
    return degrade(ink_on_paper(background, mask, style.ink), rng, augment)


def read_box(image: np.ndarray, pre_cfg, seg_cfg) -> list[Image.Image]:
    """Preprocess the box and cut it into line images, as the exam pipeline does."""
    from htr.preprocess import preprocess
    from htr.segment import segment_lines

    image, _ = preprocess(image, pre_cfg)
    return [Image.fromarray(box.crop(image)) for box in segment_lines(image, seg_cfg)]


def run(cfg: DictConfig) -> dict[str, Any]:
    """``scripts/handwrite_answers.py``: write, read back and persist every answer of a benchmark."""
    from htr.preprocess import PreprocessConfig
    from htr.recognize import build_recognizer
    from htr.segment import SegmenterConfig
    from htr.synth.fonts import list_fonts
    from htr.synth.lines import AugmentConfig
    from htr.synth.text import to_charset

    bench = load_benchmark(cfg.benchmark, cfg.data_dir)
    answers = bench.answers if cfg.limit is None else bench.answers.iloc[: int(cfg.limit)]
    folder = start_run(hydra_output_dir(cfg.out_dir), cfg)
    fonts = [f for f in list_fonts(cfg.fonts) if not f.uppercase_only]
    if not fonts:
        raise InputError("fonts", str(cfg.fonts), "no mixed-case handwriting font is installed")
    augment = AugmentConfig.from_dict(cfg.augment)
    pre_cfg = PreprocessConfig.from_dict(cfg.preprocess)
    seg_cfg = SegmenterConfig.from_dict(cfg.segmenter)
    recognizer = build_recognizer(cfg.recognizer)
    out_path = folder.file("transcriptions.jsonl")
    done = {r["answer_id"] for r in read_jsonl(out_path)}
    examples = folder.path / "examples"
    examples.mkdir(exist_ok=True)
    pending: list[tuple[dict, list[Image.Image]]] = []
    t_read = 0.0

    def flush(out: JsonlAppender) -> None:
        nonlocal t_read
        images = [img for _, lines in pending for img in lines]
        t0 = time.perf_counter()
        texts = iter(recognizer.recognize(images) if images else [])
        t_read += time.perf_counter() - t0
        out.write_many([{**rec, "n_lines": len(lines), "text": " ".join(t for t in (next(texts) for _ in lines) if t)}
                        for rec, lines in pending])
        pending.clear()

    with JsonlAppender(out_path) as out:
        for index, row in enumerate(tqdm(answers.itertuples(), total=len(answers), desc="handwrite+read",
                                         unit="answer")):
            if row.answer_id in done:
                continue
            rng = np.random.default_rng([int(cfg.seed), index])
            font = fonts[index % len(fonts)]
            image = handwrite(row.text, font, rng, augment, int(cfg.box_width), int(cfg.line_pitch))
            if index < int(cfg.n_examples):
                Image.fromarray(image).save(examples / f"{index:04d}_{font.name}.png")
            written = to_charset(row.text.upper() if font.uppercase_only else row.text)
            pending.append(({"answer_id": row.answer_id, "question_id": row.question_id, "font": font.name,
                             "written": written}, read_box(image, pre_cfg, seg_cfg)))
            if sum(len(lines) for _, lines in pending) >= int(cfg.batch_lines):
                flush(out)
        if pending:
            flush(out)
    return summarise(folder, read_jsonl(out_path), recognizer.name, t_read)


def summarise(folder, rows: list[dict], recognizer: str, seconds_reading: float) -> dict[str, Any]:
    frame = pd.DataFrame(rows)
    nonempty = frame[frame["written"].str.strip() != ""]
    per_font = {font: round(float(jiwer.cer(list(g["written"]), list(g["text"]))), 4)
                for font, g in nonempty.groupby("font")}
    metrics = {
        "recognizer": recognizer,
        "n_answers": int(len(frame)),
        "n_lines": int(frame["n_lines"].sum()),
        "cer": round(float(jiwer.cer(list(nonempty["written"]), list(nonempty["text"]))), 4),
        "wer": round(float(jiwer.wer(list(nonempty["written"]), list(nonempty["text"]))), 4),
        "cer_by_font": per_font,
        "seconds_recognising_this_start": round(seconds_reading, 1),
    }
    folder.finish(metrics)
    return metrics


def compare(typed: str | Path, handwritten: str | Path) -> pd.DataFrame:
    """Typed vs handwritten grading results (two ``results.json`` of ``benchmark_grading``), row by row."""
    import json

    def load(path: str | Path) -> dict:
        path = Path(path)
        path = path / "results.json" if path.is_dir() else path
        if not path.is_file():
            raise InputError(path, "(file)", "not found")
        return json.loads(path.read_text())["results"]

    t, h = load(typed), load(handwritten)
    rows = []
    for dataset, by_method in h.items():
        for method, by_protocol in by_method.items():
            for protocol, hm in by_protocol.items():
                tm = t.get(dataset, {}).get(method, {}).get(protocol)
                if tm is None:
                    continue
                row = {"dataset": dataset, "method": method, "protocol": protocol}
                for key in ("pearson_r", "rmse", "mae", "macro_f1", "qwk_mean"):
                    if key in hm and key in tm:
                        row[f"{key} typed"] = tm[key]
                        row[f"{key} handwritten"] = hm[key]
                        row[f"{key} change"] = hm[key] - tm[key]
                rows.append(row)
    if not rows:
        raise InputError(handwritten, "results", "no (dataset, method, protocol) in common with the typed results")
    return pd.DataFrame(rows)


def compare_run(cfg: DictConfig) -> dict[str, Any]:
    """``scripts/compare_benchmarks.py``: the comparison table in a run folder."""
    table = compare(cfg.typed, cfg.handwritten)
    folder = start_run(hydra_output_dir(cfg.out_dir), cfg)
    table.to_csv(folder.file("comparison.csv"), index=False)
    folder.file("comparison.md").write_text(table.to_markdown(index=False, floatfmt=".3f") + "\n")
    write_json(folder.file("comparison.json"), table.to_dict(orient="records"))
    metrics = {"rows": int(len(table))}
    if "pearson_r change" in table:
        best = table.loc[table["pearson_r handwritten"].idxmax()]
        metrics["best_handwritten"] = {k: best[k] for k in ("method", "protocol", "pearson_r typed",
                                                            "pearson_r handwritten", "pearson_r change")}
    folder.finish(metrics)
    return metrics
