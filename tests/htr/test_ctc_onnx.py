"""The CTC recogniser exported to onnxruntime (htr.ctc_onnx): the same outputs as its PyTorch graph on
rendered lines, and the export cached by the SHA-256 of the weights file."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest
import torch

from htr.ctc import CTCRecognizer, batch_ink
from htr.ctc_onnx import cache_path
from htr.model import DEFAULT_MODEL_DIR, build_model, load_bundle
from inkbase.cli import compose


def rendered_lines(n: int) -> tuple[list, list[str]]:
    from htr.synth.fonts import list_fonts
    from htr.synth.lines import AugmentConfig, render_line

    rng = np.random.default_rng(5)
    texts = ["Momentum is conserved in the collision", "the median is 42 and the mean 40.5",
             "Photosynthesis needs light, water and CO2", "F = m * a (Newton's second law)",
             "an enzyme lowers the activation energy", "x = 3 or x = -2"][:n]
    fonts = list_fonts("heldout")
    return [render_line(t, fonts[i % len(fonts)], rng, AugmentConfig()) for i, t in enumerate(texts)], texts


def in_onnxruntime(model: CTCRecognizer, ink: torch.Tensor, widths: torch.Tensor) -> dict:
    with torch.inference_mode():
        out = model(ink, widths)
    assert model._runner is not None  # onnxruntime really ran
    return out


def both_ways(model: CTCRecognizer, ink: torch.Tensor, widths: torch.Tensor) -> tuple[dict, dict]:
    ort = in_onnxruntime(model, ink, widths)
    model.onnxruntime = False
    with torch.inference_mode():
        plain = model(ink, widths)
    model.onnxruntime = True
    return ort, plain


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "config.json").is_file(), reason="no shipped default model")
def test_shipped_model_reads_the_same_in_onnxruntime_and_pytorch():
    bundle = load_bundle(DEFAULT_MODEL_DIR)
    model = bundle.model
    images, _ = rendered_lines(6)
    ink, widths = batch_ink([bundle.image_processor.line(im) for im in images], model.reduction)
    ort, plain = both_ways(model, ink, widths)
    weights_sha = hashlib.sha256((DEFAULT_MODEL_DIR / "model.safetensors").read_bytes()).hexdigest()
    assert model._runner.path == cache_path(weights_sha) and model._runner.path.is_file()
    assert torch.equal(ort["lengths"], plain["lengths"])
    torch.testing.assert_close(ort["log_probs"], plain["log_probs"], atol=1e-3, rtol=1e-4)
    for beams in (1, 5):
        texts = bundle.decode(model.decode_outputs(ort, beams))
        assert texts == bundle.decode(model.decode_outputs(plain, beams))
        assert all(texts)  # the lines were read, not decoded to nothing on both sides


def test_export_is_cached_by_the_weights_sha256(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("INKGRADE_CACHE_DIR", str(tmp_path / "cache"))
    bundle = build_model(compose("train_htr", ["model=ppocr_ctc"]).model)
    bundle.save(tmp_path / "a", half=True)
    images, _ = rendered_lines(2)
    ink, widths = batch_ink([bundle.image_processor.line(im) for im in images], 8)

    model = CTCRecognizer.load(tmp_path / "a")
    ort, plain = both_ways(model, ink, widths)
    plain_a = plain["log_probs"]
    torch.testing.assert_close(ort["log_probs"], plain_a, atol=1e-3, rtol=1e-4)
    first = cache_path(hashlib.sha256((tmp_path / "a" / "model.safetensors").read_bytes()).hexdigest())
    assert model._runner.path == first
    written = first.stat().st_mtime_ns
    again = CTCRecognizer.load(tmp_path / "a")
    assert torch.equal(in_onnxruntime(again, ink, widths)["log_probs"], ort["log_probs"])
    assert again._runner.path == first and first.stat().st_mtime_ns == written  # read, not exported again

    # Training changes the weights: the model is exported in memory, and a new weights file gets its own entry.
    again.train()
    with torch.no_grad():
        again.classifier.bias.add_(0.5)
    again.eval()
    ort, plain = both_ways(again, ink, widths)
    assert again._runner.path is None
    torch.testing.assert_close(ort["log_probs"], plain["log_probs"], atol=1e-3, rtol=1e-4)
    bundle.model = again
    bundle.save(tmp_path / "b", half=True)
    in_onnxruntime(CTCRecognizer.load(tmp_path / "b"), ink, widths)
    assert len(list((tmp_path / "cache" / "htr_onnx").glob("*.onnx"))) == 2

    # A damaged cache file is reported and bypassed; the outputs stay right.
    first.write_bytes(b"not an onnx model")
    damaged = CTCRecognizer.load(tmp_path / "a")
    with caplog.at_level(logging.WARNING, logger="htr.ctc_onnx"):
        out = in_onnxruntime(damaged, ink, widths)
    assert damaged._runner.path is None and str(first) in caplog.text
    torch.testing.assert_close(out["log_probs"], plain_a, atol=1e-3, rtol=1e-4)
