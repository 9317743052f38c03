"""Line recognisers trained with CTC: a feature extractor that turns a line image into one feature column
per few pixels of width, and a linear layer giving per-column character probabilities (Graves et al.,
2006). Two feature extractors (``model.kind``):

* ``ppocr_ctc``: the PP-OCR recogniser that ships in the ``rapidocr`` package (PP-OCRv6 small: a
  convolutional backbone and an SVTR neck, Apache-2.0), run in PyTorch by :mod:`htr.onnx_graph` and
  fine-tuned. Its 18,710-way classifier is cut down to the project's character set: each of our
  characters starts from PP-OCR's row for the same character. Input: 48 px high, dark ink on white,
  one column per 8 px. This is the architecture of the project's shipped default model.
* ``crnn_ctc``: a small convolutional-recurrent network from random weights (the CRNN layout of Shi et
  al., 2017: 3x3 convolutions, then a bidirectional LSTM), one column per 4 px.

A saved model folder holds ``config.json`` (``model_type: inkgrade_ctc``), ``model.safetensors`` (our
weights; for ``ppocr_ctc`` the graph comes from the named ONNX file, checked by its SHA-256), the line
processor and the char tokenizer. The CTC blank is the tokenizer's ``<pad>`` id, never a label.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inkbase.errors import ConfigError, InputError

MODEL_TYPE = "inkgrade_ctc"
WEIGHTS_FILE = "model.safetensors"
PPOCR_FILE = "PP-OCRv6_rec_small.onnx"
PPOCR_SHA256 = "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884"
PPOCR_FEATURES = "p2o.pd_op.transpose.8.0"  # (N, T, 120) columns before the classifier
PPOCR_CLASSIFIER = ("linear_8.w_0", "linear_8.b_0")


# --------------------------------------------------------------------------------------- backbones
def _pools(height: int, n_blocks: int) -> list[tuple[int, int]]:
    """Per-block max-pool sizes: two 2x2 pools (width / 4), then height-only pools down to 1 row."""
    pools, h = [], height
    for i in range(n_blocks):
        ph = 2 if h > 1 else 1
        pools.append((ph, 2 if i < 2 else 1))
        h //= ph
    if h != 1:
        raise ConfigError("model.image_height", f"{height} px do not pool down to one row in {n_blocks} conv "
                          f"blocks (at most {2 ** n_blocks})")
    return pools


class CRNNBackbone(nn.Module):
    """3x3 conv blocks (BatchNorm, ReLU, max-pool) down to one row, then a bidirectional LSTM."""

    reduction = 4

    def __init__(self, image_height: int, channels: Sequence[int], rnn_hidden: int, rnn_layers: int,
                 dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for cout, pool in zip(channels, _pools(image_height, len(channels)), strict=True):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            if cout >= 128:  # deeper blocks get a second convolution
                layers += [nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                           nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(pool, pool))
            cin = cout
        self.cnn = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.rnn = nn.LSTM(cin, rnn_hidden, num_layers=rnn_layers, bidirectional=True, batch_first=True,
                           dropout=dropout if rnn_layers > 1 else 0.0)
        self.out_features = 2 * rnn_hidden
        for m in self.cnn:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def pixels(ink: torch.Tensor) -> torch.Tensor:
        return ink.float() / 127.5 - 1.0  # one channel, ink = 1, paper = -1

    def forward(self, pixels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        feats = self.cnn(pixels).squeeze(2).transpose(1, 2)  # (N, T, C)
        packed = nn.utils.rnn.pack_padded_sequence(self.dropout(feats), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=feats.shape[1])
        return self.dropout(out)


def ppocr_onnx_path() -> Path:
    import rapidocr

    path = Path(rapidocr.__file__).resolve().parent / "models" / PPOCR_FILE
    if not path.is_file():
        raise ConfigError("model.kind", f"ppocr_ctc needs {PPOCR_FILE} from rapidocr==3.10.0 (not found at {path})")
    return path


@lru_cache(maxsize=1)
def _ppocr_proto():
    import onnx

    path = ppocr_onnx_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != PPOCR_SHA256:
        raise InputError(path, "sha256", f"{digest} is not the PP-OCRv6 small recogniser this code was built for")
    return onnx.load(str(path))


class PPOCRBackbone(nn.Module):
    """PP-OCRv6 small recogniser up to its classifier: (N, 3, 48, W) -> (N, ceil(W / 8), 120)."""

    reduction = 8

    def __init__(self):
        super().__init__()
        from htr.onnx_graph import OnnxGraph

        self.graph = OnnxGraph(_ppocr_proto(), "x", PPOCR_FEATURES)
        self.out_features = 120

    @staticmethod
    def pixels(ink: torch.Tensor) -> torch.Tensor:
        grey = 1.0 - ink.float() / 127.5  # PP-OCR's input: (RGB / 255 - 0.5) / 0.5, dark ink on white
        return grey.expand(-1, 3, -1, -1)

    def forward(self, pixels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.graph(pixels)


def ppocr_classifier(charset: Sequence[str], vocab_size: int, blank_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PP-OCR's classifier rows for ``charset`` (token i + 4 = charset[i]), the blank row for ``blank_id``;
    other special tokens get zero weights and a low bias, so they start out never predicted."""
    from onnx import numpy_helper

    proto = _ppocr_proto()
    inits = {i.name: i for i in proto.graph.initializer}
    w = torch.from_numpy(numpy_helper.to_array(inits[PPOCR_CLASSIFIER[0]]).copy()).T  # (18710, 120)
    b = torch.from_numpy(numpy_helper.to_array(inits[PPOCR_CLASSIFIER[1]]).copy())
    chars = {q.key: q.value for q in proto.metadata_props}["character"].split("\n")
    column = {c: i + 1 for i, c in enumerate(chars)}  # 0 is PP-OCR's blank
    column[" "] = w.shape[0] - 1  # the space is PP-OCR's last class
    weight = torch.zeros(vocab_size, w.shape[1])
    bias = torch.full((vocab_size,), -10.0)
    weight[blank_id], bias[blank_id] = w[0], b[0]
    offset = vocab_size - len(charset)
    for i, ch in enumerate(charset):
        if ch in column:
            weight[offset + i], bias[offset + i] = w[column[ch]], b[column[ch]]
    return weight, bias


