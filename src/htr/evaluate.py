"""Character and word error rates, and the evaluation of a recogniser on a line manifest.

CER = (substitutions + deletions + insertions) over all lines / number of reference characters over all
lines (a corpus-level rate, as jiwer computes it); WER likewise over words. Both texts are normalised
first (:func:`normalize_text`): Unicode NFKC, typographic quotes and dashes to ASCII, whitespace runs to
one space.

``python scripts/eval_htr.py [model_dir=<dir>] manifest=<jsonl> out_dir=<dir> [recognizer=<name>]``
writes ``predictions.jsonl`` (``image``, ``reference``, ``prediction``, line by line as they are made,
so an interrupted evaluation resumes) and ``metrics.json`` (``cer``, ``wer``, ``n``).
"""

from __future__ import annotations

import sys
import time
import unicodedata
from collections.abc import Sequence

import jiwer
from omegaconf import DictConfig
from tqdm import tqdm

from inkbase.errors import InputError
from inkbase.jsonio import JsonlAppender, read_jsonl
from inkbase.runs import file_digest, start_run

_ASCII = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
                        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
                        "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u00a0": " "})


def normalize_text(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).translate(_ASCII).split())


def error_rates(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float | int]:
    """Corpus-level CER and WER with the edit counts behind them."""
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} predictions")
    refs = [normalize_text(t) for t in references]
    hyps = [normalize_text(t) for t in predictions]
    if not refs or not any(refs):
        raise ValueError("CER is undefined without reference characters")
    chars = jiwer.process_characters(refs, hyps)
    # jiwer's word alignment rejects empty references; they add their predicted words as insertions.
    keep = [i for i, r in enumerate(refs) if r]
    words = jiwer.process_words([refs[i] for i in keep], [hyps[i] for i in keep])
    extra = sum(len(hyps[i].split()) for i in range(len(refs)) if not refs[i])
    word_errors = words.substitutions + words.deletions + words.insertions + extra
    ref_words = sum(len(r.split()) for r in refs)
    char_errors = chars.substitutions + chars.deletions + chars.insertions
    return {"cer": char_errors / sum(len(r) for r in refs), "wer": word_errors / ref_words,
            "char_errors": char_errors, "ref_chars": sum(len(r) for r in refs),
            "word_errors": word_errors, "ref_words": ref_words}


def run(cfg: DictConfig) -> dict:
    """Recognise every line of ``cfg.manifest`` and score it against the manifest's texts."""
    from htr.data import open_image, read_manifest
    from htr.recognize import build_recognizer

    records = read_manifest(cfg.manifest)
    folder = start_run(cfg.out_dir, cfg)
    done = {row["image"]: row for row in read_jsonl(folder.file("predictions.jsonl"))}
    skipped = {row["image"]: row for row in read_jsonl(folder.file("skipped.jsonl"))}
    todo = [r for r in records if str(r.image) not in done and str(r.image) not in skipped]
    recognizer = build_recognizer(cfg.recognizer) if todo else None
    start = time.perf_counter()
    with JsonlAppender(folder.file("predictions.jsonl")) as preds, \
            JsonlAppender(folder.file("skipped.jsonl")) as skips:
        bar = tqdm(total=len(todo), desc=f"recognising ({cfg.recognizer.name})", unit="line")
        for i in range(0, len(todo), cfg.batch_size):
            batch = []
            for rec in todo[i:i + cfg.batch_size]:
                image, reason = open_image(rec.image)
                if image is None:
                    print(f"warning: skipped {rec.image}: {reason}", file=sys.stderr)
                    skips.write({"image": str(rec.image), "reason": reason})
                    skipped[str(rec.image)] = reason
                else:
                    batch.append((rec, image))
            texts = recognizer.recognize([im for _, im in batch]) if batch else []
            rows = [{"image": str(rec.image), "reference": rec.text, "prediction": text}
                    for (rec, _), text in zip(batch, texts, strict=True)]
            preds.write_many(rows)
            done.update((row["image"], row) for row in rows)
            bar.update(len(todo[i:i + cfg.batch_size]))
        bar.close()
    rows = [done[str(r.image)] for r in records if str(r.image) in done]
    if not rows:
        raise InputError(cfg.manifest, "image", "no readable line image")
    rates = error_rates([r["reference"] for r in rows], [r["prediction"] for r in rows])
    metrics = {"cer": rates["cer"], "wer": rates["wer"], "n": len(rows), "n_skipped": len(skipped),
               **{k: v for k, v in rates.items() if k not in ("cer", "wer")},
               "recognizer": cfg.recognizer.name, "manifest": str(cfg.manifest),
               "seconds": round(time.perf_counter() - start, 2)}
    if cfg.recognizer.name == "model":
        model_dir = str(getattr(recognizer, "model_dir", cfg.recognizer.model_dir))
        # Which weights were scored: the digest survives the folder being moved or overwritten later.
        metrics.update(model_dir=model_dir, weights=file_digest(model_dir), num_beams=cfg.recognizer.num_beams)
    folder.finish(metrics)
    print(f"CER {metrics['cer']:.4f}  WER {metrics['wer']:.4f}  n={metrics['n']}  -> {folder.path}")
    return metrics
