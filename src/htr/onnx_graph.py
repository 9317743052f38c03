"""Run (and train) an ONNX graph as a PyTorch module.

Used to fine-tune the PP-OCR text recogniser that ships inside the ``rapidocr`` package. Written here
because the converter on PyPI (``onnx2torch``) imports torchvision, which this project does not depend
on; only the opset-11 operators that recognisers of this family use are implemented, and an unknown
operator is an error naming it.

Float initialisers with more than one element become ``nn.Parameter`` (convolution and matrix weights,
biases, layer-norm scales), except batch-norm statistics, which are buffers: batch normalisation always
runs with its stored statistics (frozen), as is usual when fine-tuning on small batches. Scalars and
integer initialisers (shapes, axes) are fixed constants outside the state dict.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inkbase.errors import ConfigError


def _attrs(node) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _pads(attrs: dict[str, Any], kernel: Sequence[int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) padding; SAME_UPPER is resolved for stride-1 kernels (the only kind used)."""
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        if any(s != 1 for s in attrs.get("strides", [1, 1])):
            raise ConfigError("onnx graph", f"auto_pad {auto} with strides != 1 is not supported")
        th, tw = kernel[0] - 1, kernel[1] - 1
        lo_h, lo_w = (th // 2, tw // 2) if auto == "SAME_UPPER" else (th - th // 2, tw - tw // 2)
        return lo_h, lo_w, th - lo_h, tw - lo_w
    p = list(attrs.get("pads", [0, 0, 0, 0]))
    return p[0], p[1], p[2], p[3]


def _pad(x: torch.Tensor, pads: tuple[int, int, int, int], value: float = 0.0) -> tuple[torch.Tensor, Any]:
    top, left, bottom, right = pads
    if top == bottom and left == right:
        return x, (top, left)
    return F.pad(x, (left, right, top, bottom), value=value), (0, 0)


def _conv(x, w, b=None, **a):
    x, padding = _pad(x, _pads(a, w.shape[2:]))
    return F.conv2d(x, w, b, stride=a.get("strides", 1), padding=padding, dilation=a.get("dilations", 1),
                    groups=a.get("group", 1))


def _max_pool(x, **a):
    k = a["kernel_shape"]
    x, padding = _pad(x, _pads(a, k), value=float("-inf"))
    return F.max_pool2d(x, k, a.get("strides", k), padding, ceil_mode=bool(a.get("ceil_mode", 0)))


def _avg_pool(x, **a):
    k = a["kernel_shape"]
    x, padding = _pad(x, _pads(a, k))
    return F.avg_pool2d(x, k, a.get("strides", k), padding, ceil_mode=bool(a.get("ceil_mode", 0)),
                        count_include_pad=bool(a.get("count_include_pad", 0)))


def _reshape(x, shape, **a):
    dims = [int(d) for d in shape.tolist()]
    if not a.get("allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _slice(x, starts, ends, axes=None, steps=None, **_):
    starts, ends = starts.tolist(), ends.tolist()
    axes = list(range(len(starts))) if axes is None else axes.tolist()
    steps = [1] * len(starts) if steps is None else steps.tolist()
    index: list[Any] = [slice(None)] * x.dim()
    for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
        if st != 1:
            raise ConfigError("onnx graph", "Slice with a step other than 1 is not supported")
        n = x.shape[ax]
        index[ax] = slice(max(-n, min(n, s)), max(-n, min(n, e)))
    return x[tuple(index)]


def _softmax(x, **a):  # opset 11: softmax over all dimensions from `axis` on
    axis = a.get("axis", 1) % x.dim()
    return x.flatten(axis).softmax(-1).reshape(x.shape)


def _squeeze(x, **a):
    for ax in sorted((d % x.dim() for d in a["axes"]), reverse=True):
        x = x.squeeze(ax)
    return x


def _unsqueeze(x, **a):
    for ax in sorted(a["axes"]):
        x = x.unsqueeze(ax)
    return x


def _batch_norm(x, scale, bias, mean, var, **a):
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=a.get("epsilon", 1e-5))


OPS: dict[str, Callable[..., torch.Tensor]] = {
    "Conv": _conv, "BatchNormalization": _batch_norm, "MaxPool": _max_pool, "AveragePool": _avg_pool,
    "Relu": lambda x, **_: F.relu(x), "Sigmoid": lambda x, **_: torch.sigmoid(x),
    "HardSigmoid": lambda x, **a: (x * a.get("alpha", 0.2) + a.get("beta", 0.5)).clamp(0, 1),
    "Erf": lambda x, **_: torch.erf(x), "Sqrt": lambda x, **_: torch.sqrt(x),
    "Add": lambda x, y, **_: x + y, "Sub": lambda x, y, **_: x - y, "Mul": lambda x, y, **_: x * y,
    "Div": lambda x, y, **_: x / y, "Pow": lambda x, y, **_: torch.pow(x, y),
    "MatMul": lambda x, y, **_: torch.matmul(x, y),
    "ReduceMean": lambda x, **a: x.mean(dim=tuple(a["axes"]), keepdim=bool(a.get("keepdims", 1))),
    "Transpose": lambda x, **a: x.permute(*a["perm"]), "Reshape": _reshape, "Slice": _slice,
    "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Softmax": _softmax,
    "Concat": lambda *xs, **a: torch.cat(xs, dim=a["axis"]),
    "Shape": lambda x, **_: torch.tensor(x.shape, dtype=torch.long),
    "Identity": lambda x, **_: x,
}


def _safe(name: str, taken: set[str]) -> str:
    base = re.sub(r"\W", "_", name)
    out, i = base, 1
    while out in taken:
        out, i = f"{base}_{i}", i + 1
    taken.add(out)
    return out


class OnnxGraph(nn.Module):
    """The sub-graph of an ONNX model from ``input_name`` to ``output_name``, as a module."""

    def __init__(self, model_proto, input_name: str, output_name: str):
        super().__init__()
        from onnx import numpy_helper

        graph = model_proto.graph
        producers = {out: node for node in graph.node for out in node.output}
        needed, stack = set(), [output_name]
        while stack:  # the nodes the output depends on
            name = stack.pop()
            node = producers.get(name)
            if node is None or id(node) in needed:
                continue
            needed.add(id(node))
            stack.extend(node.input)
        self.nodes = [(n.op_type, list(n.input), list(n.output), _attrs(n)) for n in graph.node if id(n) in needed]
        unknown = sorted({op for op, *_ in self.nodes} - set(OPS))
        if unknown:
            raise ConfigError("onnx graph", f"unsupported operators: {', '.join(unknown)}")
        used = {i for _, ins, _, _ in self.nodes for i in ins}
        bn_stats = {ins[k] for op, ins, _, _ in self.nodes if op == "BatchNormalization" for k in (3, 4)}
        taken: set[str] = set()
        self.names: dict[str, str] = {}  # ONNX name -> attribute name
        self.params = nn.ParameterDict()
        self.stats = nn.Module()
        self.constants: dict[str, torch.Tensor] = {}
        for init in graph.initializer:
            if init.name not in used:
                continue
            array = numpy_helper.to_array(init)
            tensor = torch.from_numpy(np.array(array))
            if tensor.is_floating_point() and tensor.numel() > 1:
                key = _safe(init.name, taken)
                self.names[init.name] = key
                if init.name in bn_stats:
                    self.stats.register_buffer(key, tensor.float())
                else:
                    self.params[key] = nn.Parameter(tensor.float())
            else:
                self.constants[init.name] = tensor
        self.input_name, self.output_name = input_name, output_name
        self._proto = model_proto

    def to_onnx(self):
        """The same sub-graph as an ONNX model carrying this module's current weights (for onnxruntime)."""
        from onnx import numpy_helper, utils

        proto = utils.Extractor(self._proto).extract_model([self.input_name], [self.output_name])
        for init in proto.graph.initializer:
            key = self.names.get(init.name)
            if key is None:
                continue
            value = self.params[key] if key in self.params else getattr(self.stats, key)
            init.CopyFrom(numpy_helper.from_array(value.detach().cpu().float().numpy(), init.name))
        return proto

    def _tensor(self, name: str, env: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if not name:
            return None
        if name in env:
            return env[name]
        key = self.names.get(name)
        if key is not None:
            return self.params[key] if key in self.params else getattr(self.stats, key)
        const = self.constants[name]
        return const.to(env[self.input_name].device) if const.is_floating_point() else const

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = {self.input_name: x}
        for op, ins, outs, attrs in self.nodes:
            args = [self._tensor(i, env) for i in ins]
            while args and args[-1] is None:
                args.pop()
            env[outs[0]] = OPS[op](*args, **attrs)
        return env[self.output_name]
