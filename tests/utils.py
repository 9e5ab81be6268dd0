"""Shared test helpers: tolerances live here, in one place, so every parity test states the same bar."""


import pytest
import torch

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
