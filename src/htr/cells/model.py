"""The cell reader's networks (small CNNs over a 32x32 cell crop) and its weights file.

The weights file is fp16 safetensors; its metadata carries the class list, the input size, the
architecture and the calibration (softmax temperatures and the thresholds chosen on the validation
cells), so one file is the whole reader. It holds one network (both passes read with it) or two
(tensors prefixed ``pass1.`` and ``pass2.``; metadata ``arch2``/``width2``), one per pass, of different
architectures and trained on different cells, so that their agreement is evidence. A file may also hold a
digit specialist (tensors prefixed ``digits.``; metadata ``arch_digits``/``width_digits``), the network that
takes pass 2 for tables whose alphabet is digits only, with its own calibration (``calibration.digits``), and a digit pass 1 (tensors prefixed ``digits_pass1.``;
metadata ``arch_digits_pass1``/``width_digits_pass1``), the network that then takes pass 1 for those tables,
and a digit mix network (``digits_mix.``), the general pass 1 those tables average with the digit pass 1
when the file's own pass 1 is newer than their calibration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from htr.cells.data import CLASSES, INPUT_SIZE
from inkbase.errors import InputError


class CellNet(nn.Module):
    def __init__(self, n_classes: int = len(CLASSES), width: int = 24):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        w = width
        self.features = nn.Sequential(
            block(1, w), nn.MaxPool2d(2),            # 16
            block(w, 2 * w), block(2 * w, 2 * w), nn.MaxPool2d(2),  # 8
            block(2 * w, 4 * w), block(4 * w, 4 * w), nn.MaxPool2d(2),  # 4
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * w * 16, 192), nn.ReLU(inplace=True),
                                  nn.Dropout(0.3), nn.Linear(192, n_classes))
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class CellGapNet(nn.Module):
    """The second pass's network: a 5x5 stem, four 3x3 conv layers ending at 8x8 and a global average +
    max pooled head (no large dense layer), so its mistakes differ from :class:`CellNet`'s."""

    def __init__(self, n_classes: int = len(CLASSES), width: int = 16):
        super().__init__()

        def block(cin: int, cout: int, k: int = 3) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True))

        w = width
        self.features = nn.Sequential(
            block(1, w, 5), nn.MaxPool2d(2),                        # 16
            block(w, 2 * w), block(2 * w, 2 * w), nn.MaxPool2d(2),  # 8
            block(2 * w, 4 * w), block(4 * w, 4 * w),               # 8
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(8 * w, n_classes))
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return self.head(torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1))


ARCHS = {"cellnet": CellNet, "gapnet": CellGapNet}


def make_net(arch: str, width: int, n_classes: int = len(CLASSES)) -> nn.Module:
    if arch not in ARCHS:
        raise ValueError(f"unknown cell network {arch!r}; known: {', '.join(ARCHS)}")
    return ARCHS[arch](n_classes, width)


# The optional networks after the general pair, in file order: tensors prefixed "<name>.", metadata
# "arch_<name>" / "width_<name>", and "has_<name>" in what load_networks reports.
DIGIT_SLOTS = ("digits", "digits_pass1", "digits_mix")


def _arch(model: nn.Module) -> str:
    return next(k for k, v in ARCHS.items() if type(model) is v)


def save_reader(path: str | Path, model: nn.Module, calibration: dict[str, Any],
                model2: nn.Module | None = None, digits: nn.Module | None = None,
                digits_pass1: nn.Module | None = None, digits_mix: nn.Module | None = None) -> Path:
    """Write ``model`` (and the second pass's ``model2``, the digit specialist ``digits``, the digit
    tables' pass-1 network ``digits_pass1`` and ``digits_mix``, the network averaged with it in place of
    ``model`` when the digit tables keep an earlier general pass 1) as fp16 safetensors with the classes,
    the architectures and ``calibration`` in the metadata."""
    from safetensors.torch import save_file

    if digits_pass1 is not None and (model2 is None or digits is None):
        raise ValueError("a digit pass 1 joins a two-network reader with a digit specialist")
    if digits_mix is not None and digits_pass1 is None:
        raise ValueError("a digit mix network joins a reader with a digit pass 1")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nets = {"": model} if model2 is None else {"pass1.": model, "pass2.": model2}
    extra = {name: net for name, net in zip(DIGIT_SLOTS, (digits, digits_pass1, digits_mix), strict=True)
             if net is not None}
    nets.update({f"{name}.": net for name, net in extra.items()})
    tensors = {p + k: (v.half() if v.is_floating_point() else v).contiguous()
               for p, net in nets.items() for k, v in net.state_dict().items()}
    meta = {"classes": json.dumps(list(CLASSES)), "input_size": str(INPUT_SIZE), "width": str(model.width),
            "arch": _arch(model), "calibration": json.dumps(calibration)}
    if model2 is not None:
        meta.update({"arch2": _arch(model2), "width2": str(model2.width)})
    for name, net in extra.items():
        meta.update({f"arch_{name}": _arch(net), f"width_{name}": str(net.width)})
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def load_networks(path: str | Path) -> tuple[list[nn.Module], dict[str, Any]]:
    """The networks of a weights file (one, or pass 1's and pass 2's, then the digit specialist, the digit
    pass 1 and the digit mix network where there are; fp32, eval mode) and its metadata (classes,
    calibration, ``has_digits``, ``has_digits_pass1``, ``has_digits_mix``)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "weights", "not found")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    classes = json.loads(meta.get("classes", "[]"))
    if tuple(classes) != CLASSES:
        raise InputError(path, "classes", f"expected {len(CLASSES)} classes {CLASSES[:3]}..., got {classes[:3]}...")
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    specs = [("", meta.get("arch", "cellnet"), meta.get("width", 24))]
    if "arch2" in meta:
        specs = [("pass1.", specs[0][1], specs[0][2]), ("pass2.", meta["arch2"], meta["width2"])]
    specs += [(f"{name}.", meta[f"arch_{name}"], meta[f"width_{name}"]) for name in DIGIT_SLOTS
              if f"arch_{name}" in meta]
    named = ("pass1.", "pass2.", *(f"{name}." for name in DIGIT_SLOTS))
    nets = []
    for prefix, arch, width in specs:
        if arch not in ARCHS:
            raise InputError(path, "arch", f"unknown network {arch!r}")
        net = make_net(arch, int(width), len(classes))
        # A one-network file has no prefix: its tensors are those of no named network.
        own = {k[len(prefix):]: v for k, v in tensors.items()
               if (k.startswith(prefix) if prefix else not k.startswith(named))}
        net.load_state_dict(own)
        net.eval()
        nets.append(net)
    return nets, {"classes": classes, "calibration": json.loads(meta.get("calibration", "{}")),
                  **{f"has_{name}": f"arch_{name}" in meta for name in DIGIT_SLOTS}}


def load_reader(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Pass 1's network (fp32, eval mode) and the metadata (classes, calibration) of a weights file."""
    nets, meta = load_networks(path)
    return nets[0], meta
