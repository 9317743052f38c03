"""build_recognizer and the TrOCR-style recogniser, including the shipped default model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from htr.model import DEFAULT_MODEL_DIR, build_model
from htr.recognize import ModelRecognizer, build_recognizer
from inkbase.cli import compose
from inkbase.errors import ConfigError

TINY_MODEL = ["model.image_height=32", "model.image_width=128", "model.patch_height=16", "model.patch_width=8",
              "model.encoder.hidden_size=32", "model.encoder.layers=1", "model.encoder.heads=2",
              "model.encoder.mlp_size=64", "model.decoder.hidden_size=32", "model.decoder.layers=1",
              "model.decoder.heads=2", "model.decoder.ffn_size=64", "model.max_length=12"]


def test_build_recognizer_by_name(tmp_path):
    torch.manual_seed(0)
    build_model(compose("train_htr", TINY_MODEL).model).save(tmp_path / "m")
    cfg = compose("eval_htr", ["manifest=m.jsonl", f"model_dir={tmp_path / 'm'}", "recognizer.num_beams=2",
                               "recognizer.batch_size=2", "recognizer.device=cpu"])
    rec = build_recognizer(cfg.recognizer)
    assert isinstance(rec, ModelRecognizer) and rec.model_dir == str(tmp_path / "m")
    texts = rec.recognize([Image.new("L", (80, 20), 255)] * 3)
    # Batched recognition gives what the model's own generate gives for one line, for each copy.
    assert texts == rec.bundle.transcribe([Image.new("L", (80, 20), 255)], num_beams=2, fast=False) * 3
    with pytest.raises(ConfigError):
        build_recognizer({"name": "nope"})


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "config.json").is_file(), reason="no shipped default model")
def test_shipped_default_model_loads_offline_and_transcribes():
    from safetensors import safe_open

    weights = DEFAULT_MODEL_DIR / "model.safetensors"
    with safe_open(str(weights), "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.float16}
    total = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir())
    assert total < 25e6
    assert (DEFAULT_MODEL_DIR / "MODEL_CARD.md").is_file()
    rec = build_recognizer(compose("eval_htr", ["manifest=m.jsonl", "recognizer.device=cpu",
                                                "recognizer.num_beams=1"]).recognizer)
    assert rec.model_dir == str(DEFAULT_MODEL_DIR)
    # It must read: lines written in the held-out hands (never seen in training) come back nearly exact.
    from htr.evaluate import error_rates
    from htr.synth.fonts import list_fonts
    from htr.synth.lines import AugmentConfig, render_line

    rng = np.random.default_rng(3)
    texts = ["Momentum is conserved in the collision", "the median is 42 and the mean 40.5"]
    images = [render_line(t, font, rng, AugmentConfig()) for t, font in zip(texts, list_fonts("heldout"), strict=False)]
    assert error_rates(texts, rec.recognize(images))["cer"] < 0.15


def test_fast_and_plain_decoding_give_the_same_text(tmp_path):
    torch.manual_seed(0)
    build_model(compose("train_htr", TINY_MODEL).model).save(tmp_path / "m")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (24, w), dtype=np.uint8)) for w in (60, 90, 140)]
    fast = ModelRecognizer(str(tmp_path / "m"), num_beams=3, batch_size=2, device="cpu", fast=True)
    plain = ModelRecognizer(str(tmp_path / "m"), num_beams=3, batch_size=2, device="cpu", fast=False)
    assert fast.recognize(images) == plain.recognize(images)


def test_a_missing_tesseract_is_one_config_error(monkeypatch):
    from htr import recognize

    monkeypatch.setattr(recognize.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="recognizer.name.*tesseract is not installed"):
        recognize.TesseractRecognizer()


def test_batches_read_in_threads_give_the_same_text_in_order():
    from htr.synth.fonts import list_fonts
    from htr.synth.lines import AugmentConfig, render_line

    rng = np.random.default_rng(5)
    texts = ["the mass cancels", "energy is conserved in every collision", "42", "the array must be sorted first",
             "O(log n) steps", "interest rates rise"]
    fonts = list_fonts("heldout")
    images = [render_line(t, fonts[i % len(fonts)], rng, AugmentConfig()) for i, t in enumerate(texts)]
    one = ModelRecognizer(None, num_beams=3, batch_size=4, device="cpu", lm="english", workers=1)
    two = ModelRecognizer(None, num_beams=3, batch_size=4, device="cpu", lm="english", workers=2)
    assert len(two.batches(images)) == len(texts)  # the shipped CTC model: lines of other lengths batch alone
    read = one.recognize(images)
    assert sum(a == b for a, b in zip(read, texts, strict=True)) >= 4  # it reads (held-out hands)
    assert two.recognize(images) == read
    assert [two.recognize([im])[0] for im in images] == read  # a line's text does not depend on its neighbours
