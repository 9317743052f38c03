"""The cell reader: a small CNN over a 32x32 cell crop, and its weights file.

The weights file is fp16 safetensors; its metadata carries the class list, the input size and the
calibration (softmax temperature and the acceptance threshold chosen on the validation fonts), so one
file is the whole reader.
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


def save_reader(path: str | Path, model: CellNet, calibration: dict[str, Any]) -> Path:
    """Write ``model`` as fp16 safetensors with the classes and ``calibration`` in its metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    meta = {"classes": json.dumps(list(CLASSES)), "input_size": str(INPUT_SIZE), "width": str(model.width),
            "calibration": json.dumps(calibration)}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def load_reader(path: str | Path) -> tuple[CellNet, dict[str, Any]]:
    """The model (fp32, eval mode) and the metadata (classes, calibration) of a weights file."""
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
    model = CellNet(len(classes), int(meta.get("width", 24)))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()})
    model.eval()
    return model, {"classes": classes, "calibration": json.loads(meta.get("calibration", "{}"))}
