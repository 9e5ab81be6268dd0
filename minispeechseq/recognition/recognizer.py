"""Batched transcription: waveforms in, one text per waveform out.

The one place where a list of waveforms becomes model inputs and generated ids become text. The command line
(`minispeechseq transcribe`) and the evaluation (`minispeechseq evaluate`, the bundled model's WER test) both go
through it, so they cannot drift apart:

    transcribe_batch(model, processor, waveforms, batch_size=8, num_beams=4)   # -> ["four two", "seven", ...]

which is, for every `batch_size` waveforms,

    decode(processor, generate_batch(model, processor, batch, num_beams=4))

`generate_batch` alone returns the token ids too, for callers that want more than the text (the CLI draws
the cross-attention of each transcript from them).

`transcribe()` and the CLI take inputs of any lengths, and bound what one input can cost the others:
`measure_inputs` reads each file's length from its header (no samples), `transcribe_inputs` batches inputs of
similar lengths (a 30-minute file would pad every input of its batch to 30 minutes), reads a batch's audio only
when its turn comes, sends inputs longer than a chunk through longform.py one at a time, and reports a failing
input by name while the others go on.

Shape legend: B batch (waveforms), L audio samples, R sequences per waveform (num_return_sequences), S tokens.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..files.audiofile import load_audio, probe_audio
from ..generation.settings import generation_prompt
from .longform import plan_chunks, stitch
from ..processor import Processor
from ..files.resolve import PREPROCESSING_FILES, MODEL_FILES, resolve_folder
from ..speech_encoder_decoder import SpeechEncoderDecoderModel
from .timestamps import Word, word_timestamps

# When a model's generation_config.json does not say how long a chunk it handles (`chunk_length_s`, a key we
# add for the bundled model), long recordings are cut every 30 s, the length most speech models train on.
DEFAULT_CHUNK_LENGTH_S = 30.0
# An input joins a batch only if it is at most this many times the batch's shortest, so the padding of a batch of
# similar lengths stays small: a 60 s file among 1 s files gets a batch of its own.
MAX_PADDING_RATIO = 2.0

Waveform = np.ndarray | torch.Tensor  # 1-D, float, at the feature extractor's sampling rate


def model_inputs(model: SpeechEncoderDecoderModel, processor: Processor,
                 waveforms: Sequence[Waveform]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Waveforms -> input_values (B, L) padded to the longest, on the model's device and in its dtype (a bf16 model
    gets bf16 audio), and the attention mask only when the feature extractor's config asks for one (layer-norm
    encoders; group-norm checkpoints were trained on zero padding without a mask, see audio.py)."""
    fe = processor.feature_extractor
    features = fe(list(waveforms), sampling_rate=fe.sampling_rate, padding=True,
                  return_attention_mask=bool(fe.return_attention_mask), return_tensors="pt").to(model.device)
    return features.input_values.to(model.dtype), features.get("attention_mask")  # (B, L), (B, L) or None


