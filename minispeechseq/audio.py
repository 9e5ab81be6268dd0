"""From a sound file to the `input_values` a wav2vec2/HuBERT encoder reads.

Two steps, each a public name:
1. `load_audio(path)`: any file libsndfile reads (wav, flac, ogg...), at any rate and channel count, becomes one
   float32 mono waveform at 16 kHz, within bounds checked from the header first (files/audiofile.py).
2. `Wav2Vec2FeatureExtractor(...)(waveforms)`: each waveform normalized to zero mean and unit variance, plus an
   optional attention mask. As in transformers, by default one float32 array per waveform; with `padding=True,
   return_tensors="pt"`, one padded (B, L) tensor. `.pad(...)` pads arrays made earlier into such a batch (the
   data collator of transformers' fine-tuning recipe).
   Its fields are the keys of transformers' `preprocessor_config.json`, so a checkpoint's file reads straight in.

Shape legend: B batch, L audio samples (the encoder reads raw samples at 16 kHz).

Which checkpoints want an attention mask? The config says (`return_attention_mask`), and the reason is the first
conv layer's normalization (transformers' Wav2Vec2FeatureExtractor docstring, and fairseq's wav2vec2 configs):
- `feat_extract_norm="group"` (wav2vec2-base, HuBERT-base): GroupNorm normalizes each channel over *all* time steps,
  so padding zeros enter every frame's statistics whatever mask we pass afterwards. These models were trained on
  unpadded audio without a mask; give them no mask (`return_attention_mask=False`), just zero padding.
- `feat_extract_norm="layer"` (large-lv60, XLS-R): LayerNorm is per position, so padding stays separable and the
  mask keeps it out of attention (`return_attention_mask=True`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch

from .files.audiofile import load_audio  # noqa: F401 (part of this module's public surface)
from .batching import BatchFeature, batch_columns, check_mask_values, check_return_tensors, padding_strategy, \
    stack_columns
from .files.readers import read_json
from .files.resolve import PREPROCESSING_FILES, resolve_folder

# Everything a caller can hand us as one waveform.
Waveform = np.ndarray | torch.Tensor | list | tuple

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"


PROCESSOR_CONFIG_NAME = "processor_config.json"


# ====================================================================================== waveform normalization
def _as_float32(wave: Waveform, index: int) -> np.ndarray:
    """One waveform as a 1-D float32 array, with the checks every later step relies on."""
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu().numpy()
    if isinstance(wave, (list, tuple)):
        # A list of numbers is values, not PCM codes: no scaling.
        wave = np.asarray(wave, dtype=np.float32)
    if not isinstance(wave, np.ndarray):
        raise ValueError(f"Waveform {index} is a {type(wave).__name__}; expected a 1-D numpy array, tensor or list of floats.")
    if wave.ndim != 1:
        raise ValueError(f"Waveform {index} has shape {wave.shape}; expected one 1-D mono waveform (downmix stereo first).")
    if wave.size == 0:
        raise ValueError(f"Waveform {index} is empty; expected at least one sample.")
    if wave.dtype.kind == "i":
        # Integer arrays are PCM codes (what soundfile gives with dtype="int16"/"int32"). We scale them to [-1, 1), as
        # load_audio and libsndfile do, so the encoder sees the range it was trained on. transformers only casts
        # (int16 values in the thousands, and float64 output); after do_normalize both agree, up to the 1e-7 epsilon.
        wave = wave.astype(np.float32) / np.float32(2 ** (8 * wave.dtype.itemsize - 1))
    elif wave.dtype == np.uint8:
        wave = (wave.astype(np.float32) - 128.0) / 128.0  # 8-bit WAV is offset binary, centred on 128.
    elif wave.dtype.kind != "f":
        raise ValueError(f"Waveform {index} has dtype {wave.dtype}; expected float or integer PCM samples.")
    # float64 -> float32 before padding: transformers casts at the same point, so normalization runs in float32 in both.
    wave = wave.astype(np.float32, copy=False)
    if not np.isfinite(wave).all():
        raise ValueError(f"Waveform {index} contains NaN or inf samples; expected finite audio.")
    return wave


def _as_batch(raw_speech: Any) -> list[np.ndarray]:
    """Decide single vs batch the way transformers does: a 2-D array is a batch of rows; a list of arrays/lists is a
    batch; a 1-D array or a list of floats is one waveform. (We treat a 2-D tensor like a 2-D array; transformers
    would wrap it as a single item and fail later.)"""
    if isinstance(raw_speech, (np.ndarray, torch.Tensor)):
        if raw_speech.ndim > 2:
            raise ValueError(
                f"raw_speech has shape {tuple(raw_speech.shape)}; expected one mono waveform (L,) or a batch (B, L)."
            )
        waves = list(raw_speech) if raw_speech.ndim == 2 else [raw_speech]
    elif isinstance(raw_speech, (list, tuple)):
        if len(raw_speech) == 0:
            raise ValueError("raw_speech is an empty list; expected a waveform or a list of waveforms.")
        is_batch = isinstance(raw_speech[0], (np.ndarray, torch.Tensor, list, tuple))
        waves = list(raw_speech) if is_batch else [raw_speech]
    else:
        raise ValueError(f"raw_speech is a {type(raw_speech).__name__}; expected a numpy array, tensor, or list of them.")
    return [_as_float32(w, i) for i, w in enumerate(waves)]


NORM_BLOCK = 1 << 20  # samples per float64 block of the statistics: 8 MiB, whatever the recording's length


def zero_mean_unit_var(wave: np.ndarray, real: slice, padding_value: float | None) -> np.ndarray:
    """(x - mean) / sqrt(var + 1e-7), the statistics taken over `wave[real]`.

    The 1e-7 (transformers' constant) keeps an all-zero signal finite: 0 / sqrt(1e-7) = 0. With `padding_value`
    given, positions outside `real` are reset to it afterwards. The sums run in float64, a block at a time:
    in float32 (transformers) the squares of samples above 1.8e19 overflow, so a loud recording became all zeros,
    and near float32's maximum (3e38) the mean itself overflowed to NaN.
    """
    part = wave[real]
    blocks = range(0, len(part), NORM_BLOCK)
    mean = np.float64(sum(part[i : i + NORM_BLOCK].sum(dtype=np.float64) for i in blocks) / len(part))
    var = sum(np.square(part[i : i + NORM_BLOCK] - mean).sum() for i in blocks) / len(part)  # float64 blocks
    scale = 1.0 / np.sqrt(var + 1e-7)
    normed = np.empty(wave.shape, dtype=np.float32)
    for i in range(0, len(wave), NORM_BLOCK):
        normed[i : i + NORM_BLOCK] = (wave[i : i + NORM_BLOCK] - mean) * scale
    if padding_value is not None:
        keep = np.zeros(wave.shape, dtype=bool)
        keep[real] = True
        normed[~keep] = padding_value
    return normed


# ================================================================================= Wav2Vec2FeatureExtractor
class Wav2Vec2FeatureExtractor:
    """Pads and normalizes raw 16 kHz waveforms for wav2vec2 / HuBERT (fields = transformers' preprocessor_config.json)."""

    model_input_names = ["input_values", "attention_mask"]

    def __init__(
        self,
        feature_size: int = 1,
        sampling_rate: int = 16000,
        padding_value: float = 0.0,
        do_normalize: bool = True,
        return_attention_mask: bool = False,
        padding_side: str = "right",
        **extra: Any,
    ) -> None:
        if feature_size != 1:
            raise ValueError(f"feature_size={feature_size}: the wav2vec2 extractor reads raw mono samples (feature_size=1).")
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side={padding_side!r}; expected 'right' or 'left'.")
        self.feature_size = feature_size
        self.sampling_rate = sampling_rate  # the rate the checkpoint was trained at; inputs must match it
        self.padding_value = padding_value
        self.do_normalize = do_normalize  # zero mean, unit variance per utterance (most checkpoints: True)
        self.return_attention_mask = return_attention_mask  # see the module docstring: group norm -> False
        self.padding_side = padding_side
        # Keys we do not model (feature_extractor_type, processor_class...) survive a save/load round trip.
        self.extra = dict(extra)

    # ------------------------------------------------------------------------------------------- files
    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        out.update(
            feature_size=self.feature_size,
            sampling_rate=self.sampling_rate,
            padding_value=self.padding_value,
            do_normalize=self.do_normalize,
            return_attention_mask=self.return_attention_mask,
            padding_side=self.padding_side,
        )
        out.setdefault("feature_extractor_type", "Wav2Vec2FeatureExtractor")  # lets transformers' Auto classes read it
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Wav2Vec2FeatureExtractor:
        return cls(**d)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, *, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, local_files_only: bool = False,
                        **overrides: Any) -> Wav2Vec2FeatureExtractor:
        """Read `folder/preprocessor_config.json` (or that file's path directly), or a hub id's (`revision`,
        `cache_dir`, `local_files_only` as in transformers)."""
        found = read_extractor_config(folder, revision=revision, cache_dir=cache_dir,
                                      local_files_only=local_files_only)
        return cls.from_dict({**found, **overrides})

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, PREPROCESSOR_CONFIG_NAME), "w", encoding="utf-8") as f:
            f.write(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({json.dumps(self.to_dict(), sort_keys=True)})"

    # ------------------------------------------------------------------------------------------- call
    def __call__(
        self,
        raw_speech: Any,
        sampling_rate: int | None = None,
        padding: bool | str = False,
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
    ) -> BatchFeature:
        """Waveform(s) -> BatchFeature with `input_values` and, when asked, `attention_mask` (1 = real sample).

        The defaults are transformers': no padding and no tensors, i.e. one float32 array per waveform (what a
        dataset `map` stores; a collator then calls `pad`). `padding=True` with `return_tensors="pt"` gives the
        (B, L) tensors a model reads.
        """
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(
                f"The audio is at {sampling_rate} Hz but this model was trained at {self.sampling_rate} Hz; "
                f"resample it first (load_audio(path, sampling_rate={self.sampling_rate}) does)."
            )
        check_return_tensors(return_tensors)
        with_mask = self.return_attention_mask if return_attention_mask is None else return_attention_mask
        waves = _as_batch(raw_speech)
        masks = [np.ones(len(w), dtype=np.int32) for w in waves]
        strategy, waves, masks = self._pad_rows(waves, masks, padding, max_length, truncation, pad_to_multiple_of)

        if self.do_normalize:
            normalized = []
            for wave, mask in zip(waves, masks):
                if with_mask and strategy != "do_not_pad":
                    # With a mask: statistics over the real samples only, padding reset to padding_value after.
                    # transformers slices `vector[:length]` even for padding_side="left" (a bug: it normalizes over
                    # the leading padding and zeroes real samples); we use the real slice on either side.
                    real = np.flatnonzero(mask)
                    wave = zero_mean_unit_var(wave, slice(real[0], real[-1] + 1), self.padding_value)
                else:
                    # Without a mask transformers normalizes the *padded* row, padding included (it pads first);
                    # group-norm checkpoints were fine-tuned on exactly this, so we keep it.
                    wave = zero_mean_unit_var(wave, slice(None), None)
                normalized.append(wave.astype(np.float32, copy=False))
            waves = normalized

        columns = {"input_values": waves}
        if with_mask:
            columns["attention_mask"] = masks
        if return_tensors is None:
            return BatchFeature(columns)  # lists of arrays, as transformers returns them
        return stack_columns(columns, return_tensors, ragged_ok=return_tensors == "np",
                             hint="padding=True (or 'max_length' with truncation=True)")

    # ------------------------------------------------------------------------------------------- pad
    def pad(
        self,
        processed_features: Any,
        padding: bool | str = True,
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
    ) -> BatchFeature:
        """Pad features that `__call__` returned unpadded into one batch: the data-collator half of transformers'
        fine-tuning recipe (`map` extracts each example alone, the collator pads a batch of them).

        `processed_features` is a dict of lists (`{"input_values": [array, ...]}`, a BatchFeature) or a list of
        dicts (`[{"input_values": array}, ...]`, what a DataLoader hands a collator). Rows are padded with
        `padding_value` on `padding_side`; they are *not* normalized again (`__call__` did that per example).
        A given `attention_mask` is padded with 0; one is made (1 = real) when `return_attention_mask` or the
        extractor's config asks. Other keys pass through, stacked like the rest.

        `return_tensors=None` keeps the input's kind, as transformers does: tensors in give tensors out, anything
        else numpy arrays. Rows left with different lengths (`padding=False`, or `max_length` below the longest
        without truncation) stay a list of arrays, except as tensors, which is an error then.
        """
        check_return_tensors(return_tensors)
        columns = batch_columns(processed_features, "input_values", "pad")
        rows = columns.pop("input_values")
        with_mask = self.return_attention_mask if return_attention_mask is None else return_attention_mask
        given_mask = columns.pop("attention_mask", None)
        if len(rows) == 0:  # an empty batch comes back as it is (transformers too)
            return BatchFeature({"input_values": [], **({"attention_mask": []} if with_mask else {}), **columns})
        kind = return_tensors or ("pt" if isinstance(rows[0], torch.Tensor) else "np")

        values = []
        for i, row in enumerate(rows):
            row = row.detach().cpu().numpy() if isinstance(row, torch.Tensor) else np.asarray(row)
            if row.ndim != 1:
                raise ValueError(
                    f"input_values[{i}] has shape {row.shape}; pad takes a batch of 1-D examples "
                    "(wrap a single example in a list: pad([example]))."
                )
            # float64 (Python floats) -> float32, as transformers casts; float32 stays as it is.
            values.append(row.astype(np.float32) if row.dtype == np.float64 else row)
        if given_mask is not None:
            masks = [np.asarray(m.detach().cpu() if isinstance(m, torch.Tensor) else m) for m in given_mask]
            for m in masks:
                check_mask_values(m)  # before the int cast, which would turn 0.5 into 0
            masks = [m.astype(np.int32) for m in masks]
            with_mask = True
        else:
            masks = [np.ones(len(v), dtype=np.int32) for v in values]
        _, values, masks = self._pad_rows(values, masks, padding, max_length, truncation, pad_to_multiple_of)

        out = {"input_values": values}
        if with_mask:
            out["attention_mask"] = masks
        out.update(columns)
        return stack_columns(out, kind, ragged_ok=kind != "pt",
                             hint="padding=True (or 'max_length' with truncation=True)")

    def _pad_rows(
        self,
        rows: list[np.ndarray],
        masks: list[np.ndarray],
        padding: bool | str,
        max_length: int | None,
        truncation: bool,
        pad_to_multiple_of: int | None,
    ) -> tuple[str, list[np.ndarray], list[np.ndarray]]:
        """Truncate and pad each row (and its mask, 1 = real sample) as transformers' SequenceFeatureExtractor.pad:
        to the longest row, to `max_length`, or not at all; `pad_to_multiple_of` rounds the target up."""
        strategy = padding_strategy(padding)
        if (strategy == "max_length" or truncation) and max_length is None:
            raise ValueError(f"padding={padding!r}, truncation={truncation} needs max_length (in samples).")
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer))
                                       or max_length < 1):
            # A slice r[:-5] would drop the last 5 samples (what transformers does with max_length=-5).
            raise ValueError(f"max_length={max_length!r}; expected a positive number of samples.")

        def round_up(n: int) -> int:
            # pad_to_multiple_of applies to the truncation length too (as in transformers' _truncate).
            return n if not pad_to_multiple_of else -(-n // pad_to_multiple_of) * pad_to_multiple_of

        if truncation:
            rows = [r[: round_up(max_length)] for r in rows]
            masks = [m[: round_up(max_length)] for m in masks]
        if strategy == "do_not_pad":
            return strategy, list(rows), list(masks)
        target = round_up(max(len(r) for r in rows) if strategy == "longest" else max_length)
        padded_rows, padded_masks = [], []
        for row, mask in zip(rows, masks):
            pad = max(target - len(row), 0)  # never shortens: a too-long input stays too long
            width = (pad, 0) if self.padding_side == "left" else (0, pad)
            padded_rows.append(np.pad(row, width, constant_values=self.padding_value))  # (L,)
            padded_masks.append(np.pad(mask, width))  # (L,), 0 on the padding
        return strategy, padded_rows, padded_masks


# ============================================================================================ loading a config
def read_extractor_config(folder: str | os.PathLike, *, revision: str | None = None,
                          cache_dir: str | os.PathLike | None = None, local_files_only: bool = False) -> dict[str, Any]:
    """The feature extractor's keys from a checkpoint folder: `preprocessor_config.json` (what hub checkpoints ship),
    else the "feature_extractor" entry of `processor_config.json` (where transformers 5's processor save puts them).
    A hub id is found through huggingface_hub (see files/resolve.py)."""
    folder = resolve_folder(folder, what=f"folder or file with {PREPROCESSOR_CONFIG_NAME}", allow_file=True,
                            patterns=PREPROCESSING_FILES, revision=revision, cache_dir=cache_dir,
                            local_files_only=local_files_only)
    if os.path.isfile(folder):
        return read_json(folder, PREPROCESSOR_CONFIG_NAME)
    path = os.path.join(folder, PREPROCESSOR_CONFIG_NAME)
    if os.path.exists(path):  # exists, not isfile: a FIFO or a device there is refused by read_json, not skipped
        return read_json(path, PREPROCESSOR_CONFIG_NAME)
    nested = os.path.join(folder, PROCESSOR_CONFIG_NAME)
    processor = read_json(nested, PROCESSOR_CONFIG_NAME) if os.path.exists(nested) else {}
    if isinstance(processor.get("feature_extractor"), dict):
        return processor["feature_extractor"]
    raise FileNotFoundError(
        f"{folder} has no {PREPROCESSOR_CONFIG_NAME} (nor a feature_extractor entry in {PROCESSOR_CONFIG_NAME}); "
        "a transformers checkpoint folder was expected."
    )


class AutoFeatureExtractor:
    """`AutoFeatureExtractor.from_pretrained(folder)`, as in transformers' docs; wav2vec2's extractor is the only one."""

    @staticmethod
    def from_pretrained(folder: str | os.PathLike, *, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, local_files_only: bool = False,
                        **overrides: Any) -> Wav2Vec2FeatureExtractor:
        found = read_extractor_config(folder, revision=revision, cache_dir=cache_dir,
                                      local_files_only=local_files_only)
        kind = found.get("feature_extractor_type", "Wav2Vec2FeatureExtractor")
        if kind != "Wav2Vec2FeatureExtractor":
            raise ValueError(
                f"{folder} asks for a {kind}; minispeechseq only has Wav2Vec2FeatureExtractor (raw-waveform encoders)."
            )
        return Wav2Vec2FeatureExtractor.from_dict({**found, **overrides})
