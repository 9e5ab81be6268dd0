#!/usr/bin/env bash
# The shipped model: fine-tune the synthetic-voices model on the whole mixed corpus (every real speaker, minus
# the bundled samples' takes) with the recipe's augmentation, then measure every table of the model card.
#   bash tutorials/results/voices/final.sh CORPUS INIT_MODEL RUNS_DIR [STEPS]
set -euo pipefail
corpus=$1 init=$2 runs=$3 steps=${4:-3000}
here=$(dirname "$0")
mkdir -p "$runs"
read -r -a recipe < "$here/recipe_flags.txt"
python "$here/run_arm.py" final "$runs" "$runs/final.jsonl" --test "valid=$corpus/valid.tsv" -- \
  --init "$init" --data "$corpus" --train-manifest "$corpus/mixed/train.tsv" --steps "$steps" \
  --batch-size 16 --lr 1e-3 --warmup-steps 100 --eval-every 500 --save-every 250 --log-every 20 \
  --workers 1 --seed 0 --quiet "${recipe[@]}" > "$runs/final.log" 2>&1
python "$here/evaluate_model.py" "$runs/final/final/final" "$corpus" final "$runs/models.jsonl" >> "$runs/final.log" 2>&1