@torch.no_grad()
def generate_batch(model: SpeechEncoderDecoderModel, processor: Processor, waveforms: Sequence[Waveform],
                   **generate_kwargs: Any) -> torch.Tensor:
    """One batch of waveforms -> generated token ids (B, S), one row per waveform (see `model_inputs`)."""
    input_values, mask = model_inputs(model, processor, waveforms)
    ids = model.generate(input_values, attention_mask=mask, **generate_kwargs)  # (B*R, S)
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
    input_values, mask = model_inputs(model, processor, waveforms)
    encoded = model.get_encoder()(input_values, attention_mask=mask)  # reused by the attention maps
    ids = model.generate(encoder_outputs=encoded, attention_mask=mask, **generate_kwargs)
    ids = ids[:: ids.shape[0] // len(waveforms)]  # (B, S): each waveform's best sequence
    prompt = generation_prompt(model, len(waveforms), ids.device, **generate_kwargs).shape[1]  # what generate used
    words = word_timestamps(model, processor.tokenizer, encoded, mask, ids, prompt_length=prompt,
                            sampling_rate=processor.feature_extractor.sampling_rate,
                            audio=[np.asarray(w, dtype=np.float32) for w in waveforms])
    return decode(processor, ids), words


def recognise(model: SpeechEncoderDecoderModel, processor: Processor, waveforms: Sequence[Waveform],
              timestamps: bool, **generate_kwargs: Any) -> tuple[list[str], list[list[Word]] | None]:
    """One batch -> texts, and words with times when asked (None otherwise)."""
    if timestamps:
        return timed_batch(model, processor, waveforms, **generate_kwargs)
    return decode(processor, generate_batch(model, processor, waveforms, **generate_kwargs)), None


# ------------------------------------------------------------------------------- many inputs, any lengths
@dataclass
class Input:
    """One input of a transcription, measured before its audio is read."""

    index: int  # its place in the order given
    name: str  # the path as given, or "input <index>" for a waveform
    source: Any  # a path, or a 1-D waveform at the feature extractor's rate
    samples: int  # its length at that rate: from the file's header (probe_audio), or the waveform's length


def is_path(item: Any) -> bool:
    return isinstance(item, (str, bytes, os.PathLike))


def input_name(item: Any, index: int) -> str:
    return os.fsdecode(item) if is_path(item) else f"input {index}"


def measure_inputs(items: Sequence[Any], sampling_rate: int) -> tuple[list[Input], dict[int, Exception]]:
    """Paths and waveforms -> Inputs, each file's length read from its header only (cheap, and checked against
    the file's size, see audiofile.py); the inputs that cannot be measured -> their errors, by index."""
    inputs, errors = [], {}
    for i, item in enumerate(items):
        try:
            if is_path(item):
                inputs.append(Input(i, input_name(item, i), item, probe_audio(item).samples_at(sampling_rate)))
            elif np.ndim(item) != 1 or len(item) == 0:
                raise ValueError(f"input {i} has shape {np.shape(item)}; expected a file path or a 1-D waveform.")
            else:
                inputs.append(Input(i, input_name(item, i), item, len(item)))
        except (OSError, ValueError) as e:
            errors[i] = e
    return inputs, errors


def read_input(item: Input, sampling_rate: int) -> np.ndarray:
    if is_path(item.source):
        return load_audio(item.source, sampling_rate=sampling_rate)
    wave = np.asarray(item.source, dtype=np.float32)
    if not np.isfinite(wave).all():
        raise ValueError(f"{item.name} contains NaN or infinite samples; expected finite audio.")
    return wave


def named(name: str, error: Exception) -> str:
    """An error's message naming its input once (the CLI escapes it onto one line)."""
    text = str(error)
    return text if name in text else f"{name}: {text}"


def transcribe_inputs(model: SpeechEncoderDecoderModel, processor: Processor, inputs: Sequence[Input], *,
                      chunk_length_s: float, max_pause_s: float | None = None, batch_size: int = 8,
                      timestamps: bool = False, progress: Callable[[int, int, int], None] | None = None,
                      **generate_kwargs: Any) -> Iterator[tuple[int, dict[str, Any] | Exception]]:
    """(index, result) per input as each is done, or (index, the exception) for an input that failed.

    Inputs no longer than chunk_length_s go `batch_size` at a time, shortest with shortest, so a batch pads to
    a similar length and one long file spoils no batch; each batch's audio is read when its turn comes. Longer
    inputs go one at a time through longform.py: cut at pauses, their chunks batched, stitched by time
    (progress(index, chunks done, chunks) after each batch). A batch that fails is retried input by input, so
    the error names the input that caused it and the others are still transcribed."""
    rate = processor.feature_extractor.sampling_rate
    size, shortest = int(chunk_length_s * rate), model.encoder.receptive_field
    ordered = sorted(inputs, key=lambda item: item.samples)
    for item in ordered:
        if item.samples < shortest:  # checked per input, so one short clip spoils no batch
            yield item.index, ValueError(f"{item.name}: {item.samples} samples is shorter than the model's receptive "
                                         f"field ({shortest} samples, {shortest / rate * 1e3:.0f} ms)")
    ordered = [item for item in ordered if item.samples >= shortest]
    short = [item for item in ordered if item.samples <= size]
    for batch in length_batches(short, batch_size):
        yield from short_batch(model, processor, batch, timestamps, **generate_kwargs)
    for item in ordered[len(short) :]:

        def report(done: int, total: int, index: int = item.index) -> None:
            if progress is not None:
                progress(index, done, total)

        try:
            yield item.index, long_input(model, processor, read_input(item, rate), chunk_length_s, max_pause_s,
                                         batch_size, timestamps, report, **generate_kwargs)
        except (OSError, ValueError, RuntimeError) as e:
            yield item.index, e


def length_batches(inputs: list[Input], batch_size: int) -> list[list[Input]]:
    """Inputs sorted by length -> batches of at most batch_size, a new one also where the next input is more than
    MAX_PADDING_RATIO times the batch's shortest (padding then at most doubles the work of any row)."""
    batches: list[list[Input]] = []
    for item in inputs:
        if not batches or len(batches[-1]) == batch_size or item.samples > MAX_PADDING_RATIO * batches[-1][0].samples:
            batches.append([])
        batches[-1].append(item)
    return batches


def short_batch(model: SpeechEncoderDecoderModel, processor: Processor, batch: list[Input], timestamps: bool,
                **generate_kwargs: Any) -> Iterator[tuple[int, dict[str, Any] | Exception]]:
    rate = processor.feature_extractor.sampling_rate
    loaded, waves = [], []
    for item in batch:
        try:
            waves.append(read_input(item, rate))
            loaded.append(item)
        except (OSError, ValueError, RuntimeError) as e:  # as transcribe_inputs does for long ones: this input only
            yield item.index, e
    if not loaded:
        return
    try:
        texts, words = recognise(model, processor, waves, timestamps, **generate_kwargs)
    except (ValueError, RuntimeError) as e:
        if len(loaded) == 1:
            yield loaded[0].index, e
            return
        for item, wave in zip(loaded, waves):  # one input spoiled the batch: find it, keep the others
            yield from short_batch(model, processor, [Input(item.index, item.name, wave, len(wave))], timestamps,
                                   **generate_kwargs)
        return
    for k, (item, text) in enumerate(zip(loaded, texts)):
        yield item.index, {"text": text, **({"words": [w.as_dict() for w in words[k]]} if timestamps else {})}


def long_input(model: SpeechEncoderDecoderModel, processor: Processor, wave: np.ndarray, chunk_length_s: float,
               max_pause_s: float | None, batch_size: int, timestamps: bool,
               progress: Callable[[int, int], Any], **generate_kwargs: Any) -> dict[str, Any]:
    """One recording longer than a chunk: cut (longform.plan_chunks), chunks transcribed shortest with shortest,
    stitched by time. Where chunks overlap, the stitch needs word times, so they are computed then too."""
    rate = processor.feature_extractor.sampling_rate
    plan = plan_chunks(wave, rate, chunk_length_s, max_pause_s)
    need_words = timestamps or any(c.overlap_after for c in plan)
    texts: list[str] = [""] * len(plan)
    words: list[list[Word]] = [[] for _ in plan]
    order = sorted(range(len(plan)), key=lambda j: plan[j].end - plan[j].start)  # little padding per batch
    for done in range(0, len(order), batch_size):
        batch = order[done : done + batch_size]
        batch_texts, batch_words = recognise(model, processor, [wave[plan[j].start : plan[j].end] for j in batch],
                                             need_words, **generate_kwargs)
        for k, j in enumerate(batch):
            texts[j], words[j] = batch_texts[k], batch_words[k] if need_words else []
        progress(min(done + batch_size, len(order)), len(order))
    text, kept = stitch(plan, texts, words if need_words else None, rate)
    return {"text": text, **({"words": [w.as_dict() for w in kept or []]} if timestamps else {})}


class TranscriptionError(ValueError):
    """Some inputs of a transcribe() call failed; the others were transcribed: `results` holds every result in
    order (None for a failed input), `errors` the exception of each failed input, by index."""

    def __init__(self, message: str, results: list[dict[str, Any] | None], errors: dict[int, Exception]):
        super().__init__(message)
        self.results, self.errors = results, errors


def chunk_settings(model: SpeechEncoderDecoderModel, chunk_length_s: float | None,
                   max_pause_s: float | None) -> tuple[float, float | None]:
    """The chunk length and longest pause inside a chunk: as given, else the generation config's, else 30 s."""
    config = model.generation_config
    return (chunk_length_s or getattr(config, "chunk_length_s", None) or DEFAULT_CHUNK_LENGTH_S,
            max_pause_s or getattr(config, "chunk_max_pause_s", None))


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
    1-D waveform at the feature extractor's rate, or a list of them (then a list of results comes back, in the
    order given). Inputs are batched `batch_size` at a time by length, files read a batch at a time (their
    lengths come from their headers). Inputs longer than chunk_length_s (default: the model's generation config,
    else 30 s) are cut into chunks at pauses and stitched by time (longform.py); max_pause_s (default: the
    generation config's chunk_max_pause_s) keeps longer pauses out of a chunk. progress(done, total) is called
    after each batch of a long input's chunks.

    A list in which some inputs fail (an unreadable file, NaN samples...) is still transcribed; then a
    TranscriptionError names each failed input and carries the other results (`.results`). A single input's
    error is raised as it is."""
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
    single = is_path(audio) or (hasattr(audio, "ndim") and audio.ndim == 1)
    items = [audio] if single else list(audio)
    inputs, errors = measure_inputs(items, processor.feature_extractor.sampling_rate)
    chunk_s, max_pause_s = chunk_settings(model, chunk_length_s, max_pause_s)
    results: list[dict[str, Any] | None] = [None] * len(items)
    for i, result in transcribe_inputs(model, processor, inputs, chunk_length_s=chunk_s, max_pause_s=max_pause_s,
                                       batch_size=batch_size, timestamps=timestamps, num_beams=num_beams,
                                       progress=progress and (lambda _, done, total: progress(done, total)),
                                       **generate_kwargs):
        if isinstance(result, Exception):
            errors[i] = result
        else:
            results[i] = result
    if errors and single:
        raise errors[0]
    if errors:
        lines = [named(input_name(items[i], i), e) for i, e in sorted(errors.items())]
        raise TranscriptionError(f"{len(errors)} of {len(items)} inputs failed (the others were transcribed, "
                                 f"see .results): " + "; ".join(lines), results, errors)
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
