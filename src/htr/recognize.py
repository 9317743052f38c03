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

    def without_language_model(self) -> Recognizer:
        """This recogniser reading without a language model (for names, IDs and codes, which no word list
        predicts); recognisers that have none return themselves."""
        return self


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
                 device: str = "auto", fast: bool = True, lm: str | None = None, lm_weight: float = 0.3,
                 lm_bonus: float = 2.5, max_pad_ratio: float = 1.0, workers: int = 1):
        import torch

        from htr.model import default_model_dir, load_bundle

        self.model_dir = str(model_dir) if model_dir else str(default_model_dir())
        self.num_beams = num_beams
        self.batch_size = batch_size
        self.max_pad_ratio = max_pad_ratio
        self.workers = max(1, int(workers))
        self.fast = fast
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.bundle = load_bundle(self.model_dir)
        self.bundle.model.to(self.device).eval()
        self.lm = self.bundle.lm_scorer(lm, lm_weight, lm_bonus)

    def recognize(self, images: Sequence[Image.Image]) -> list[str]:
        out: list[str] = [""] * len(images)

        def read(chunk: list[int]) -> tuple[list[int], list[str]]:
            return chunk, self.bundle.transcribe([images[i] for i in chunk], num_beams=self.num_beams,
                                                 fast=self.fast, lm=self.lm)

        batches = self.batches(images)
        if self.workers > 1 and len(batches) > 1:
            from concurrent.futures import ThreadPoolExecutor

            # onnxruntime and the image work release the GIL: one batch's network runs while another's
            # beam search (Python) does. The first batch runs alone so that sessions and caches exist.
            done = [read(batches[0])]
            with ThreadPoolExecutor(self.workers) as pool:
                done += list(pool.map(read, batches[1:]))
        else:
            done = [read(chunk) for chunk in batches]
        for chunk, texts in done:
            for i, text in zip(chunk, texts, strict=True):
                out[i] = text
        return out

    def without_language_model(self) -> ModelRecognizer:
        import copy

        plain = copy.copy(self)  # shares the loaded model
        plain.lm = None
        return plain

    def batches(self, images: Sequence[Image.Image]) -> list[list[int]]:
        """Indices of ``images`` in batches of at most ``batch_size``. A CTC model's batches hold lines
        of similar length (the widest at most ``max_pad_ratio`` times the narrowest, once scaled to the
        model's height): PP-OCR's attention reads the padding too, and padded lines read worse."""
        if not self.bundle.is_ctc:
            return [list(range(i, min(i + self.batch_size, len(images))))
                    for i in range(0, len(images), self.batch_size)]
        ratio = {i: im.width / max(1, im.height) for i, im in enumerate(images)}
        out: list[list[int]] = []
        for i in sorted(ratio, key=ratio.get):
            if out and len(out[-1]) < self.batch_size and ratio[i] <= self.max_pad_ratio * ratio[out[-1][0]]:
                out[-1].append(i)
            else:
                out.append([i])
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
