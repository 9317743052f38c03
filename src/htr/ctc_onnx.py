"""CPU inference of a PP-OCR CTC recogniser (:mod:`htr.ctc`) in onnxruntime.

The whole inference graph is exported to one ONNX model: uint8 ink maps ``ink`` (N, 1, 48, W, paper = 0)
-> PP-OCR's input scaling -> the PP-OCR backbone carrying our fine-tuned weights -> our classifier ->
log-softmax -> ``log_probs`` (N, ceil(W / 8), V), the numbers :meth:`htr.ctc.CTCRecognizer.forward`
computes in PyTorch (float32; the shipped weights stay fp16 safetensors). onnxruntime runs this graph
several times faster on a CPU than PyTorch's operator-by-operator run of it; PyTorch stays the path for
training and GPUs.

A model loaded from a folder is exported once and cached as
``<cache dir>/htr_onnx/<sha256 of model.safetensors>-<PP-OCR graph>-v<EXPORT_VERSION>.onnx``; the cache dir
is ``$INKGRADE_CACHE_DIR`` or the user cache dir (``platformdirs``, e.g. ``~/.cache/inkgrade``). Weights
being trained (no file behind them) are exported in memory each time the runner is built. Delete the
folder to clear the cache; a cache that cannot be written or read is warned about and bypassed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inkbase.jsonio import write_bytes
from inkbase.runs import user_cache_dir

log = logging.getLogger(__name__)

EXPORT_VERSION = 1  # bump when the exported graph changes, so that stale cache files are not read
INPUT, OUTPUT = "ink", "log_probs"


def cache_dir() -> Path:
    return user_cache_dir()


def export(model) -> Any:
    """The inference graph of a ``ppocr`` :class:`htr.ctc.CTCRecognizer` with its current weights
    (an ``onnx.ModelProto``; input ``ink`` uint8, output ``log_probs`` float32)."""
    from onnx import TensorProto, helper, numpy_helper

    from htr.ctc import PPOCR_FEATURES

    backbone = model.backbone
    proto = backbone.graph.to_onnx()  # x (N, 3, 48, W) -> PPOCR_FEATURES (N, T, 120)
    graph = proto.graph
    (x,) = graph.input
    height = x.type.tensor_type.shape.dim[2].dim_value
    weight = model.classifier.weight.detach().cpu().float().numpy().T.copy()  # (120, V)
    bias = model.classifier.bias.detach().cpu().float().numpy()
    graph.initializer.extend([
        numpy_helper.from_array(np.array(127.5, np.float32), "ink_scale"),
        numpy_helper.from_array(np.array(1.0, np.float32), "ink_one"),
        numpy_helper.from_array(weight, "classifier_weight"),
        numpy_helper.from_array(bias, "classifier_bias"),
    ])
    # The same float32 operations as PPOCRBackbone.pixels: 1 - ink / 127.5, copied to 3 channels.
    prologue = [
        helper.make_node("Cast", [INPUT], ["ink_float"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["ink_float", "ink_scale"], ["ink_scaled"]),
        helper.make_node("Sub", ["ink_one", "ink_scaled"], ["ink_grey"]),
        helper.make_node("Concat", ["ink_grey"] * 3, [x.name], axis=1),
    ]
    epilogue = [
        helper.make_node("MatMul", [PPOCR_FEATURES, "classifier_weight"], ["classifier_matmul"]),
        helper.make_node("Add", ["classifier_matmul", "classifier_bias"], ["logits"]),
        helper.make_node("LogSoftmax", ["logits"], [OUTPUT], axis=-1),
    ]
    nodes = prologue + list(graph.node) + epilogue
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.input[:], graph.output[:]
    graph.input.append(helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["batch", 1, height, "width"]))
    graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT,
                                                      ["batch", "frames", int(weight.shape[1])]))
    return proto


def cache_path(weights_sha256: str) -> Path:
    from htr.ctc import PPOCR_SHA256

    return cache_dir() / "htr_onnx" / f"{weights_sha256}-{PPOCR_SHA256[:12]}-v{EXPORT_VERSION}.onnx"


class OnnxCTC:
    """An onnxruntime session over :func:`export`'s graph. ``weights_sha256`` (the SHA-256 of the
    weights file the model was loaded from) names the cached export; None exports in memory."""

    def __init__(self, model, weights_sha256: str | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        # One thread setting (torch.set_num_threads, OMP_NUM_THREADS) governs both backends.
        options.intra_op_num_threads = torch.get_num_threads()
        self.path: Path | None = None
        self.session = None
        if weights_sha256:
            path = cache_path(weights_sha256)
            try:
                if not path.is_file():
                    write_bytes(path, export(model).SerializeToString())
                self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                self.path = path
            except Exception as err:  # noqa: BLE001 - OSError, or onnxruntime's Fail/InvalidProtobuf on a damaged file
                log.warning("ONNX cache %s not usable (%s: %s); exporting in memory", path, type(err).__name__, err)
        if self.session is None:
            self.session = ort.InferenceSession(export(model).SerializeToString(), options,
                                                providers=["CPUExecutionProvider"])

    def __call__(self, ink: np.ndarray) -> np.ndarray:
        """``log_probs`` (N, T, V) float32 for uint8 ink maps (N, 1, H, W)."""
        return self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(ink, dtype=np.uint8)})[0]
