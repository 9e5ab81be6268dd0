#!/usr/bin/env bash
# Remakes the four records of tutorial 14's section 6: the tutorial's own run, once per arm, 1,200 steps each.
# Usage: bash tutorials/results/hearing/make_records.sh [ARM ...]   (default: all four, one after the other)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mktemp -d)"
for arm in "${@:-pretrained+ctc scratch+ctc pretrained scratch}"; do
  for a in $arm; do
    MINISPEECHSEQ_TUTORIAL_OUT="$out" MINISPEECHSEQ_HEARING_ARM="$a" MPLBACKEND=Agg \
      python "$here/../../14_a_run_that_hears.py"
    cp "$out/14_$a.jsonl" "$here/$a.jsonl"
  done
done
rm -rf "$out"
