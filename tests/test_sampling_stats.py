"""Sampling draws from the distribution the processors describe.

The analytic distribution after temperature / top-k / top-p is computed here by hand from the definitions
(not with our processors), then compared with the empirical frequencies of many draws made by `sample`.

Bound: with n draws, E[TV] <= sum_i sqrt(p_i (1 - p_i) / n) / 2, and we allow 3x that plus slack for the
variance (TV is a sum of |deviations|); for V=8 and n=20000 the bound is ~0.015. A wrong filter (a token
kept or dropped, a wrong temperature) moves TV by far more than that.
"""

import math

import pytest
import torch

from minispeechseq.generation import (
    Temperature,
    TopK,
    TopP,
    apply_processors,
    greedy,
    sample,
)

LOGITS = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])
N = 20000


def analytic(temperature: float, top_k: int | None, top_p: float) -> torch.Tensor:
    """The distribution by the definitions, sequentially: scale, keep the k best, keep the smallest prefix of
    the sorted tokens whose mass reaches top_p."""
    p = [math.exp(x / temperature) for x in LOGITS.tolist()]
    order = sorted(range(len(p)), key=lambda i: -p[i])
    keep = set(order[:top_k] if top_k else order)
    total = sum(p[i] for i in keep)
    mass, nucleus = 0.0, set()
    for i in order:
        if i not in keep:
            continue
        nucleus.add(i)
        mass += p[i] / total
        if mass >= top_p - 1e-12:
            break
    z = sum(p[i] for i in nucleus)
    return torch.tensor([p[i] / z if i in nucleus else 0.0 for i in range(len(p))])


def tv_bound(p: torch.Tensor) -> float:
    return 3 * 0.5 * float((p * (1 - p) / N).sqrt().sum()) + 0.005


@pytest.mark.parametrize(
    "temperature, top_k, top_p",
    [(1.0, None, 1.0), (0.5, None, 1.0), (2.0, None, 1.0), (1.0, 3, 1.0), (1.0, None, 0.6), (0.7, 5, 0.8)],
)
def test_empirical_matches_analytic(temperature, top_k, top_p):
    processors = [Temperature(temperature)] + ([TopK(top_k)] if top_k else []) + ([TopP(top_p)] if top_p < 1 else [])
    scores = apply_processors(processors, None, LOGITS.expand(N, -1))
    draws = sample(scores, torch.Generator().manual_seed(0))
    empirical = torch.bincount(draws, minlength=len(LOGITS)).float() / N
    expected = analytic(temperature, top_k, top_p)
    tv = 0.5 * float((empirical - expected).abs().sum())
    bound = tv_bound(expected)
    assert tv <= bound, f"total variation {tv:.4f} > bound {bound:.4f}\nempirical {empirical}\nexpected  {expected}"
    assert bool((empirical[expected == 0] == 0).all()), "a filtered-out token was drawn"


def test_top_k_1_equals_greedy():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(64, 50, generator=g)
    drawn = sample(TopK(1)(None, scores), g)
    assert torch.equal(drawn, greedy(scores)), "top_k=1 sampling must pick the argmax"


def test_same_seed_same_draws():
    scores = torch.randn(16, 50, generator=torch.Generator().manual_seed(2))
    a = sample(scores, torch.Generator().manual_seed(7))
    b = sample(scores, torch.Generator().manual_seed(7))
    c = sample(scores, torch.Generator().manual_seed(8))
    assert torch.equal(a, b), "same generator seed must give the same tokens"
    assert not torch.equal(a, c), "different seeds gave identical draws for 16 rows of 50 tokens"
