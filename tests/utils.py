"""Shared test helpers: tolerances live here, in one place, so every parity test states the same bar."""


import os

import numpy as np
import pytest
import soundfile
import torch

from minispeechseq.training.digits import DIGIT_WORDS, build_digits_tokenizer

# fp32 on CPU: our modules and transformers' compute the same math in a different order.
ATOL_FP32 = 1e-5
# Two attention backends (eager vs sdpa) on CPU in fp32.
ATOL_BACKENDS = 1e-5
# bf16 keeps 8 bits of mantissa (relative step 2^-8 ~ 4e-3): unit-scale outputs differ from an fp64 reference
# by a few steps.
ATOL_BF16 = 3e-2



def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().float() - b.detach().float()).abs().max().item()


def assert_close(ours: torch.Tensor, ref: torch.Tensor, atol: float = ATOL_FP32, what: str = "") -> float:
    """Assert shapes equal and max |ours - ref| <= atol; the failure message gives the measured value."""
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} vs reference {tuple(ref.shape)}"
    diff = max_abs(ours, ref)
    assert diff <= atol, f"{what}: max abs difference {diff:.3e} > tolerance {atol:.1e}"
    return diff


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")


def write_tone_corpus(folder, count: int, max_digits: int) -> list[str]:
    """`count` tone-burst "utterances" of 1..max_digits digits (one pure tone per digit; no espeak-ng needed: for
    the training loop's mechanics, not recognition) in folder/wavs, plus a digits tokenizer in folder/tokenizer.
    Returns the manifest lines ("wavs/i.wav<TAB>words"), for the caller to split."""
    os.makedirs(os.path.join(folder, "wavs"))
    rng = np.random.default_rng(0)
    lines = []
    for i in range(count):
        digits = rng.integers(0, 10, size=rng.integers(1, max_digits + 1))
        t = np.arange(int(16000 * (0.2 + 0.15 * len(digits)))) / 16000
        wave = sum(0.1 * np.sin(2 * np.pi * (300 + 80 * d) * t) for d in digits).astype(np.float32)
        soundfile.write(os.path.join(folder, "wavs", f"{i}.wav"), wave, 16000, subtype="PCM_16")
        lines.append(f"wavs/{i}.wav\t{' '.join(DIGIT_WORDS[d] for d in digits)}\n")
    build_digits_tokenizer(os.path.join(folder, "tokenizer"))
    return lines
