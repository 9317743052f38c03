#!/usr/bin/env bash
# Gather, in .gpu/ (ignored by git), what run_device.sh needs on a GPU machine that has PyTorch, NumPy,
# OpenCV and Pillow but not this project's environment: the pure-Python packages it lacks (Hydra, OmegaConf,
# ANTLR runtime, platformdirs, the PyPI handwriting fonts), the font cache (make fonts) and MNIST
# (python data_prep/answer_cells/prepare.py). Run from the repository root with the project's venv.
set -eu
SITE=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
FONTS=${INKGRADE_FONT_DIR:-$HOME/.cache/inkgrade/fonts}
MNIST=${INKGRADE_MNIST_DIR:-$HOME/.cache/inkgrade/mnist}
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/site .gpu/mnist
cp -r "$SITE"/fontpkg* "$SITE"/hydra "$SITE"/omegaconf "$SITE"/antlr4 "$SITE"/platformdirs .gpu/site/
rm -rf .gpu/site/*.dist-info
find .gpu/site -name __pycache__ -prune -exec rm -rf {} +
cp -r "$FONTS" .gpu/fonts
cp "$MNIST/mnist.npz" .gpu/mnist/
du -sh .gpu
