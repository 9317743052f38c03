"""data_prep/synthetic: manifests, the fixed train/val split, resumption after an interruption."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from htr.synth import dataset
from htr.synth.fonts import list_fonts
from htr.synth.text import line_texts, text_split
from inkbase.cli import compose
from inkbase.errors import ConfigError


def config(tmp_path, *extra):
    return compose("prepare_synthetic", [f"out_dir={tmp_path / 'run'}", "n_train=24", "n_val=6", "num_workers=1",
                                         "paragraphs.n_train=2", "paragraphs.n_val=1", *extra])


def rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_writes_manifests_with_relative_images_and_never_heldout_fonts(tmp_path):
    metrics = dataset.run(config(tmp_path))
    run = tmp_path / "run"
    train, val = rows(run / "train.jsonl"), rows(run / "val.jsonl")
    assert (len(train), len(val)) == (26, 7) == (metrics["train_images"], metrics["val_images"])
    heldout = {f.name for f in list_fonts("heldout")}
    for row in train + val:
        assert row["font"] not in heldout
        img = Image.open(run / row["image"])
        assert img.mode == "L" and img.width > 10 and row["text"].strip()
    para = [r for r in train if r["image"].startswith("images/train/para_")]
    assert len(para) == 2 and all(len(r["lines"]) == r["text"].count("\n") + 1 for r in para)
    assert set(r["text"] for r in train).isdisjoint(r["text"] for r in val)


def test_an_interrupted_run_resumes_to_the_same_output(tmp_path):
    dataset.run(config(tmp_path))
    run = tmp_path / "run"
    full = rows(run / "train.jsonl")
    # Simulate a crash: the last records (and the end marker) never got written.
    (run / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in full[:10]), encoding="utf-8")
    (run / "val.jsonl").unlink()
    (run / "metrics.json").unlink()
    metrics = dataset.run(config(tmp_path))
    assert rows(run / "train.jsonl") == full and metrics["rendered_now"] == len(full) - 10 + 7


def test_heldout_fonts_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="fonts"):
        dataset.run(config(tmp_path, "fonts=heldout"))


def test_sentence_split_is_fixed_and_disjoint():
    assert text_split("The mass cancels out.", 0.05) == text_split("The mass cancels out.", 0.05)
    train = line_texts(200, np.random.default_rng(0), sources=("sample_exam",), split="train", val_fraction=0.3)
    val = line_texts(200, np.random.default_rng(0), sources=("sample_exam",), split="val", val_fraction=0.3)
    a, b = {next(train) for _ in range(300)}, {next(val) for _ in range(300)}
    assert a and b and a.isdisjoint(b)


def test_python_docs_source_gives_prose_lines_in_the_charset():
    from htr.synth.text import CHARSET, python_docs_sentences

    sentences = python_docs_sentences()
    assert len(sentences) > 500
    assert all(30 <= len(s) <= 160 and set(s) <= set(CHARSET) for s in sentences)
    assert not any("::" in s or "`" in s or "=" in s for s in sentences)  # code and grammar lines left out
    lines = line_texts(40, np.random.default_rng(0), {"python_docs": 1.0}, split="train")
    first = [next(lines) for _ in range(20)]
    assert all(0 < len(t) <= 40 for t in first)
    joined = " ".join(first)
    assert any(word in joined.split() for word in ("the", "a", "is", "of"))