# ------------------------------------------------------------------------------------------- model
class CTCRecognizer(nn.Module):
    """Feature extractor + per-column classifier, trained with the CTC loss."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = dict(config)
        kind = self.config["backbone"]
        if kind == "ppocr":
            self.backbone: nn.Module = PPOCRBackbone()
        elif kind == "crnn":
            c = self.config
            self.backbone = CRNNBackbone(c["image_height"], c["channels"], c["rnn_hidden"], c["rnn_layers"],
                                         c["dropout"])
        else:
            raise ConfigError("model.backbone", f"{kind!r} is not one of ppocr, crnn")
        self.classifier = nn.Linear(self.backbone.out_features, self.config["vocab_size"])
        nn.init.xavier_uniform_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)
        # Inference of a PP-OCR model on a CPU runs in onnxruntime (htr.ctc_onnx: the same numbers,
        # several times faster than PyTorch's operator-by-operator graph); False keeps it in PyTorch.
        self.onnxruntime = True
        self.weights_sha256: str | None = None  # of the file the weights were loaded from: names the ONNX cache
        self._runner = None

    @property
    def onnx_file(self):
        """The cached ONNX export the onnxruntime session was built from (None: none built, or in memory)."""
        return None if self._runner is None else self._runner.path

    def uses_onnxruntime(self, ink: torch.Tensor) -> bool:
        return (self.onnxruntime and self.config["backbone"] == "ppocr" and not self.training
                and not torch.is_grad_enabled() and ink.device.type == "cpu" and ink.dtype == torch.uint8)

    def train(self, mode: bool = True):
        if mode:  # the weights may change from here on: the onnxruntime copy is rebuilt when next needed
            self._runner, self.weights_sha256 = None, None
        return super().train(mode)

    def load_state_dict(self, *args, **kwargs):
        self._runner, self.weights_sha256 = None, None
        return super().load_state_dict(*args, **kwargs)

    @property
    def blank_id(self) -> int:
        return int(self.config["blank_id"])

    @property
    def reduction(self) -> int:
        return self.backbone.reduction

    def frames(self, widths: torch.Tensor) -> torch.Tensor:
        r = self.reduction
        return torch.div(widths + r - 1, r, rounding_mode="floor").clamp(min=1)

    def forward(self, ink: torch.Tensor, widths: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``ink`` (N, 1, H, W) ink maps (uint8 or floats in [0, 255], paper = 0), ``widths`` their unpadded
        widths, ``labels`` (N, L) character ids padded with -100. Returns per-column ``log_probs``
        (N, T, V), ``lengths`` and, with labels, ``loss``: the CTC loss per target character."""
        n, _, _, w = ink.shape
        if widths is None:
            widths = torch.full((n,), w, dtype=torch.long)
        lengths = self.frames(widths.to(ink.device))
        if self.uses_onnxruntime(ink):
            if self._runner is None:
                from htr.ctc_onnx import OnnxCTC

                self._runner = OnnxCTC(self, self.weights_sha256)
            log_probs = torch.from_numpy(self._runner(ink.numpy()))
        else:
            log_probs = self.classifier(self.backbone(self.backbone.pixels(ink), lengths)).float().log_softmax(-1)
        lengths = lengths.clamp(max=log_probs.shape[1])
        out = {"log_probs": log_probs, "lengths": lengths}
        if labels is not None:
            keep = labels >= 0
            target_lengths = keep.sum(1)
            loss = F.ctc_loss(log_probs.transpose(0, 1), labels.masked_fill(~keep, self.blank_id), lengths,
                              target_lengths, blank=self.blank_id, reduction="sum", zero_infinity=True)
            out["loss"] = loss / target_lengths.sum().clamp(min=1)
        return out

    @torch.inference_mode()
    def decode(self, ink: torch.Tensor, widths: torch.Tensor, num_beams: int = 5,
               lm: Callable[[tuple[int, ...], int], float] | None = None) -> list[list[int]]:
        """Label ids per line: CTC prefix beam search with ``num_beams`` > 1 (with the language model
        scorer ``lm``, if given: :mod:`htr.lm`), else the best path."""
        return self.decode_outputs(self(ink, widths), num_beams, lm)

    def decode_outputs(self, out: dict[str, torch.Tensor], num_beams: int = 5,
                       lm: Callable[[tuple[int, ...], int], float] | None = None) -> list[list[int]]:
        """Label ids from a forward pass's ``log_probs`` and ``lengths`` (as :meth:`decode`)."""
        log_probs = out["log_probs"].cpu().numpy()
        lengths = out["lengths"].tolist()
        if num_beams <= 1:
            return greedy_decode(log_probs, lengths, self.blank_id)
        return [prefix_beam_search(log_probs[i, :n], num_beams, self.blank_id, lm=lm) for i, n in enumerate(lengths)]

    # ----------------------------------------------------------------------------------- save / load
    def save(self, directory: str | os.PathLike, half: bool = False) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
                 for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))
        meta = {"model_type": MODEL_TYPE, **self.config}
        if self.config["backbone"] == "ppocr":
            meta["ppocr_onnx"] = {"file": f"rapidocr/models/{PPOCR_FILE}", "sha256": PPOCR_SHA256}
        (directory / "config.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> CTCRecognizer:
        from safetensors.torch import load

        directory = Path(directory)
        config = json.loads((directory / "config.json").read_text())
        config.pop("model_type", None)
        config.pop("ppocr_onnx", None)
        model = cls(config)
        weights = (directory / WEIGHTS_FILE).read_bytes()
        state = {k: v.float() if v.is_floating_point() else v for k, v in load(weights).items()}
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise InputError(directory / WEIGHTS_FILE, "weights",
                             f"do not fit the model in config.json: {str(err).splitlines()[1].strip()}") from None
        model.weights_sha256 = hashlib.sha256(weights).hexdigest()
        return model.eval()

    @staticmethod
    def is_saved_in(directory: str | os.PathLike) -> bool:
        path = Path(directory) / "config.json"
        return path.is_file() and json.loads(path.read_text()).get("model_type") == MODEL_TYPE


def build_ctc_model(cfg, tokenizer, charset: str) -> CTCRecognizer:
    """A new model for ``model.kind`` ``ppocr_ctc`` (PP-OCR weights) or ``crnn_ctc`` (random weights)."""
    config: dict[str, Any] = {"vocab_size": len(tokenizer), "blank_id": tokenizer.pad_token_id,
                              "image_height": int(cfg.image_height)}
    if cfg.kind == "ppocr_ctc":
        if int(cfg.image_height) != 48:
            raise ConfigError("model.image_height", "ppocr_ctc reads lines 48 px high")
        model = CTCRecognizer({**config, "backbone": "ppocr"})
        weight, bias = ppocr_classifier(charset, len(tokenizer), tokenizer.pad_token_id)
        with torch.no_grad():
            model.classifier.weight.copy_(weight)
            model.classifier.bias.copy_(bias)
        return model
    c = cfg.crnn
    return CTCRecognizer({**config, "backbone": "crnn", "channels": list(c.channels), "rnn_hidden": c.rnn_hidden,
                          "rnn_layers": c.rnn_layers, "dropout": c.dropout})


# ------------------------------------------------------------------------------------------ decoding
def greedy_decode(log_probs: np.ndarray, lengths: Sequence[int], blank: int) -> list[list[int]]:
    """Best path: the most likely label per column, repeats merged, blanks dropped."""
    best = np.asarray(log_probs).argmax(-1)
    out = []
    for row, n in zip(best, lengths, strict=True):
        row = row[:n]
        keep = np.ones(len(row), bool)
        keep[1:] = row[1:] != row[:-1]
        out.append([int(c) for c in row[keep] if c != blank])
    return out


LOG2 = math.log(2.0)


def _logaddexp(a: float, b: float) -> float:
    """``np.logaddexp`` on two Python floats, the same formula and libm calls, without the per-call
    overhead of a NumPy ufunc on scalars (which took most of the beam search's time)."""
    if a == b:
        return a + LOG2
    d = a - b
    return a + math.log1p(math.exp(-d)) if d > 0 else b + math.log1p(math.exp(d))


def _add(beams: dict[tuple[int, ...], list[float]], prefix: tuple[int, ...], p_blank: float = -math.inf,
         p_label: float = -math.inf) -> None:
    cur = beams.get(prefix)
    if cur is None:
        beams[prefix] = cur = [-math.inf, -math.inf]
    cur[0] = _logaddexp(cur[0], p_blank)
    cur[1] = _logaddexp(cur[1], p_label)


def _total(item: tuple[tuple[int, ...], list[float]]) -> float:
    return _logaddexp(item[1][0], item[1][1])


def prefix_beam_search(log_probs: np.ndarray, beam: int, blank: int, prune: float = -10.0,
                       lm: Callable[[tuple[int, ...], int], float] | None = None) -> list[int]:
    """CTC prefix beam search over one line's (T, V) log-probabilities.

    Written here because torchaudio's CTC decoder is not a dependency. Each prefix keeps the
    log-probabilities of its paths ending in a blank and in its last label; labels scoring below
    ``prune`` at a column are not tried as extensions there. ``lm(prefix, label)``, if given, is added
    once when a prefix is extended by a label (shallow fusion; see :mod:`htr.lm`)."""
    log_probs = np.asarray(log_probs)
    tried = log_probs > prune
    tried[:, blank] = False
    rows = log_probs.tolist()  # Python floats: scalar indexing into NumPy arrays is slow
    beams: dict[tuple[int, ...], list[float]] = {(): [0.0, -math.inf]}  # prefix -> [ends blank, ends label]
    for row, candidates in zip(rows, tried, strict=True):
        labels = np.flatnonzero(candidates).tolist()
        p_blank = row[blank]
        nxt: dict[tuple[int, ...], list[float]] = {}
        for prefix, (pb, pl) in beams.items():
            either = _logaddexp(pb, pl)
            _add(nxt, prefix, p_blank=either + p_blank)
            if prefix:
                _add(nxt, prefix, p_label=pl + row[prefix[-1]])  # the last label continues
            for c in labels:
                # A repeated label needs a blank in between; any other label may follow either ending.
                p = pb if prefix and prefix[-1] == c else either
                _add(nxt, prefix + (c,), p_label=p + row[c] + (lm(prefix, c) if lm is not None else 0.0))
        beams = dict(heapq.nlargest(beam, nxt.items(), key=_total))  # = sorted(..., reverse=True)[:beam]
    return list(max(beams.items(), key=_total)[0])


def batch_ink(inks: Sequence[np.ndarray], multiple: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-aligned uint8 ink maps (N, 1, H, W_max) padded with paper, and their widths."""
    widths = torch.tensor([a.shape[1] for a in inks], dtype=torch.long)
    wmax = int(math.ceil(int(widths.max()) / multiple) * multiple)
    out = torch.zeros((len(inks), 1, inks[0].shape[0], wmax), dtype=torch.uint8)
    for i, a in enumerate(inks):
        out[i, 0, :, :a.shape[1]] = torch.from_numpy(a)
    return out, widths
