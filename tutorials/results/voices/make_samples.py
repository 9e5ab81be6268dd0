"""The package's real samples: three digit strings joined from FSDD recordings that no training manifest holds
(fsdd.SAMPLE_TAKES), written into minispeechseq/bundled/samples/ with their transcripts and credit.

A joined string is digitally silent between its words, which no microphone is: a pink-noise floor 40 dB below the
speech (a quiet room), band-limited to 4 kHz like the 8 kHz recordings it joins, is added over the whole file.

    python tutorials/results/voices/make_samples.py FSDD_FOLDER
"""

import os
import random
import sys

import numpy as np
import soundfile

from minispeechseq import load_audio
from minispeechseq.training.augment import add_noise, band_limit, coloured_noise
from minispeechseq.training.data import SAMPLING_RATE
from minispeechseq.training.fsdd import (
    FSDD_CREDIT,
    SAMPLE_TAKES,
    joined_string,
    read_fsdd,
)

SAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "minispeechseq", "bundled", "samples")


def main() -> int:
    recordings = {os.path.basename(r.path): r for r in read_fsdd(sys.argv[1])}
    by_speaker: dict[str, list] = {}
    for take in SAMPLE_TAKES:  # in the order of the string each speaker says
        r = recordings[take]
        by_speaker.setdefault(r.speaker, []).append(r)
    rng = random.Random(0)
    noise_rng = np.random.default_rng(0)
    rows = []
    for speaker, takes in by_speaker.items():
        utterance = joined_string([(r.word, load_audio(r.path, SAMPLING_RATE)) for r in takes], rng,
                                  pause_s=(0.15, 0.35), edge_s=(0.2, 0.3))
        name = f"fsdd_{speaker}.wav"
        speech = np.concatenate([load_audio(r.path, SAMPLING_RATE) for r in takes])
        floor = band_limit(coloured_noise(len(utterance.audio), "pink", noise_rng), None, 3800)
        audio = add_noise(utterance.audio, floor, 40.0, speech_power=float(np.mean(speech.astype(np.float64) ** 2)))
        soundfile.write(os.path.join(SAMPLES, name), audio, SAMPLING_RATE, subtype="PCM_16")
        rows.append(f"{name}\t{utterance.text}\n")
        print(name, utterance.text, f"{len(utterance.audio) / SAMPLING_RATE:.2f} s", [os.path.basename(r.path) for r in takes])
    path = os.path.join(SAMPLES, "transcripts.tsv")
    with open(path, encoding="utf-8") as f:
        kept = [line for line in f if not line.startswith("fsdd_")]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(kept + rows)
    print(FSDD_CREDIT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
