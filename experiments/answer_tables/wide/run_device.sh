#!/usr/bin/env bash
# Train four wider cell-reader networks side by side on one GPU (PLAN.md): the general pass 1 and pass 2 and
# the digit pass 1 and digit specialist, each on more rendered cells than a CPU run can afford.
# Run from the repository root with the font cache, MNIST and the pure-Python packages the machine lacks in
# .gpu/ (PLAN.md, "How it was run": prepare_carry.sh); SCALE=tiny runs the same steps on a few hundred cells on a CPU.
#   bash experiments/answer_tables/wide/run_device.sh <out_dir>
set -u
OUT_DIR=${1:?out_dir}
SCALE=${SCALE:-full}
LIMIT=${LIMIT:-420}      # seconds any one run may take before it is stopped (its finished epochs are kept)
ROOT=$PWD
export PYTHONPATH=$ROOT/.gpu/site:$ROOT/src:$ROOT${EXTRA_PATH:+:$EXTRA_PATH}
export INKGRADE_FONT_DIR=$ROOT/.gpu/fonts INKGRADE_MNIST_DIR=$ROOT/.gpu/mnist PYTHONUNBUFFERED=1
RUNS=/tmp/inkgrade_wide
mkdir -p "$RUNS" "$OUT_DIR"
if [ "$SCALE" = full ]; then
  DEV=cuda; G=400000; D=250000; E=10; NV=8000; CH=40; WG=${WG:-5}; WD=${WD:-3}; BS=512
else
  DEV=${DEV:-cpu}; G=400; D=300; E=2; NV=200; CH=4; WG=2; WD=1; BS=64
fi
${PY:-python3} - <<'PY'
import torch, numpy, cv2, PIL
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "numpy", numpy.__version__, "cv2", cv2.__version__, "PIL", PIL.__version__)
from htr.cells.data import cell_fonts, require_families
fonts = cell_fonts("train"); val = cell_fonts("val"); require_families("val", val)
print("fonts train", len(fonts), "val", len(val))
PY
train() {
  local name=$1; shift
  case " ${ONLY:-$name} " in *" $name "*) ;; *) return 0 ;; esac   # ONLY="a b": just those runs
  local t0=$SECONDS
  timeout "$LIMIT" ${PY:-python3} scripts/train_cells.py out_dir="$RUNS/$name" trainer.device=$DEV threads=2 \
    data.n_val=$NV data.render_chunks=$CH trainer.epochs=$E trainer.batch_size=$BS \
    data.cache_dir="$RUNS/cache" "$@" >"$RUNS/$name.log" 2>&1
  echo "$name rc=$? seconds=$((SECONDS - t0))" | tee -a "$RUNS/$name.log"
}
train general_pass2 model.arch=cellnet model.width=48 seed=20 data.n_train=$G data.workers=$WG &
train general_pass1 model.arch=gapnet model.width=48 seed=21 data.n_train=$G data.workers=$WG &
train digits_pass2 model.arch=cellnet model.width=48 seed=22 data.n_train=$D data.workers=$WD \
  data.digit_share=1.0 data.warp_prob=0.5 &
train digits_pass1 model.arch=gapnet model.width=32 seed=23 data.n_train=$D data.workers=$WD \
  data.digit_share=1.0 data.warp_prob=0.7 &
wait
# Bring back each run's weights, metrics and logs; a run stopped by the limit brings its last epoch's network.
for name in ${ONLY:-general_pass2 general_pass1 digits_pass2 digits_pass1}; do
  ${PY:-python3} - "$RUNS/$name" <<'PY'
import sys, torch
from pathlib import Path
run = Path(sys.argv[1])
ckpt = run / "checkpoint.pt"
if not (run / "cells.safetensors").exists() and ckpt.exists():
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    torch.save({"epoch": state["epoch"], "model": {k: v.half() for k, v in state["model"].items()}}, run / "last_epoch.pt")
PY
  tar -czf "$OUT_DIR/$name.tgz" -C "$RUNS" --exclude=checkpoint.pt "$name" "$name.log"
done
ls -la "$OUT_DIR"
