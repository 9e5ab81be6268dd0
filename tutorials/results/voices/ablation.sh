#!/usr/bin/env bash
# The augmentation ablation of the real-voices recipe: one factor at a time against the same base, same seed and
# the same budget (1,200 steps), each arm fine-tuning the synthetic-voices model (the bundled model before this recipe) with one
# real speaker held out (nicolas). Two arms run at once, one thread each.
#   bash tutorials/results/voices/ablation.sh CORPUS INIT_MODEL RUNS_DIR
# CORPUS is `minispeechseq data CORPUS --fsdd FSDD`; CORPUS/noisy_valid/{white,babble} hold the validation split
# at 10 dB SNR (evaluate.noisy_manifest, seed 1). Results are appended to RUNS_DIR/ablation.jsonl.
set -euo pipefail
corpus=$1 init=$2 runs=$3
here=$(dirname "$0")
mkdir -p "$runs"
export OMP_NUM_THREADS=1
held=nicolas
tests=(--test "${held}_isolated=$corpus/folds/$held/isolated.tsv" --test "${held}_joined=$corpus/folds/$held/joined.tsv"
       --test "valid=$corpus/valid.tsv" --test "white10=$corpus/noisy_valid/white/noisy_white_10dB.tsv"
       --test "babble10=$corpus/noisy_valid/babble/noisy_babble_10dB.tsv")
base=(--init "$init" --data "$corpus" --train-manifest "$corpus/folds/$held/train.tsv" --steps 1200 --batch-size 16
      --lr 1e-3 --warmup-steps 100 --eval-every 100000 --save-every 200 --log-every 20 --workers 1 --seed 0 --quiet)
arm() {  # NAME [extra train args...]
  local name=$1; shift
  python "$here/run_arm.py" "$name" "$runs" "$runs/ablation.jsonl" "${tests[@]}" -- "${base[@]}" "$@" > "$runs/$name.log" 2>&1
}
arm base & arm noise --snr-db 0 30 --noise-types white,pink,brown,babble & wait
arm speed --speed-p 0.5 & arm formant --formant-p 0.5 & wait
arm channel --band-p 0.3 --eq-p 0.3 & arm reverb --reverb-p 0.3 & wait
arm specaugment --mask-time-prob 0.15 --mask-feature-prob 0.05 --mask-feature-length 16 & wait
