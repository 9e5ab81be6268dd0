"""Well-formed words whatever the model hears (issue 27, item 5): 0 <= start <= end <= duration, in time order.

On real recordings the bundled model once returned `three 0.250-0.021` (a start after its end) and a word out of
time order: the attention maps, the tokens and the pauses of the waveform can disagree in any way. So the words
are checked over maps, tokens and audio drawn at random and chosen to be hostile: attention that is uniform, all
on one frame, backwards, all zero or NaN; tokens repeated, special tokens among them, more tokens than frames;
audio that is digital silence, noise only, one burst, or many.
"""

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minispeechseq import Processor
from minispeechseq.recognition.timestamps import (
    refine_with_sound,
    well_formed,
    words_of_maps,
)

BUNDLED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "minispeechseq", "bundled", "digits")
RATE, HOP, FIELD = 16000, 320, 400  # the bundled wav2vec2 encoder's frames
SLACK = 1e-9  # float comparisons only: the bounds are exact


@pytest.fixture(scope="module")
def tokenizer():
    return Processor.from_pretrained(BUNDLED).tokenizer


def attention(kind: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Attention maps (L, H, rows, T) of one hostile kind."""
    rng = torch.Generator().manual_seed(seed)
    T = shape[-1]
    if kind == "random":
        return torch.softmax(5 * torch.randn(shape, generator=rng), dim=-1)
    if kind == "uniform":
        return torch.full(shape, 1.0 / T)
    if kind == "first_frame":
        out = torch.zeros(shape)
        out[..., 0] = 1.0
        return out
    if kind == "backwards":  # the last token looks at the first frame, the first at the last
        out = torch.zeros(shape)
        rows = shape[-2]
        for r in range(rows):
            out[..., r, (T - 1) - r * (T - 1) // max(1, rows - 1)] = 1.0
        return out
    if kind == "zero":
        return torch.zeros(shape)
    return torch.full(shape, float("nan"))


def audio_of(kind: str, length: int, seed: int) -> np.ndarray | None:
    rng = np.random.default_rng(seed)
    if kind == "none":
        return None
    if kind == "silence":
        return np.zeros(length, dtype=np.float32)
    if kind == "noise":
        return (0.01 * rng.standard_normal(length)).astype(np.float32)
    x = (0.001 * rng.standard_normal(length)).astype(np.float32)
    bursts = 1 if kind == "one_burst" else int(rng.integers(2, 8))
    for _ in range(bursts):
        a = int(rng.integers(0, length))
        b = min(length, a + int(rng.integers(1, max(2, length // 3))))
        x[a:b] += (0.3 * rng.standard_normal(b - a)).astype(np.float32)
    return x


def check(words, duration: float) -> None:
    for w in words:
        assert -SLACK <= w.start <= w.end <= duration + SLACK, (w, duration)
    for a, b in zip(words, words[1:]):
        assert a.end <= b.start + SLACK, f"out of time order: {a} then {b}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(maps_kind=st.sampled_from(["random", "uniform", "first_frame", "backwards", "zero", "nan"]),
       audio_kind=st.sampled_from(["none", "silence", "noise", "one_burst", "bursts"]),
       digits=st.lists(st.integers(0, 9), min_size=1, max_size=12),
       repeat=st.booleans(), with_special=st.booleans(), ended=st.booleans(),
       frames=st.integers(1, 60), extra=st.integers(0, 400), layers=st.integers(1, 2), heads=st.integers(1, 3),
       stored_heads=st.booleans(), seed=st.integers(0, 2**16))
def test_words_are_well_formed_whatever_the_model_hears(tokenizer, maps_kind, audio_kind, digits, repeat,
                                                        with_special, ended, frames, extra, layers, heads,
                                                        stored_heads, seed):
    words_vocab = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    names = [words_vocab[d] for d in digits]
    if repeat:  # the same word said again and again
        names = [names[0]] * len(names)
    ids = tokenizer.convert_tokens_to_ids(names)
    if with_special:
        ids.insert(len(ids) // 2, tokenizer.pad_token_id)
    rows = len(ids) + ended
    maps = attention(maps_kind, (layers, heads, rows, frames), seed)
    length = (frames - 1) * HOP + FIELD + extra
    audio = audio_of(audio_kind, length, seed)
    chosen = [[layers - 1, heads - 1]] if stored_heads else None
    words = words_of_maps(tokenizer, maps, ids, frames, chosen, HOP, FIELD, RATE, audio)
    duration = length / RATE if audio is not None else ((frames - 1) * HOP + FIELD) / RATE
    assert [w.word for w in words] == names, "every word said comes back, once, in order"
    check(words, duration)


@settings(max_examples=100, deadline=None)
@given(spans=st.lists(st.tuples(st.floats(-1, 5), st.floats(-1, 5)), min_size=1, max_size=10),
       edges=st.lists(st.floats(0, 4), max_size=16), duration=st.floats(0, 4))
def test_refined_spans_are_well_formed_whatever_the_pauses(spans, edges, duration):
    """Any DTW spans (backwards, overlapping, outside the audio) against any runs of sound."""
    edges = sorted(edges)
    runs = [(a, b) for a, b in zip(edges[::2], edges[1::2])]
    out = well_formed(refine_with_sound(spans, runs), duration)
    assert len(out) == len(spans)
    after = 0.0
    for start, end in out:
        assert after <= start <= end <= duration, out
        after = end
