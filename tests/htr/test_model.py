"""Recogniser building blocks: character tokenizer, line normalisation, model build/save/reload (CPU)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from htr.data import LineImageProcessor, normalize_line, stroke_width
from htr.model import build_model, load_bundle
from htr.tokenizer import build_char_tokenizer
from inkbase.cli import compose
from inkbase.errors import ConfigError

TINY_MODEL = ["model.image_height=32", "model.image_width=128", "model.patch_height=16", "model.patch_width=8",
              "model.encoder.hidden_size=32", "model.encoder.layers=1", "model.encoder.heads=2",
              "model.encoder.mlp_size=64", "model.decoder.hidden_size=32", "model.decoder.layers=1",
              "model.decoder.heads=2", "model.decoder.ffn_size=64", "model.max_length=24"]


def line_image(text: str = "Hello world", invert: bool = False, thickness: int = 2, height: int = 60) -> Image.Image:
    img = np.full((height, 16 * len(text) + 20), 235, np.uint8)
    cv2.putText(img, text, (10, int(height * 0.7)), cv2.FONT_HERSHEY_SIMPLEX, height / 50, 20, thickness)
    return Image.fromarray(255 - img if invert else img)


def test_char_tokenizer_round_trip(tmp_path):
    from transformers import AutoTokenizer

    tok = build_char_tokenizer()
    ids = tok("a b!").input_ids
    assert ids[-1] == tok.eos_token_id and len(ids) == 5
    assert tok.decode(ids, skip_special_tokens=True) == "a b!"
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("Kg = 9.8 m/s").input_ids == tok("Kg = 9.8 m/s").input_ids
    # A character outside the alphabet becomes <unk>, which decoding drops.
    assert again.decode(again("a\u00e9b").input_ids, skip_special_tokens=True) == "ab"
    with pytest.raises(ConfigError):
        build_char_tokenizer("")


def test_normalize_line_polarity_height_and_blank():
    dark_on_light = normalize_line(line_image(), height=32, max_width=512, stroke=0)
    light_on_dark = normalize_line(line_image(invert=True), height=32, max_width=512, stroke=0)
    assert dark_on_light.shape[0] == 32 and dark_on_light.dtype == np.uint8
    assert dark_on_light.shape == light_on_dark.shape
    assert np.abs(dark_on_light.astype(int) - light_on_dark.astype(int)).mean() < 3
    # Ink is high, paper low, and the crop is tight (ink near both vertical margins).
    assert dark_on_light.max() == 255 and np.median(dark_on_light) < 30
    assert normalize_line(Image.new("L", (200, 50), 255), height=32).max() == 0
    wide = normalize_line(line_image("x" * 80), height=32, max_width=256)
    assert wide.shape == (32, 256)


def test_normalize_line_pulls_stroke_width_towards_target():
    thin = normalize_line(line_image(thickness=1, height=120), height=64, stroke=0)
    pulled = normalize_line(line_image(thickness=1, height=120), height=64, stroke=5.0)
    assert abs(stroke_width(pulled) - 5.0) < abs(stroke_width(thin) - 5.0)


def test_line_processor_pixel_values_and_reload(tmp_path):
    proc = LineImageProcessor(height=32, width=256, stroke=3.0)
    pixels = proc([line_image(), line_image("ab")])["pixel_values"]
    assert pixels.shape == (2, 1, 32, 256)
    assert pixels.min() >= -1 and pixels.max() <= 1 and pixels[1, 0, :, -1].eq(-1).all()
    proc.save_pretrained(tmp_path)
    assert LineImageProcessor.is_saved_in(tmp_path)
    assert LineImageProcessor.from_pretrained(tmp_path) == proc
    with pytest.raises(ConfigError):
        LineImageProcessor(height=32, width=16)


def test_vit_char_build_save_reload_round_trip(tmp_path):
    from transformers import AutoTokenizer, VisionEncoderDecoderModel

    torch.manual_seed(0)
    bundle = build_model(compose("train_htr", TINY_MODEL).model)
    assert bundle.model.encoder.pooler is None
    images = [line_image("abc"), line_image("Hello")]
    bundle.model.eval()
    out = bundle.save(tmp_path / "m", half=True)
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"} <= {
        p.name for p in out.iterdir()}
    assert next(bundle.model.parameters()).dtype == torch.float32  # saving in fp16 leaves the model alone
    again = load_bundle(out)
    again.model.eval()
    pixels = bundle.pixel_values(images)
    with torch.no_grad():
        labels = torch.tensor([[5, 6, 2], [7, 2, -100]])
        a = bundle.model(pixel_values=pixels, labels=labels).logits
        b = again.model(pixel_values=again.pixel_values(images), labels=labels).logits
    assert torch.allclose(a, b, atol=2e-2)
    texts = again.transcribe(images, num_beams=2)
    assert len(texts) == 2 and texts == again.transcribe(images, num_beams=2, fast=False)  # fast path == generate
    # The folder also loads with plain transformers classes.
    VisionEncoderDecoderModel.from_pretrained(out)
    assert len(AutoTokenizer.from_pretrained(out)) == len(bundle.tokenizer)


def test_hub_code_path_with_a_local_trocr_checkpoint(tmp_path):
    """model=trocr_small with a folder holding a VisionEncoderDecoder + TrOCRProcessor (as the hub has)."""
    from transformers import (
        TrOCRConfig,
        TrOCRForCausalLM,
        TrOCRProcessor,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
        ViTModel,
    )

    tok = build_char_tokenizer()
    enc = ViTModel(ViTConfig(image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=64))
    dec = TrOCRForCausalLM(TrOCRConfig(vocab_size=len(tok), d_model=32, decoder_layers=1, decoder_attention_heads=2,
                                       decoder_ffn_dim=64, max_position_embeddings=64,
                                       decoder_start_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id))
    model = VisionEncoderDecoderModel(encoder=enc, decoder=dec)
    model.config.decoder_start_token_id = tok.bos_token_id
    model.config.pad_token_id = tok.pad_token_id
    model.save_pretrained(tmp_path / "hub")
    TrOCRProcessor(image_processor=ViTImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok
                   ).save_pretrained(tmp_path / "hub")
    cfg = compose("train_htr", ["model=trocr_small", f"model.name_or_path={tmp_path / 'hub'}", "model.max_length=12"])
    bundle = build_model(cfg.model)
    assert type(bundle.image_processor).__name__.startswith("ViTImageProcessor")
    assert bundle.model.generation_config.max_length == 13
    texts = bundle.transcribe([line_image("hi")], num_beams=2)
    assert len(texts) == 1 and len(texts[0]) <= 12


def test_build_model_rejects_bad_settings(tmp_path):
    with pytest.raises(ConfigError):
        build_model(compose("train_htr", [*TINY_MODEL, "model.patch_width=7"]).model)
    with pytest.raises(ConfigError):
        build_model(compose("train_htr", [*TINY_MODEL, f"model.init_from={tmp_path / 'missing'}"]).model)
    with pytest.raises(ConfigError):
        build_model(compose("train_htr", [*TINY_MODEL, "model.kind=cnn"]).model)
