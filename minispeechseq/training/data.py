"""Training data, for any corpus given as manifests: a dataset, length-bucketed batches, augmentation, collation.

The path of one utterance, top to bottom:
1. `ManifestDataset(path)` reads a manifest: one `audio_path<TAB>transcript[<TAB>speaker]` per line, paths relative
   to the manifest (the optional speaker column is what splits real voices by speaker, see fsdd.py).
   (`digits.py` makes such a corpus with espeak-ng; any other corpus in this layout trains the same way.)
2. `BucketBatchSampler` groups utterances of similar length, so a batch holds little padding. Its batches are a
   pure function of (seed, epoch): a resumed training recomputes exactly the order it was interrupted in.
3. `Collator` turns a list of utterances into model inputs: augmentation (training only), padding with an attention
   mask (the feature extractor), and labels with -100 on padding.
4. `BatchesDataset` hands collated batches to a DataLoader, whose workers then load and augment ahead of the loop.

Shape legend: B batch, L audio samples, S label tokens.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile
import torch

from ..audio import Wav2Vec2FeatureExtractor, load_audio

SAMPLING_RATE = 16000  # what the corpus is read at, and what the feature extractor expects
_HEADERS = ("audio_path\ttranscript", "audio_path\ttranscript\tspeaker")


# ============================================================================================ the manifest
class ManifestDataset(torch.utils.data.Dataset):
    """Rows of a TSV manifest (`audio_path<TAB>transcript`, optionally `<TAB>speaker`; paths relative to the
    manifest's folder).

    Item i is {"index": i, "audio": float32 (N,) at 16 kHz, "text": str}; `speakers[i]` is its speaker or "".
    Audio is read when asked for (a few thousand short files read fast); `lengths` comes from the file headers,
    without decoding them."""

    def __init__(self, manifest: str | os.PathLike, sampling_rate: int = SAMPLING_RATE):
        manifest = os.fspath(manifest)
        if not os.path.isfile(manifest):
            raise FileNotFoundError(f"No manifest at {manifest}; expected a TSV of `audio_path<TAB>transcript` lines.")
        self.sampling_rate = sampling_rate
        root = os.path.dirname(os.path.abspath(manifest))
        self.manifest = manifest
        self.paths: list[str] = []
        self.texts: list[str] = []
        self.speakers: list[str] = []
        self.line_numbers: list[int] = []  # each item's line in the manifest, for the errors
        with open(manifest, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                line = line.rstrip("\n").rstrip("\r")
                if not line.strip() or (number == 1 and line in _HEADERS):
                    continue  # blank lines, and an optional header
                fields = line.split("\t")
                if len(fields) not in (2, 3) or not fields[0]:
                    raise ValueError(
                        f"{manifest}, line {number}: expected `audio_path<TAB>transcript` (two tab-separated "
                        f"fields, optionally a third: the speaker), got {line!r}."
                    )
                path = os.path.join(root, fields[0])
                if not os.path.isfile(path):
                    raise FileNotFoundError(f"{manifest}, line {number}: no audio file at {path}.")
                self.paths.append(path)
                self.texts.append(fields[1].strip())
                self.speakers.append(fields[2].strip() if len(fields) == 3 else "")
                self.line_numbers.append(number)
        if not self.paths:
            raise ValueError(f"{manifest} lists no utterances; expected `audio_path<TAB>transcript` lines.")
        self._lengths: list[int] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            audio = load_audio(self.paths[index], self.sampling_rate)
        except (OSError, ValueError, RuntimeError) as e:  # RuntimeError: soundfile's LibsndfileError
            raise self._error(index, e) from None
        return {"index": index, "audio": audio, "text": self.texts[index]}

    def _error(self, index: int, error: Exception) -> ValueError:
        """An unreadable audio file, named with its manifest line (a corpus has thousands of files)."""
        return ValueError(f"{self.manifest}, line {self.line_numbers[index]}: cannot read {self.paths[index]}: {error}")

    @property
    def lengths(self) -> list[int]:
        """Samples per utterance at `sampling_rate` (from the headers), for length bucketing."""
        if self._lengths is None:
            lengths = []
            for index, path in enumerate(self.paths):
                try:
                    info = soundfile.info(path)
                except (OSError, RuntimeError) as e:  # RuntimeError: soundfile's LibsndfileError
                    raise self._error(index, e) from None
                lengths.append(round(info.frames * self.sampling_rate / info.samplerate))
            self._lengths = lengths
        return self._lengths


# ============================================================================================ batching
class BucketBatchSampler:
    """Batches of utterances of similar length, as lists of dataset indices.

    Each epoch: shuffle, cut into pools of `pool_batches` batches, sort each pool by length, cut it into batches,
    shuffle the batches. Sorting within a pool (not globally) keeps batches random while padding stays small.
    With `shortest_first`, epoch 0 instead walks the whole set from shortest to longest: a fresh model learns
    the alignment of audio to text far more easily on one- and two-digit utterances first.

    Everything depends on (seed, epoch) only, never on global RNG state: a resumed run recomputes the same batches.
    For DistributedDataParallel each rank takes every world_size-th item of each global batch (`rank_share`).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        shortest_first: bool = False,
        pool_batches: int = 50,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        if len(lengths) == 0:
            raise ValueError("Cannot batch an empty dataset.")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.shortest_first = shortest_first
        self.pool_batches = pool_batches

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)  # batches per epoch

    def batches(self, epoch: int) -> list[list[int]]:
        order = list(range(len(self.lengths)))
        if not self.shuffle or (self.shortest_first and epoch == 0):
            if self.shuffle:  # shortest first: sorted by length (ties in index order, so deterministic)
                order.sort(key=lambda i: self.lengths[i])
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        rng = random.Random(self.seed * 1_000_003 + epoch)
        rng.shuffle(order)
        pool = self.batch_size * self.pool_batches
        out = []
        for start in range(0, len(order), pool):
            chunk = sorted(order[start : start + pool], key=lambda i: self.lengths[i])
            out += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        rng.shuffle(out)
        return out


