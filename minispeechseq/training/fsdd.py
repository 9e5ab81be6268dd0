"""Real voices: the Free Spoken Digit Dataset (FSDD), read in its own naming, split by speaker, joined into strings.

FSDD (github.com/Jakobovski/free-spoken-digit-dataset; "Free Spoken Digit Dataset (FSDD), Zohar Jackson et al.",
CC BY-SA 4.0) holds isolated English digits recorded by people: `recordings/{digit}_{speaker}_{index}.wav`, mono,
8 kHz, trimmed to almost no silence. This module turns such a folder into training material:
1. `read_fsdd(folder)` lists the recordings with their digit and speaker (the file name is the only label).
2. `split_by_speaker` puts every recording of a speaker on one side: a recognizer is judged on voices it never
   heard, so a random split of files (the same voice on both sides) would measure memory, not hearing.
3. `joined_string` makes a digit *string* from one speaker's isolated recordings, joined with random pauses; the
   join points are exact word boundaries (what the timestamp tests need), up to the dataset's own trimming.
4. `write_real_corpus` writes both kinds into a corpus folder as manifests with a speaker column.

Shape legend: L audio samples.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import soundfile

from ..audio import load_audio
from .data import SAMPLING_RATE, ManifestDataset
from .digits import DIGIT_WORDS, TimedUtterance

FSDD_CREDIT = "Free Spoken Digit Dataset (FSDD), Zohar Jackson et al., CC BY-SA 4.0"
# `{digit}_{speaker}_{index}.wav`; speaker names are letters (jackson, nicolas, theo, yweweler, george, lucas).
_FSDD_NAME = re.compile(r"^([0-9])_([A-Za-z][A-Za-z0-9-]*)_([0-9]+)\.wav$")
# The takes the package's real samples (minispeechseq/bundled/samples/fsdd_*.wav) are joined from. The corpus
# keeps them out of every training manifest, so the bundled model has not heard the samples it ships with.
SAMPLE_TAKES = ("3_jackson_49.wav", "1_jackson_49.wav", "4_jackson_49.wav",
                "8_theo_49.wav", "6_theo_49.wav", "7_theo_49.wav", "5_theo_49.wav",
                "9_yweweler_49.wav", "0_yweweler_49.wav", "2_yweweler_49.wav")


@dataclass(frozen=True)
class Recording:
    path: str
    digit: int
    speaker: str
    take: int  # the index in the file name

    @property
    def word(self) -> str:
        return DIGIT_WORDS[self.digit]


def read_fsdd(folder: str | os.PathLike) -> list[Recording]:
    """Every `{digit}_{speaker}_{index}.wav` in `folder` (or in its `recordings/` subfolder, the dataset's own
    layout), sorted by speaker, digit and take. Other files are ignored; a folder with none is an error."""
    folder = os.fspath(folder)
    if os.path.isdir(os.path.join(folder, "recordings")):
        folder = os.path.join(folder, "recordings")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"No FSDD folder at {folder}; expected recordings named {{digit}}_{{speaker}}_{{index}}.wav.")
    found = []
    for name in os.listdir(folder):
        match = _FSDD_NAME.match(name)
        if match:
            digit, speaker, take = match.groups()
            found.append(Recording(os.path.join(folder, name), int(digit), speaker, int(take)))
    if not found:
        raise ValueError(f"{folder} holds no FSDD recording (files named {{digit}}_{{speaker}}_{{index}}.wav, e.g. 3_theo_12.wav).")
    return sorted(found, key=lambda r: (r.speaker, r.digit, r.take))


def speakers_of(recordings: Iterable[Recording]) -> list[str]:
    return sorted({r.speaker for r in recordings})


def split_by_speaker(recordings: Sequence[Recording], held_out: Iterable[str]) -> tuple[list[Recording], list[Recording]]:
    """(recordings of the other speakers, recordings of the `held_out` speakers): no speaker on both sides."""
    held_out = set(held_out)
    unknown = held_out - set(speakers_of(recordings))
    if unknown:
        raise ValueError(f"No recordings of speaker(s) {', '.join(sorted(unknown))}; the speakers are "
                         f"{', '.join(speakers_of(recordings))}.")
    kept = [r for r in recordings if r.speaker not in held_out]
    return kept, [r for r in recordings if r.speaker in held_out]


def joined_string(clips: Sequence[tuple[str, np.ndarray]], rng: random.Random,
                  pause_s: tuple[float, float] = (0.08, 0.4), edge_s: tuple[float, float] = (0.05, 0.3),
                  overlap_s: float = 0.0) -> TimedUtterance:
    """Words said one after another: (word, samples at 16 kHz) clips joined with random pauses of `pause_s`
    seconds, with `edge_s` of silence before the first and after the last.

    `overlap_s` > 0 lets a pause be *negative* by up to that much, i.e. the next clip starts before the previous
    one's trailing (near-)silence ends: FSDD's trimming leaves a few ms of room tone, and people do run words
    together. Overlapping clips are added, not cut, and a word's boundaries stay its clip's own first and last
    sample, so boundaries may then overlap by at most `overlap_s`."""
    if not clips:
        raise ValueError("joined_string needs at least one clip.")
    starts, at = [], int(rng.uniform(*edge_s) * SAMPLING_RATE)
    for k, (_, wave) in enumerate(clips):
        if k:
            gap = rng.uniform(-overlap_s, pause_s[1]) if overlap_s > 0 else rng.uniform(*pause_s)
            at = max(at + int(gap * SAMPLING_RATE), starts[-1] + 1)
        starts.append(at)
        at += len(wave)
    total = at + int(rng.uniform(*edge_s) * SAMPLING_RATE)
    audio = np.zeros(total, dtype=np.float32)  # (L,)
    words = []
    for (word, wave), start in zip(clips, starts):
        audio[start : start + len(wave)] += wave
        words.append((word, start / SAMPLING_RATE, (start + len(wave)) / SAMPLING_RATE))
    return TimedUtterance(audio, " ".join(w for w, _ in clips), words)


def speaker_strings(recordings: Sequence[Recording], count: int, seed: int, digits: tuple[int, int] = (2, 7),
                    **join_kwargs: float | tuple[float, float]) -> list[tuple[str, TimedUtterance, list[Recording]]]:
    """`count` joined strings of 2-7 digits per speaker in `recordings`, each from that speaker's own takes:
    [(speaker, utterance, the takes it is made of)]. The digits of a string are drawn at random, each word a random
    take of that digit."""
    rng = random.Random(seed)
    by_speaker: dict[str, dict[int, list[Recording]]] = {}
    for r in recordings:
        by_speaker.setdefault(r.speaker, {}).setdefault(r.digit, []).append(r)
    cache: dict[str, np.ndarray] = {}

    def clip(r: Recording) -> np.ndarray:
        if r.path not in cache:
            cache[r.path] = load_audio(r.path, SAMPLING_RATE)
        return cache[r.path]

    out = []
    for speaker in sorted(by_speaker):
        takes = by_speaker[speaker]
        available = sorted(takes)
        for _ in range(count):
            chosen = [rng.choice(takes[rng.choice(available)]) for _ in range(rng.randint(*digits))]
            out.append((speaker, joined_string([(r.word, clip(r)) for r in chosen], rng, **join_kwargs), chosen))
    return out


# ======================================================================================== the corpus on disk
@dataclass
class RealCorpusRecipe:
    """What decides the real-voice part of a corpus; saved as real/recipe.json."""

    seed: int = 0
    joined_per_speaker: int = 300  # joined strings made from each speaker's takes
    digits: tuple[int, int] = (2, 7)
    pause_s: tuple[float, float] = (0.08, 0.4)
    overlap_s: float = 0.03


def write_real_corpus(fsdd: str | os.PathLike, folder: str | os.PathLike,
                      recipe: RealCorpusRecipe | None = None) -> dict[str, str]:
    """Copy the FSDD recordings into `folder/real/isolated/` (byte-identical) and write joined strings into
    `folder/real/joined/`, with manifests `real/isolated.tsv` and `real/joined.tsv`
    (`audio_path<TAB>transcript<TAB>speaker`) and `real/joined_words.jsonl` (each joined string's word
    boundaries, in seconds, and the takes it is made of). Returns {"isolated": path, "joined": path}."""
    recipe = recipe or RealCorpusRecipe()
    recordings = read_fsdd(fsdd)
    real = os.path.join(os.fspath(folder), "real")
    for sub in ("isolated", "joined"):
        os.makedirs(os.path.join(real, sub), exist_ok=True)
    with open(os.path.join(real, "recipe.json"), "w", encoding="utf-8") as f:
        json.dump({**recipe.__dict__, "source": os.path.abspath(os.fspath(fsdd)), "credit": FSDD_CREDIT}, f, indent=2)

    isolated = []
    for r in recordings:
        name = os.path.basename(r.path)
        destination = os.path.join(real, "isolated", name)
        if not os.path.exists(destination):
            shutil.copyfile(r.path, destination)
        isolated.append(f"isolated/{name}\t{r.word}\t{r.speaker}\n")

    joined, words = [], []
    strings = speaker_strings(recordings, recipe.joined_per_speaker, recipe.seed, recipe.digits,
                              pause_s=recipe.pause_s, overlap_s=recipe.overlap_s)
    for i, (speaker, utterance, takes) in enumerate(strings):
        name = f"joined/{speaker}_{i:05d}.wav"
        soundfile.write(os.path.join(real, name), utterance.audio, SAMPLING_RATE, subtype="PCM_16")
        joined.append(f"{name}\t{utterance.text}\t{speaker}\n")
        words.append(json.dumps({"audio_path": name, "words": [list(w) for w in utterance.words],
                                 "takes": [os.path.basename(r.path) for r in takes]}) + "\n")

    paths = {"isolated": os.path.join(real, "isolated.tsv"), "joined": os.path.join(real, "joined.tsv")}
    for key, lines in (("isolated", isolated), ("joined", joined)):
        with open(paths[key], "w", encoding="utf-8") as f:
            f.write("audio_path\ttranscript\tspeaker\n")
            f.writelines(lines)
    with open(os.path.join(real, "joined_words.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(words)
    return paths


def _read_rows(manifest: str) -> list[tuple[str, str, str]]:
    """(absolute audio path, transcript, speaker) rows of a manifest."""
    dataset = ManifestDataset(manifest)
    return list(zip(dataset.paths, dataset.texts, dataset.speakers))


def write_mixed_manifests(folder: str | os.PathLike, real_weight: int = 1,
                          held_out_takes: Iterable[str] = SAMPLE_TAKES) -> dict[str, str]:
    """The mixed corpus's manifests, from its synthetic split (`train.tsv`, espeak-ng) and its real part
    (`real/*.tsv`, from `write_real_corpus`):
    - `mixed/train.tsv`: synthetic train + every real speaker's isolated digits and joined strings, the real
      rows listed `real_weight` times (the sampling weight: a row listed twice is drawn twice per epoch);
    - `folds/SPEAKER/train.tsv`: the same without SPEAKER (leave-one-speaker-out), and `folds/SPEAKER/isolated.tsv`
      and `folds/SPEAKER/joined.tsv`: SPEAKER's own recordings, the fold's test sets.
    `held_out_takes` (recording file names) are in no training manifest: neither those recordings nor a joined
    string made with one of them (by default the takes of the bundled samples). The test sets keep everything.
    Paths are written relative to each manifest's own folder. Returns {name: path}."""
    folder = os.path.abspath(os.fspath(folder))
    if real_weight < 1:
        raise ValueError(f"real_weight must be at least 1 (how many times each real row is listed), got {real_weight}.")
    synthetic = _read_rows(os.path.join(folder, "train.tsv"))
    real = {kind: _read_rows(os.path.join(folder, "real", f"{kind}.tsv")) for kind in ("isolated", "joined")}
    speakers = sorted({speaker for rows in real.values() for _, _, speaker in rows})
    held_out = set(held_out_takes)
    with open(os.path.join(folder, "real", "joined_words.jsonl"), encoding="utf-8") as f:
        touched = {os.path.join(folder, "real", record["audio_path"]) for record in map(json.loads, f)
                   if held_out & set(record["takes"])}
    heard = {kind: [row for row in rows if os.path.basename(row[0]) not in held_out and row[0] not in touched]
             for kind, rows in real.items()}

    def write(path: str, rows: list[tuple[str, str, str]]) -> str:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        base = os.path.dirname(path)
        with open(path, "w", encoding="utf-8") as f:
            f.write("audio_path\ttranscript\tspeaker\n")
            f.writelines(f"{os.path.relpath(p, base)}\t{text}\t{speaker}\n" for p, text, speaker in rows)
        return path

    def train_rows(without: str | None) -> list[tuple[str, str, str]]:
        kept = [row for kind in ("isolated", "joined") for row in heard[kind] if row[2] != without]
        return synthetic + kept * real_weight

    out = {"mixed": write(os.path.join(folder, "mixed", "train.tsv"), train_rows(None))}
    for speaker in speakers:
        fold = os.path.join(folder, "folds", speaker)
        out[f"{speaker}/train"] = write(os.path.join(fold, "train.tsv"), train_rows(speaker))
        for kind in ("isolated", "joined"):
            out[f"{speaker}/{kind}"] = write(os.path.join(fold, f"{kind}.tsv"),
                                             [row for row in real[kind] if row[2] == speaker])
    return out
