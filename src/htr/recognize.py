"""Line recognisers behind one interface: line images in, one string per line out.

``build_recognizer(cfg)`` picks one by ``cfg.name`` (configs/recognizer/). RapidOCR (PP-OCR, printed
text) and Tesseract are the off-the-shelf baselines that ship offline; ``model`` runs a
saved model folder of :mod:`htr.model` (CTC or TrOCR-style), by default the one shipped in
``src/htr/weights/default``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from inkbase.errors import ConfigError


class Recognizer(ABC):
    name: str = "recognizer"

    @abstractmethod
    def recognize(self, images: Sequence[Image.Image]) -> list[str]:
        """Transcribe each line image; an unreadable line gives an empty string."""


class RapidOCRRecognizer(Recognizer):
    """PP-OCR recognition model (ONNX, from the ``rapidocr`` package), text detection switched off."""

    name = "rapidocr"

    def __init__(self, use_det: bool = False, threads: int | None = None):
        from rapidocr import RapidOCR

        params: dict = {"Global.log_level": "error"}
        if threads:  # onnxruntime intra-op threads (default: one per physical core)
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = int(threads)
        self.engine = RapidOCR(params=params)
        self.use_det = use_det

    def recognize(self, images: Sequence[Image.Image]) -> list[str]:
        out = []
        for img in images:
            arr = np.asarray(img.convert("RGB"))
            res = self.engine(arr, use_det=self.use_det, use_cls=False, use_rec=True)
            txts = getattr(res, "txts", None) or ()
            out.append(" ".join(t for t in txts if t).strip())
        return out


class TesseractRecognizer(Recognizer):
    """Tesseract 5 in single-line mode (``--psm 7``); needs the ``tesseract`` binary on PATH."""

    name = "tesseract"

    def __init__(self, lang: str = "eng", psm: int = 7):
        if shutil.which("tesseract") is None:
            raise ConfigError("recognizer.name", "tesseract is not installed (Debian: apt-get install tesseract-ocr "
                              "tesseract-ocr-eng)")
        self.lang = lang
        self.psm = psm

    def recognize(self, images: Sequence[Image.Image]) -> list[str]:
        out = []
        with tempfile.TemporaryDirectory() as tmp:
            for i, img in enumerate(images):
                path = Path(tmp) / f"{i}.png"
                img.convert("L").save(path)
                res = subprocess.run(["tesseract", str(path), "-", "--psm", str(self.psm), "-l", self.lang],
                                     capture_output=True, text=True, timeout=60)
                out.append(" ".join(res.stdout.split()))
        return out


class ModelRecognizer(Recognizer):
    """A saved recogniser folder: the project's CTC models (beam search over CTC outputs) or a
    VisionEncoderDecoder (ours or a TrOCR checkpoint; beam search decoding)."""

    name = "model"

    def __init__(self, model_dir: str | None = None, num_beams: int = 5, batch_size: int = 16,
                 device: str = "auto", fast: bool = True):
        import torch

        from htr.model import default_model_dir, load_bundle

        self.model_dir = str(model_dir) if model_dir else str(default_model_dir())
        self.num_beams = num_beams
        self.batch_size = batch_size
        self.fast = fast
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.bundle = load_bundle(self.model_dir)
        self.bundle.model.to(self.device).eval()

    def recognize(self, images: Sequence[Image.Image]) -> list[str]:
        order = list(range(len(images)))
        if self.bundle.is_ctc:  # batch lines of similar length: less padding to read through
            order.sort(key=lambda i: images[i].width / max(1, images[i].height))
        out: list[str] = [""] * len(images)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            texts = self.bundle.transcribe([images[i] for i in chunk], num_beams=self.num_beams, fast=self.fast)
            for i, text in zip(chunk, texts, strict=True):
                out[i] = text
        return out


RECOGNIZERS: dict[str, type[Recognizer]] = {
    "rapidocr": RapidOCRRecognizer, "tesseract": TesseractRecognizer, "model": ModelRecognizer}


def build_recognizer(cfg) -> Recognizer:
    """The recogniser a ``recognizer`` config names; its other keys are the constructor's arguments."""
    from omegaconf import OmegaConf

    from inkbase.errors import ConfigError

    args = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    name = args.pop("name")
    if name not in RECOGNIZERS:
        raise ConfigError("recognizer.name", f"{name!r} is not one of {', '.join(RECOGNIZERS)}")
    return RECOGNIZERS[name](**args)