def rank_share(batch: list[int], rank: int, world_size: int) -> list[int]:
    """This rank's part of a global batch (every world_size-th item), so all ranks together see the whole batch."""
    return batch[rank::world_size]


# ========================================================================================== augmentation
@dataclass
class Augmentation:
    """Training-time changes to a clean synthetic waveform, so the model does not learn espeak-ng's studio quiet."""

    max_silence_s: float = 0.3  # leading and trailing silence, each uniform in [0, max]
    gain_db: tuple[float, float] = (-6.0, 6.0)
    snr_db: tuple[float, float] = (15.0, 40.0)  # white noise, relative to the speech's power

    def __call__(self, wave: np.ndarray, rng: np.random.Generator, others: Sequence[np.ndarray] = ()) -> np.ndarray:
        """`others` (other utterances) is unused here; `augment.VoiceAugmentation` mixes them in as babble."""
        lead, trail = (int(rng.uniform(0, self.max_silence_s) * SAMPLING_RATE) for _ in range(2))
        gain = 10.0 ** (rng.uniform(*self.gain_db) / 20.0)  # dB of amplitude
        speech = wave * gain
        padded = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(trail, np.float32)])  # (N',)
        # Noise power from the speech part only (the added silence would lower the power and raise the noise).
        signal_power = float(np.mean(speech.astype(np.float64) ** 2)) + 1e-12
        noise_power = signal_power / 10.0 ** (rng.uniform(*self.snr_db) / 10.0)
        noise = rng.standard_normal(padded.shape[0]) * np.sqrt(noise_power)
        return (padded + noise).astype(np.float32)


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The augmentation randomness of one utterance in one epoch: independent of batch, rank, worker and resume."""
    return np.random.default_rng([seed, epoch, index])


# ============================================================================================= collation
class Collator:
    """A list of dataset items -> {"input_values" (B, L), "labels" (B, S)} (+ "attention_mask" (B, L) when the
    feature extractor's config asks for one).

    Labels are the transcript's tokens followed by </s>, padded with -100 (ignored by the loss). The model
    shifts them right behind decoder_start_token_id for teacher forcing."""

    def __init__(
        self,
        feature_extractor: Wav2Vec2FeatureExtractor,
        tokenizer: Any,
        augmentation: Augmentation | None = None,
        seed: int = 0,
    ):
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is None:
            eos = getattr(tokenizer, "sep_token_id", None)  # BERT-style tokenizers end with [SEP]
        if eos is None:
            raise ValueError("The tokenizer has neither an eos_token_id nor a sep_token_id to end the labels with.")
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.eos_token_id = eos
        self.augmentation = augmentation
        self.seed = seed

    def __call__(self, items: list[dict[str, Any]], epoch: int = 0) -> dict[str, torch.Tensor]:
        waves = [item["audio"] for item in items]
        if self.augmentation is not None:
            # Each utterance's babble (if its augmentation draws babble) is the rest of its batch, said at once.
            waves = [self.augmentation(w, item_rng(self.seed, epoch, item["index"]), waves[:k] + waves[k + 1:])
                     for k, (w, item) in enumerate(zip(waves, items))]
        # The feature extractor's config decides the mask (see audio.py): layer-norm encoders such as the tiny
        # preset get one, so padding stays out of attention and of the normalization statistics; group-norm
        # checkpoints were trained without one and get zero padding only.
        with_mask = self.feature_extractor.return_attention_mask
        features = self.feature_extractor(waves, sampling_rate=SAMPLING_RATE, padding=True,
                                          return_attention_mask=with_mask, return_tensors="pt")
        token_lists = [list(self.tokenizer.encode(item["text"], add_special_tokens=False)) + [self.eos_token_id]
                       for item in items]
        labels = torch.full((len(items), max(map(len, token_lists))), -100, dtype=torch.long)  # (B, S)
        for row, tokens in zip(labels, token_lists):
            row[: len(tokens)] = torch.tensor(tokens)
        batch = {"input_values": features["input_values"], "labels": labels}
        if with_mask:
            batch["attention_mask"] = features["attention_mask"].long()
        return batch


class BatchesDataset(torch.utils.data.Dataset):
    """Item i = the collated batch i of a fixed list: lets a DataLoader's workers load and augment ahead, in order."""

    def __init__(self, dataset: ManifestDataset, batches: list[list[int]], collator: Collator, epoch: int):
        self.dataset, self.batches, self.collator, self.epoch = dataset, batches, collator, epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.collator([self.dataset[j] for j in self.batches[i]], epoch=self.epoch)
