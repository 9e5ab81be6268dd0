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
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from .audio import load_audio
from .generation.loop import decoder_prompt
from .longform import plan_chunks, stitch
from .processor import Processor
from .resolve import PREPROCESSING_FILES, MODEL_FILES, resolve_folder
from .speech_encoder_decoder import SpeechEncoderDecoderModel
from .timestamps import Word, word_timestamps

# When a model's generation_config.json does not say how long a chunk it handles (`chunk_length_s`, a key we
# add for the bundled model), long recordings are cut every 30 s, the length most speech models train on.
DEFAULT_CHUNK_LENGTH_S = 30.0

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


@torch.no_grad()
def timed_batch(model: SpeechEncoderDecoderModel, processor: Processor, waveforms: Sequence[Waveform],
                **generate_kwargs: Any) -> tuple[list[str], list[list[Word]]]:
    """One batch -> texts and words with times (seconds from each waveform's start), via timestamps.py."""
    fe = processor.feature_extractor
    features = fe(list(waveforms), sampling_rate=fe.sampling_rate, padding=True,
                  return_attention_mask=bool(fe.return_attention_mask), return_tensors="pt").to(model.device)
    input_values, mask = features.input_values.to(model.dtype), features.get("attention_mask")  # (B, L)
    encoded = model.get_encoder()(input_values, attention_mask=mask)  # reused by the attention maps
    ids = model.generate(encoder_outputs=encoded, attention_mask=mask, **generate_kwargs)
    ids = ids[:: ids.shape[0] // len(waveforms)]  # (B, S): each waveform's best sequence
    start = model.generation_config.decoder_start_token_id
    prompt = decoder_prompt(generate_kwargs.get("decoder_input_ids"), start, len(waveforms), ids.device).shape[1]
    words = word_timestamps(model, processor.tokenizer, encoded, mask, ids, prompt_length=prompt,
                            sampling_rate=fe.sampling_rate, audio=[np.asarray(w, dtype=np.float32) for w in waveforms])
    return decode(processor, ids), words


def transcribe(
    model_or_path: SpeechEncoderDecoderModel | str | os.PathLike,
    audio: Any,
    *,
    num_beams: int = 1,
    timestamps: bool = False,
    chunk_length_s: float | None = None,
    max_pause_s: float | None = None,
    batch_size: int = 8,
    processor: Processor | None = None,
    progress: Callable[[int, int], None] | None = None,
    **generate_kwargs: Any,
) -> dict[str, Any] | list[dict[str, Any]]:
    """Audio -> {"text": str} (+ "words": [{"word", "start", "end"}] in seconds with timestamps=True).

    model_or_path: a model (then give its `processor`), or a folder / hub id holding both. audio: a file path or a
    1-D waveform at the feature extractor's rate, or a list of them (then a list of results comes back). Inputs
    longer than chunk_length_s (default: the model's generation config, else 30 s) are cut into chunks at pauses
    and stitched by time (longform.py); max_pause_s (default: the generation config's chunk_max_pause_s) keeps
    longer pauses out of a chunk. All chunks of all inputs are transcribed `batch_size` at a time, shortest with
    shortest. progress(done, total) is called after each batch of chunks."""
    if isinstance(model_or_path, (str, os.PathLike)):
        folder = resolve_folder(model_or_path, patterns=MODEL_FILES + PREPROCESSING_FILES)
        model = SpeechEncoderDecoderModel.from_pretrained(folder)
        processor = processor or Processor.from_pretrained(folder)
    else:
        model = model_or_path
    if processor is None:
        raise ValueError("transcribe(model, ...) needs the model's processor: transcribe(model, audio, processor=...).")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    rate = processor.feature_extractor.sampling_rate
    single = isinstance(audio, (str, os.PathLike)) or (hasattr(audio, "ndim") and audio.ndim == 1)
    items = [audio] if single else list(audio)
    waveforms = [load_audio(a, sampling_rate=rate) if isinstance(a, (str, os.PathLike))
                 else np.asarray(a, dtype=np.float32) for a in items]
    chunk_s = chunk_length_s or getattr(model.generation_config, "chunk_length_s", None) or DEFAULT_CHUNK_LENGTH_S
    max_pause_s = max_pause_s or getattr(model.generation_config, "chunk_max_pause_s", None)
    plans = [plan_chunks(w, rate, chunk_s, max_pause_s) for w in waveforms]
    jobs = [(i, c) for i, plan in enumerate(plans) for c in plan]  # every chunk of every input
    need_words = timestamps or any(c.overlap_after for _, c in jobs)
    texts: list[str] = [""] * len(jobs)
    words: list[list[Word]] = [[] for _ in jobs]
    order = sorted(range(len(jobs)), key=lambda j: jobs[j][1].end - jobs[j][1].start)  # little padding per batch
    for done in range(0, len(order), batch_size):
        batch = order[done : done + batch_size]
        waves = [waveforms[jobs[j][0]][jobs[j][1].start : jobs[j][1].end] for j in batch]
        if need_words:
            batch_texts, batch_words = timed_batch(model, processor, waves, num_beams=num_beams, **generate_kwargs)
        else:
            batch_texts = decode(processor, generate_batch(model, processor, waves, num_beams=num_beams,
                                                           **generate_kwargs))
            batch_words = [[] for _ in batch]
        for j, text, ws in zip(batch, batch_texts, batch_words):
            texts[j], words[j] = text, ws
        if progress is not None:
            progress(min(done + batch_size, len(order)), len(order))
    results = []
    for i, plan in enumerate(plans):
        mine = [j for j, (owner, _) in enumerate(jobs) if owner == i]
        text, kept = stitch(plan, [texts[j] for j in mine], [words[j] for j in mine] if need_words else None, rate)
        result: dict[str, Any] = {"text": text}
        if timestamps:
            result["words"] = [w.as_dict() for w in kept or []]
        results.append(result)
    return results[0] if single else results


# ----------------------------------------------------------------------------------------------- subtitles
CUE_MAX_WORDS = 8  # a subtitle line a reader takes in at a glance
CUE_MAX_S = 5.0
CUE_BREAK_S = 0.6  # a pause this long starts a new cue


def subtitles(words: list[dict[str, Any]], fmt: str) -> str:
    """Words with times (transcribe(..., timestamps=True)["words"]) as SRT or WebVTT subtitles."""
    if fmt not in ("srt", "vtt"):
        raise ValueError(f"Subtitles are 'srt' or 'vtt', not {fmt!r}.")
    cues: list[list[dict[str, Any]]] = []
    for w in words:
        if (not cues or len(cues[-1]) >= CUE_MAX_WORDS or w["end"] - cues[-1][0]["start"] > CUE_MAX_S
                or w["start"] - cues[-1][-1]["end"] > CUE_BREAK_S):
            cues.append([])
        cues[-1].append(w)
    sep = "," if fmt == "srt" else "."

    def stamp(seconds: float) -> str:
        ms = int(round(seconds * 1000))
        return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"

    blocks = ["WEBVTT\n"] if fmt == "vtt" else []
    for n, cue in enumerate(cues, start=1):
        timing = f"{stamp(cue[0]['start'])} --> {stamp(cue[-1]['end'])}"
        text = " ".join(w["word"] for w in cue)
        blocks.append(f"{n}\n{timing}\n{text}\n" if fmt == "srt" else f"{timing}\n{text}\n")
    return "\n".join(blocks)
