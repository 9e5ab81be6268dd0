"""The labelled sets and test sets of the warm-start comparison (issue: "what pretraining buys").

    python tutorials/results/warmstart/make_sets.py CORPUS

CORPUS is `minispeechseq data CORPUS --fsdd FSDD`. For each real speaker S (leave-one-speaker-out), the rows of
CORPUS/folds/S/train.tsv (synthetic strings and the other three speakers' recordings, never S) are shuffled once
(seed 0) and their first 50, 200 and 1,000 written as CORPUS/folds/S/labelled_N.tsv: the sets are nested, so a
larger set only adds rows. The held-out synthetic voices: the recipe's test strings said by espeak-ng voices of
other languages reading English (de, fr, es, it, pl, hi; never in any training set), 150 of them, in
CORPUS/heldout_voices/unseen150.tsv.
"""

import os
import random
import sys

from minispeechseq.training.evaluate import unseen_voice_manifest

SIZES = (50, 200, 1000)
HELD_OUT_VOICES = ("de", "fr", "es", "it", "pl", "hi")


def main() -> int:
    corpus = sys.argv[1]
    for speaker in sorted(os.listdir(os.path.join(corpus, "folds"))):
        folder = os.path.join(corpus, "folds", speaker)
        with open(os.path.join(folder, "train.tsv"), encoding="utf-8") as f:
            header, *rows = f.read().splitlines()
        random.Random(0).shuffle(rows)
        for n in SIZES:
            with open(os.path.join(folder, f"labelled_{n}.tsv"), "w", encoding="utf-8") as f:
                f.write("\n".join([header, *rows[:n]]) + "\n")
            real = sum(1 for r in rows[:n] if r.split("\t")[-1])
            print(f"{speaker} {n}: {real} real rows, {n - real} synthetic", flush=True)
    voices = os.path.join(corpus, "heldout_voices")
    manifest = unseen_voice_manifest(voices, HELD_OUT_VOICES)
    with open(manifest, encoding="utf-8") as f:
        lines = f.read().splitlines()
    with open(os.path.join(voices, "unseen150.tsv"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines[:150]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
