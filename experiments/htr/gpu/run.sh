#!/usr/bin/env bash
# Train the chosen recipe (experiment=htr_ctc_anchored: PP-OCR start, L2-SP, layer-wise decay, printed
# lines mixed in, checkpoint chosen on the real validation lines) at full scale on one GPU, and write the
# model, its training table and its evaluation (real validation lines, held-out fonts) under $OUT.
#
#   DATA_DIR=<data> OUT=<dir> [INKGRADE_FONT_DIR=<fonts>] bash experiments/htr/gpu/run.sh [tiny]
#
# DATA_DIR needs handwriting_lines/ (validation only: checkpoints are chosen on it, it is never trained
# on) and semeval2013_task7_2way/ (training text, train split). A machine without a network gets both,
# and the font cache of data_prep/fonts/prepare.py, as ignored folders carried with the working tree.
# "tiny" runs every step in a few minutes on a CPU: a check of this script, not a result.
set -euo pipefail
: "${DATA_DIR:?set DATA_DIR}" "${OUT:?set OUT}"
PY=${PY:-python}
export PYTHONPATH=${PYTHONPATH:-$PWD/src}
if [ "${1:-full}" = tiny ]; then
  n_heldout=8
  train=(trainer.max_steps=2 trainer.epochs=2 trainer.time_budget_min=null data.val_lines=4 data.heldout_lines=4
         data.num_workers=0 trainer.batch_size=2 trainer.eval_batch_size=4 trainer.final_num_beams=1)
else
  n_heldout=500
  train=(trainer.batch_size=64 trainer.eval_batch_size=128 data.num_workers=12 data.train_lines=400000
         trainer.epochs=8 trainer.time_budget_min=8 data.val_lines=512 data.heldout_lines=512)
fi
$PY data_prep/handwriting_lines/prepare.py --data-dir "$DATA_DIR" --out "$OUT/data/lines"
$PY data_prep/synthetic/prepare.py fonts=heldout n_train=0 n_val=$n_heldout seed=11 num_workers=1 \
  out_dir="$OUT/data/heldout_font_lines"
$PY scripts/train_htr.py experiment=htr_ctc_anchored paths.data_dir="$DATA_DIR" \
  data.select_manifest="$OUT/data/lines/lines.jsonl" out_dir="$OUT/run" "${train[@]}"
$PY -c "from inkbase.cli import compose; from htr.model import build_model
build_model(compose('train_htr', ['model=ppocr_ctc']).model).save('$OUT/start', half=True)"
for set in lines/lines.jsonl heldout_font_lines/val.jsonl; do
  for model in run/model start; do  # the trained model and its untouched start, through the same code
    $PY scripts/eval_htr.py model_dir="$OUT/$model" manifest="$OUT/data/$set" \
      out_dir="$OUT/eval/$(dirname "$set")__${model%%/*}"
  done
done
rm -rf "$OUT/run/checkpoints" "$OUT/data/heldout_font_lines/images"  # what comes back stays small
