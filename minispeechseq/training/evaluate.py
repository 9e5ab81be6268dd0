"""Word and character error rates of a model: on a manifest, on the spoken-digits test strings said by voices of
your choice (e.g. voices the model never heard), or with noise added. The command line is tools/evaluate.py
(`minispeechseq evaluate`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import soundfile

from ..processor import Processor
from ..recognition.recognizer import transcribe_batch
from ..speech_encoder_decoder import SpeechEncoderDecoderModel
from .augment import add_noise, make_noise
from .data import SAMPLING_RATE, ManifestDataset
from .digits import DigitsRecipe, _render_group, plan_digits_corpus


def transcribe_dataset(model: SpeechEncoderDecoderModel, processor: Processor, dataset: ManifestDataset,
                       batch_size: int = 32, **generate_kwargs: Any) -> list[str]:
    """One transcript per utterance of `dataset`, in order (its audio read one batch at a time)."""
    waveforms = (dataset[i]["audio"] for i in range(len(dataset)))
    return transcribe_batch(model, processor, waveforms, batch_size=batch_size, **generate_kwargs)


def unseen_voice_manifest(folder: str, voices: Sequence[str], seed: int = 0, num_utterances: int = 4000) -> str:
    """The recipe's test strings (the same ones as the test split: strings and splits are drawn before voices)
    rendered with `voices` instead of the English ones. Returns the manifest path."""
    plan = [u for u in plan_digits_corpus(DigitsRecipe(num_utterances=num_utterances, seed=seed), voices)
            if u.split == "test"]
    os.makedirs(os.path.join(folder, "wavs"), exist_ok=True)
    for i in range(0, len(plan), 8):
        _render_group(folder, plan[i : i + 8])
    path = os.path.join(folder, "unseen.tsv")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{u.audio_path}\t{u.text}\n" for u in plan)
    return path


def noisy_manifest(dataset: ManifestDataset, folder: str, kind: str, snr_db: float, seed: int = 0) -> str:
    """Every utterance of `dataset` with `kind` noise (white, pink, brown, or babble made from the other
    utterances) added at `snr_db`, written under `folder`; returns the new manifest's path. Seeded, so the same
    arguments make the same audio."""
    os.makedirs(os.path.join(folder, "noisy"), exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(len(dataset)):
        wave = dataset[i]["audio"]
        others = []
        if kind == "babble":  # four other utterances of the set talk in the background
            others = [dataset[int(j)]["audio"] for j in rng.choice(len(dataset), size=4) if j != i]
        noise = make_noise(kind, len(wave), rng, others or [wave])
        name = f"noisy/{i:06d}.wav"
        soundfile.write(os.path.join(folder, name), add_noise(wave, noise, snr_db), SAMPLING_RATE, subtype="FLOAT")
        speaker = f"\t{dataset.speakers[i]}" if dataset.speakers[i] else ""
        lines.append(f"{name}\t{dataset.texts[i]}{speaker}\n")
    path = os.path.join(folder, f"noisy_{kind}_{snr_db:g}dB.tsv")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(lines)
    return path
