"""From a sound file to the `input_values` a wav2vec2/HuBERT encoder reads.

Two steps, each a public name:
1. `load_audio(path)`: any file libsndfile reads (wav, flac, ogg...), at any rate and channel count, becomes one
   float32 mono waveform at 16 kHz.
2. `Wav2Vec2FeatureExtractor(...)(waveforms)`: a batch of waveforms becomes one padded (B, L) float32 tensor,
   normalized to zero mean and unit variance per utterance, plus an optional (B, L) attention mask.
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
import soundfile
import soxr
import torch

from .config import read_json
from .resolve import PREPROCESSING_FILES, resolve_folder

# Everything a caller can hand us as one waveform.
Waveform = np.ndarray | torch.Tensor | list | tuple

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"


PROCESSOR_CONFIG_NAME = "processor_config.json"


def read_extractor_config(folder: str | os.PathLike, *, revision: str | None = None,
                          cache_dir: str | os.PathLike | None = None, local_files_only: bool = False) -> dict[str, Any]:
    """The feature extractor's keys from a checkpoint folder: `preprocessor_config.json` (what hub checkpoints ship),
    else the "feature_extractor" entry of `processor_config.json` (where transformers 5's processor save puts them).
    A hub id is found through huggingface_hub (see resolve.py)."""
    folder = resolve_folder(folder, what=f"folder or file with {PREPROCESSOR_CONFIG_NAME}", allow_file=True,
                            patterns=PREPROCESSING_FILES, revision=revision, cache_dir=cache_dir,
                            local_files_only=local_files_only)
    if os.path.isfile(folder):
        return read_json(folder, PREPROCESSOR_CONFIG_NAME)
    path = os.path.join(folder, PREPROCESSOR_CONFIG_NAME)
    if os.path.isfile(path):
        return read_json(path, PREPROCESSOR_CONFIG_NAME)
    nested = os.path.join(folder, PROCESSOR_CONFIG_NAME)
    processor = read_json(nested, PROCESSOR_CONFIG_NAME) if os.path.isfile(nested) else {}
    if isinstance(processor.get("feature_extractor"), dict):
        return processor["feature_extractor"]
    raise FileNotFoundError(
        f"{folder} has no {PREPROCESSOR_CONFIG_NAME} (nor a feature_extractor entry in {PROCESSOR_CONFIG_NAME}); "
        "a transformers checkpoint folder was expected."
    )


# ================================================================================================= load_audio
def load_audio(path: str | os.PathLike, sampling_rate: int = 16000) -> np.ndarray:
    """Read an audio file as a float32 mono waveform at `sampling_rate` Hz, values in [-1, 1] for PCM files."""
    if not isinstance(sampling_rate, int) or sampling_rate <= 0:
        raise ValueError(f"sampling_rate must be a positive int (Hz), got {sampling_rate!r}.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No audio file at {path}.")
    try:
        # always_2d: (N, C) whatever the channel count, so mono and stereo take one path.
        # dtype="float32": libsndfile scales integer PCM to [-1, 1] itself (int16 / 32768...).
        samples, file_rate = soundfile.read(path, dtype="float32", always_2d=True)  # (N, C)
    except soundfile.LibsndfileError as e:  # a text file, a truncated header, an unknown container...
        raise ValueError(f"{path} could not be read as audio by libsndfile ({e}); expected wav, flac, ogg, ...") from None
    if samples.shape[0] == 0:
        raise ValueError(f"{path} holds no audio samples (0 frames); expected a non-empty recording.")
    # Float WAV/FLAC can store NaN/inf (a crashed recorder, a bad export). Refused here, naming the file, rather
    # than later by the feature extractor where a batch no longer knows which file it came from.
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).any(axis=1).sum())
        raise ValueError(f"{path} contains {bad} NaN or infinite samples; expected finite audio.")
    # Downmix: the mean of the channels keeps the level of a centred (identical L/R) source unchanged.
    mono = samples.mean(axis=1, dtype=np.float32)  # (N,)
    if file_rate != sampling_rate:
        # soxr's default "HQ" quality; it returns float32 for float32 input.
        mono = soxr.resample(mono, file_rate, sampling_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


# ================================================================================================ BatchFeature
class BatchFeature(dict):
    """A dict of model inputs that also reads as attributes (`out.input_values`), like transformers' BatchFeature."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"This batch has no {name!r}; it holds {sorted(self)}.") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def to(self, device: str | torch.device) -> BatchFeature:
        """Move every tensor to `device` (other values are left as they are); returns self, as transformers does."""
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                self[key] = value.to(device)
        return self


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


def zero_mean_unit_var(wave: np.ndarray, real: slice, padding_value: float | None) -> np.ndarray:
    """(x - mean) / sqrt(var + 1e-7), the statistics taken over `wave[real]`.

    The 1e-7 (transformers' constant) keeps an all-zero signal finite: 0 / sqrt(1e-7) = 0. With `padding_value`
    given, positions outside `real` are reset to it afterwards.
    """
    part = wave[real]
    normed = (wave - part.mean()) / np.sqrt(part.var() + 1e-7)
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
        padding: bool | str = True,
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        """Waveform(s) -> BatchFeature with `input_values` (B, L) and, when asked, `attention_mask` (B, L), 1 = real."""
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(
                f"The audio is at {sampling_rate} Hz but this model was trained at {self.sampling_rate} Hz; "
                f"resample it first (load_audio(path, sampling_rate={self.sampling_rate}) does)."
            )
        if padding in (True, "longest"):
            strategy = "longest"
        elif padding == "max_length":
            strategy = "max_length"
        elif padding in (False, "do_not_pad"):
            strategy = "do_not_pad"
        else:
            raise ValueError(f"padding={padding!r}; expected True/'longest', 'max_length', or False/'do_not_pad'.")
        if (strategy == "max_length" or truncation) and max_length is None:
            raise ValueError(f"padding={padding!r}, truncation={truncation} needs max_length (in samples).")
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors={return_tensors!r}; expected 'pt', 'np' or None.")
        with_mask = self.return_attention_mask if return_attention_mask is None else return_attention_mask

        waves = _as_batch(raw_speech)

        def round_up(n: int) -> int:
            # pad_to_multiple_of applies to the truncation length too (as in transformers' _truncate).
            return n if not pad_to_multiple_of else -(-n // pad_to_multiple_of) * pad_to_multiple_of

        if truncation:
            waves = [w[: round_up(max_length)] for w in waves]
        lengths = [len(w) for w in waves]
        if strategy == "do_not_pad":
            target = None
        else:
            target = round_up(max(lengths) if strategy == "longest" else max_length)

        values, masks = [], []
        for wave, n in zip(waves, lengths):
            pad = 0 if target is None else max(target - n, 0)  # never shortens: a too-long input stays too long
            # The real samples' slice, whichever side the padding went.
            real = slice(pad, pad + n) if self.padding_side == "left" else slice(0, n)
            pad_width = (pad, 0) if self.padding_side == "left" else (0, pad)
            padded = np.pad(wave, pad_width, constant_values=self.padding_value)  # (L,)
            if self.do_normalize:
                if with_mask and target is not None:
                    # With a mask: statistics over the real samples only, padding reset to padding_value after.
                    # transformers slices `vector[:length]` even for padding_side="left" (a bug: it normalizes over
                    # the leading padding and zeroes real samples); we use the real slice on either side.
                    padded = zero_mean_unit_var(padded, real, self.padding_value)
                else:
                    # Without a mask transformers normalizes the *padded* row, padding included (it pads first);
                    # group-norm checkpoints were fine-tuned on exactly this, so we keep it.
                    padded = zero_mean_unit_var(padded, slice(None), None)
            mask = np.zeros(len(padded), dtype=np.int32)
            mask[real] = 1
            values.append(padded.astype(np.float32, copy=False))
            masks.append(mask)

        out = BatchFeature()
        same_length = len({len(v) for v in values}) == 1
        if return_tensors is None:
            out["input_values"] = values
            if with_mask:
                out["attention_mask"] = masks
            return out
        if not same_length:
            raise ValueError(
                f"The waveforms have different lengths {lengths} and padding={padding!r} left them so; "
                "a tensor needs padding=True (or 'max_length' with truncation=True), or return_tensors=None."
            )
        stacked = np.stack(values)  # (B, L)
        stacked_mask = np.stack(masks)  # (B, L)
        if return_tensors == "pt":
            out["input_values"] = torch.from_numpy(stacked)
            if with_mask:
                out["attention_mask"] = torch.from_numpy(stacked_mask)  # int32, as transformers returns
        else:
            out["input_values"] = stacked
            if with_mask:
                out["attention_mask"] = stacked_mask
        return out


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
