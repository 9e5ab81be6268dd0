"""Batched transcription: waveforms in, one text per waveform out.

The one place where a list of waveforms becomes model inputs and generated ids become text. The command line
(`minispeechseq transcribe`) and the evaluation (`minispeechseq evaluate`, the bundled model's WER test) both go
through it, so they cannot drift apart:

    transcribe_batch(model, processor, waveforms, batch_size=8, num_beams=4)   # -> ["four two", "seven", ...]

which is, for every `batch_size` waveforms,

    decode(processor, generate_batch(model, processor, batch, num_beams=4))

`generate_batch` alone returns the token ids too, for callers that want more than the text (the CLI draws
the cross-attention of each transcript from them).

Shape legend: B batch (waveforms), L audio samples, R sequences per waveform (num_return_sequences), S tokens.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from .processor import Processor
    from .speech_encoder_decoder import SpeechEncoderDecoderModel

Waveform = np.ndarray | torch.Tensor  # 1-D, float, at the feature extractor's sampling rate


@torch.no_grad()
def generate_batch(model: SpeechEncoderDecoderModel, processor: Processor, waveforms: Sequence[Waveform],
                   **generate_kwargs: Any) -> torch.Tensor:
    """One batch of waveforms -> generated token ids (B, S), one row per waveform.

    The waveforms are padded to the longest; the attention mask comes with them only when the feature extractor's
    config asks for one (layer-norm encoders; group-norm checkpoints were trained on zero padding without a mask,
    see audio.py). The inputs go to the model's device and dtype (a bf16 model gets bf16 audio)."""
    fe = processor.feature_extractor
    features = fe(list(waveforms), sampling_rate=fe.sampling_rate, padding=True,
                  return_attention_mask=bool(fe.return_attention_mask), return_tensors="pt").to(model.device)
    input_values = features.input_values.to(model.dtype)  # (B, L)
    ids = model.generate(input_values, attention_mask=features.get("attention_mask"), **generate_kwargs)  # (B*R, S)
    # With num_return_sequences = R, generate returns R rows per waveform, each waveform's best first: keep that one.
    per_waveform = ids.shape[0] // len(waveforms)
    return ids[::per_waveform]  # (B, S)


def decode(processor: Processor, ids: torch.Tensor) -> list[str]:
    """Generated ids (B, S) -> B texts, without special tokens or surrounding spaces."""
    return [text.strip() for text in processor.batch_decode(ids, skip_special_tokens=True)]


def transcribe_batch(model: SpeechEncoderDecoderModel, processor: Processor, waveforms: Iterable[Waveform], *,
                     batch_size: int = 8, **generate_kwargs: Any) -> list[str]:
    """Waveforms -> one text each, in order, `batch_size` at a time (any `generate` argument passes through).

    `waveforms` may be a generator: each batch is read only when its turn comes, so a whole dataset need not be in
    memory at once."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    texts: list[str] = []
    waveforms = iter(waveforms)
    while batch := list(itertools.islice(waveforms, batch_size)):
        texts += decode(processor, generate_batch(model, processor, batch, **generate_kwargs))
    return texts
