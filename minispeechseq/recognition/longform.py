"""Long recordings: cut into chunks the model can handle, transcribe the chunks in batches, stitch them by time.

A model trained on short utterances (the bundled one heard at most a few seconds at a time, and its decoder has
32 positions) cannot take an hour of audio in one pass. So the recording is cut, at pauses found against the
recording's own background (pauses.py: under a fan or a murmur a pause is not silence):

    1. stretches of speech separated by pauses of at least PAUSE_S are grouped while a group fits chunk_length_s,
       and each chunk is cut in the middle of the pause after its group: no word is split, nothing is stitched;
    2. a stretch longer than a chunk is cut in the middle of its longest pause (at least MIN_CUT_PAUSE_S, the gap
       between two words) in the last two thirds of the window: still no word is split;
    3. only where the window holds no such pause (unbroken speech) is it cut in a fixed window, and the next
       chunk starts OVERLAP_S earlier, so a word cut at the edge is heard whole by one of the two chunks. Each
       chunk's words are timed (timestamps.py), and at the middle of the overlap the first chunk's words stop and
       the second chunk's begin: what the overlap said twice is kept once.

Memory is bounded by the batch of chunks, not by the recording (the waveform itself, 230 MB per hour at 16 kHz,
and the detector's 16 numbers per 10 ms are the only things that grow).

Shape legend: L audio samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .pauses import sound_runs
from .timestamps import Word

MIN_SPEECH_S = 0.1  # a shorter stretch of sound alone is a click or a chance peak of the noise: no chunk of its own
PAUSE_S = 0.3  # a silence at least this long separates two stretches of speech: a safe place to cut
EDGE_S = 0.2  # silence kept before the first and after the last sound of a chunk (models train with some)
MIN_CUT_PAUSE_S = 0.08  # the shortest pause a stretch of speech longer than a chunk is cut in (between words)
OVERLAP_S = 1.0  # speech cut in a fixed window is shared by the two chunks for this long (at most a fifth)


@dataclass
class Chunk:
    start: int  # first sample, in the recording
    end: int  # one past the last sample
    overlap_after: int = 0  # samples shared with the next chunk (0: cut at a pause)


def speech_segments(runs: list[tuple[float, float]], samples: int, sampling_rate: int) -> list[tuple[int, int]]:
    """Stretches of speech separated by pauses of at least PAUSE_S, from the detector's `runs` of sound (seconds)
    in a recording of `samples` samples: (first, last + 1) sample of each."""
    segments: list[list[float]] = []
    for a, b in runs:
        if segments and a - segments[-1][1] < PAUSE_S:
            segments[-1][1] = b
        else:
            segments.append([a, b])
    return [(int(a * sampling_rate), min(samples, int(b * sampling_rate))) for a, b in segments
            if b - a >= MIN_SPEECH_S]


def cut_in_pause(pauses: list[tuple[int, int]], lo: int, hi: int) -> int | None:
    """The middle of the longest pause (first, last + 1 sample) whose middle lies in [lo, hi], or None."""
    inside = [(b - a, (a + b) // 2) for a, b in pauses if lo <= (a + b) // 2 <= hi]
    return max(inside)[1] if inside else None


def plan_chunks(samples: np.ndarray, sampling_rate: int, chunk_length_s: float,
                max_pause_s: float | None = None) -> list[Chunk]:
    """Where to cut `samples` (L,) into chunks of at most chunk_length_s seconds.

    Stretches of speech (`speech_segments`) are grouped in order while a group fits the length; a chunk spans its
    group plus EDGE_S of the surrounding silence. max_pause_s: never put a longer pause inside a chunk (a model
    that never heard one, such as the bundled digits model, whose utterances had no pause above 0.3 s). A stretch
    longer than a chunk is cut in its longest pause between words, else in fixed windows that overlap by OVERLAP_S.
    """
    if chunk_length_s <= 0:
        raise ValueError(f"chunk_length_s must be a positive number of seconds, got {chunk_length_s}.")
    size = int(chunk_length_s * sampling_rate)
    if len(samples) <= size:
        return [Chunk(0, len(samples))]
    edge, overlap = int(EDGE_S * sampling_rate), min(int(OVERLAP_S * sampling_rate), size // 5)
    groups: list[list[int]] = []  # [first, last + 1] sample of the speech in each chunk
    runs = sound_runs(samples, sampling_rate)
    pauses = [(int(e * sampling_rate), int(a * sampling_rate)) for (_, e), (a, _) in zip(runs, runs[1:])
              if a - e >= MIN_CUT_PAUSE_S]  # (first, last + 1) sample of each pause between words
    for a, b in speech_segments(runs, len(samples), sampling_rate):
        joinable = groups and b - groups[-1][0] + 2 * edge <= size and (
            max_pause_s is None or a - groups[-1][1] <= max_pause_s * sampling_rate)
        if joinable:
            groups[-1][1] = b
        else:
            groups.append([a, b])
    chunks: list[Chunk] = []
    for k, (a, b) in enumerate(groups):
        lo = max(a - edge, (groups[k - 1][1] + a) // 2 if k else 0)  # never past the middle of the pause
        hi = min(b + edge, (b + groups[k + 1][0]) // 2 if k + 1 < len(groups) else len(samples))
        while hi - lo > size:  # speech longer than a chunk: in a pause between words, else overlapping windows
            cut = cut_in_pause(pauses, lo + size // 3, lo + size)
            if cut is not None:
                chunks.append(Chunk(lo, cut))
                lo = cut
            else:
                chunks.append(Chunk(lo, lo + size, overlap_after=overlap))
                lo += size - overlap
        chunks.append(Chunk(lo, hi))
    return chunks


def stitch(chunks: list[Chunk], texts: list[str], words: list[list[Word]] | None,
           sampling_rate: int) -> tuple[str, list[Word] | None]:
    """One text (and one word list, times in the recording) from the chunks' transcripts, in order. `words`
    are each chunk's words with times from the chunk's start; needed where chunks overlap."""
    overlapped = any(c.overlap_after for c in chunks)
    if words is None and overlapped:
        raise ValueError("Chunks that overlap are stitched by their word times: transcribe them with timestamps.")
    if words is None:
        return " ".join(t for t in texts if t), None
    kept: list[Word] = []
    for i, (chunk, chunk_words) in enumerate(zip(chunks, words)):
        offset = chunk.start / sampling_rate
        lo = -np.inf if i == 0 or not chunks[i - 1].overlap_after else (
            (chunks[i - 1].end - chunks[i - 1].overlap_after / 2) / sampling_rate)
        hi = np.inf if not chunk.overlap_after else (chunk.end - chunk.overlap_after / 2) / sampling_rate
        for w in chunk_words:
            moved = Word(w.word, w.start + offset, w.end + offset)
            if lo <= (moved.start + moved.end) / 2 < hi:  # the word's middle decides which chunk keeps it
                kept.append(moved)
    # Cut at silences only, each chunk's own text is exact; where chunks overlap, the kept words are the text.
    text = " ".join(w.word for w in kept) if overlapped else " ".join(t for t in texts if t)
    return text, kept
