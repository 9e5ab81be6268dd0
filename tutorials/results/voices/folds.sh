#!/usr/bin/env bash
# Leave-one-speaker-out: for each of the four real speakers, fine-tune the synthetic-voices model (the bundled
# model before this recipe) on everything but that speaker, then measure WER on that speaker's isolated digits
# and joined strings. The folds use a shorter budget than the shipped model (STEPS, default 1,500 steps).
#   bash tutorials/results/voices/folds.sh CORPUS INIT_MODEL RUNS_DIR [STEPS]
# CORPUS is `minispeechseq data CORPUS --fsdd FSDD`. Two folds run at once, one thread each; results are appended
# to RUNS_DIR/folds.jsonl. The augmentation flags are the recipe's (recipe_flags.txt, what the ablation kept).
set -euo pipefail
corpus=$1 init=$2 runs=$3 steps=${4:-1500}
here=$(dirname "$0")
mkdir -p "$runs"
export OMP_NUM_THREADS=1
read -r -a recipe < "$here/recipe_flags.txt"
fold() {  # SPEAKER
  local s=$1
  python "$here/run_arm.py" "fold_$s" "$runs" "$runs/folds.jsonl" \
    --test "${s}_isolated=$corpus/folds/$s/isolated.tsv" --test "${s}_joined=$corpus/folds/$s/joined.tsv" -- \
    --init "$init" --data "$corpus" --train-manifest "$corpus/folds/$s/train.tsv" --steps "$steps" \
    --batch-size 16 --lr 1e-3 --warmup-steps 100 --eval-every 100000 --save-every 250 --log-every 20 \
    --workers 1 --seed 0 --quiet "${recipe[@]}" > "$runs/fold_$s.log" 2>&1
}
fold jackson & fold nicolas & wait
fold theo & fold yweweler & wait
