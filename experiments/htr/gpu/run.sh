#!/usr/bin/env bash
# Train three candidates of the chosen recipe (experiment=htr_ctc_anchored: PP-OCR start, L2-SP, layer-wise
# decay, printed lines mixed in, checkpoints chosen on the real validation lines) side by side on one GPU,
# each with its own rendering workers, and leave their run folders (model, history, table, curve, metrics;
# checkpoints removed) under $OUT/runs/<candidate>. Scoring on the validation lines and held-out fonts is
# done afterwards on any machine with scripts/eval_htr.py (see README.md here).
#
#   DATA_DIR=<data> OUT=<dir> [INKGRADE_FONT_DIR=<fonts>] [BUDGET_MIN=4.5] bash experiments/htr/gpu/run.sh [tiny]
#
# Candidates: anchored (the recipe as configured), prose (+ English prose from the Python documentation in
# the training text), prose_tight (prose, with half the learning rate and 10x the pull towards the start).
# DATA_DIR needs handwriting_lines/ (validation only: checkpoints are chosen on it, it is never trained on)
# and semeval2013_task7_2way/ (training text, train split). "tiny" runs every step in a few minutes on a
# CPU: a check of this script, not a result.
set -euo pipefail
: "${DATA_DIR:?set DATA_DIR}" "${OUT:?set OUT}"
PY=${PY:-python}
export PYTHONPATH=${PYTHONPATH:-$PWD/src}
if [ "${1:-full}" = tiny ]; then
  common=(trainer.max_steps=2 trainer.epochs=2 trainer.time_budget_min=null data.val_lines=4 data.heldout_lines=4
          data.num_workers=0 trainer.batch_size=2 trainer.eval_batch_size=4)
else
  common=(trainer.batch_size=48 trainer.eval_batch_size=32 data.num_workers=6 data.train_lines=400000
          trainer.epochs=10 trainer.ctc.patience=4 "trainer.time_budget_min=${BUDGET_MIN:-4.5}"
          data.val_lines=256 data.heldout_lines=256)
fi
prose='+data.text.sources.python_docs=0.25 data.text.sources.semeval=0.35 data.text.sources.generic=0.25 data.text.sources.sample_exam=0.15'
declare -A extra=(
  [anchored]=""
  [prose]="$prose"
  [prose_tight]="$prose trainer.learning_rate=1.5e-5 trainer.ctc.l2sp=0.1"
)
$PY data_prep/handwriting_lines/prepare.py --data-dir "$DATA_DIR" --out "$OUT/data/lines"
mkdir -p "$OUT/logs"
pids=()
for name in ${CANDIDATES:-anchored prose}; do
  # shellcheck disable=SC2086  # the extra overrides are words
  $PY scripts/train_htr.py experiment=htr_ctc_anchored paths.data_dir="$DATA_DIR" \
    data.select_manifest="$OUT/data/lines/lines.jsonl" out_dir="$OUT/runs/$name" "${common[@]}" ${extra[$name]} \
    >"$OUT/logs/$name.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
rm -rf "$OUT"/runs/*/checkpoints  # what comes back stays small
exit $status
