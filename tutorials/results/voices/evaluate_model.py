"""Every table of the model card's real-voices section for one model, as one JSON record.

    python tutorials/results/voices/evaluate_model.py MODEL CORPUS NAME RESULTS.jsonl

CORPUS is `minispeechseq data CORPUS --fsdd FSDD`. Greedy word error rates (WER) of MODEL on:
- each real speaker's isolated digits and joined strings (CORPUS/folds/SPEAKER/{isolated,joined}.tsv);
- the synthetic test split (CORPUS/test.tsv);
- the test strings said by espeak-ng voices held out of training (de, fr, es, it, pl, hi reading English words);
- the test strings said by another synthesizer, flite (voices kal, awb, rms, slt: two US men, a Scottish man, a
  US woman), when `flite` is installed; never used in training, only here;
- a noise curve: the synthetic test split with white, pink and babble noise at 30 / 20 / 10 / 5 dB SNR.
The derived audio (unseen voices, flite, noisy copies) is made once under CORPUS/eval/ and reused, so every model
is measured on the same audio. Appends {"model": NAME, "wer": {set: WER}, "cer": {...}, "seconds": ...}.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import soundfile

from minispeechseq import Processor, SpeechEncoderDecoderModel, load_audio
from minispeechseq.training.data import SAMPLING_RATE, ManifestDataset
from minispeechseq.training.evaluate import (
    noisy_manifest,
    transcribe_dataset,
    unseen_voice_manifest,
)
from minispeechseq.training.metrics import character_error_rate, word_error_rate

UNSEEN_ESPEAK = ("de", "fr", "es", "it", "pl", "hi")
FLITE_VOICES = ("kal", "awb", "rms", "slt")
NOISES = ("white", "pink", "babble")
SNRS_DB = (30, 20, 10, 5)


def flite_manifest(test_manifest: str, folder: str) -> str:
    """The test strings said by flite's voices (voice i takes every fourth string), resampled to 16 kHz."""
    path = os.path.join(folder, "flite.tsv")
    if os.path.exists(path):
        return path
    os.makedirs(os.path.join(folder, "wavs"), exist_ok=True)
    texts = ManifestDataset(test_manifest).texts
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(texts):
            voice = FLITE_VOICES[i % len(FLITE_VOICES)]
            raw = os.path.join(tmp, "raw.wav")
            subprocess.run(["flite", "-voice", voice, "-t", text, "-o", raw], check=True, capture_output=True)
            name = f"wavs/{i:06d}.wav"
            soundfile.write(os.path.join(folder, name), load_audio(raw, SAMPLING_RATE), SAMPLING_RATE,
                            subtype="PCM_16")
            lines.append(f"{name}\t{text}\tflite-{voice}\n")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(lines)
    os.replace(path + ".tmp", path)
    return path


def test_sets(corpus: str) -> dict[str, str]:
    """{set name: manifest}, making the derived audio on first use."""
    out = os.path.join(corpus, "eval")
    sets = {}
    for speaker in sorted(os.listdir(os.path.join(corpus, "folds"))):
        sets[f"{speaker}_isolated"] = os.path.join(corpus, "folds", speaker, "isolated.tsv")
        sets[f"{speaker}_joined"] = os.path.join(corpus, "folds", speaker, "joined.tsv")
    test = os.path.join(corpus, "test.tsv")
    sets["synthetic_test"] = test
    unseen = os.path.join(out, "unseen_espeak", "unseen.tsv")
    if not os.path.exists(unseen):
        unseen_voice_manifest(os.path.dirname(unseen), UNSEEN_ESPEAK)
    sets["unseen_espeak"] = unseen
    if shutil.which("flite"):
        sets["flite"] = flite_manifest(test, os.path.join(out, "flite"))
    for kind in NOISES:
        for snr in SNRS_DB:
            folder = os.path.join(out, "noisy", f"{kind}_{snr}dB")
            path = os.path.join(folder, f"noisy_{kind}_{snr:g}dB.tsv")
            if not os.path.exists(path):
                noisy_manifest(ManifestDataset(test), folder, kind, float(snr), seed=1)
            sets[f"{kind}_{snr}dB"] = path
    return sets


def main() -> int:
    model_dir, corpus, name, results = sys.argv[1:5]
    sets = test_sets(corpus)
    model = SpeechEncoderDecoderModel.from_pretrained(model_dir)
    processor = Processor.from_pretrained(model_dir)
    record = {"model": name, "path": model_dir, "wer": {}, "cer": {}, "utterances": {}}
    start = time.time()
    for test, manifest in sets.items():
        dataset = ManifestDataset(manifest)
        hyps = transcribe_dataset(model, processor, dataset, batch_size=32)
        record["wer"][test] = word_error_rate(dataset.texts, hyps)
        record["cer"][test] = character_error_rate(dataset.texts, hyps)
        record["utterances"][test] = len(dataset)
        print(f"{name} {test}: WER {record['wer'][test]:.2%}", flush=True)
    record["seconds"] = round(time.time() - start)
    with open(results, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
