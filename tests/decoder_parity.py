"""One decoder-parity harness for the four decoder test files (BERT, GPT-2, BART/mBART, Speech2Text2).

Each file describes its decoder once, as a `DecoderCase`: how to load ours with a backend, the inputs, and what the
reference gives (transformers' model run now, or, for Speech2Text2, which transformers 5 no longer has, outputs
committed from a run of transformers 4). The checks below are then the same for all four, and each compares
position by position or layer by layer, so that a mismatch points at one place. Tolerances come from tests/utils.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from tests.utils import ATOL_BACKENDS, ATOL_FP32, assert_close

Inputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # ids (B, S), mask (B, S), enc (B, T, E), enc mask


@dataclass
class DecoderCase:
    name: str  # for the failure messages ("gpt2", "mbart"...)
    load: Callable[[str], Any]  # attn implementation -> our decoder, loaded from the reference's files
    inputs: Callable[[], Inputs]
    # (attn implementation, with encoder states?, extra forward kwargs) -> the reference's outputs (.logits,
    # .hidden_states, .attentions, .cross_attentions, .loss as asked for)
    reference: Callable[..., Any]
    layers: int
    # attn implementation -> the reference's logits when it decodes with its own cache (prefix, then one token per
    # call); None: transformers' cached steps are not run, and its full forward is the reference for every step.
    reference_steps: Callable[[str], torch.Tensor] | None = None
    prefix: int = 3


def run(model: Any, inputs: Inputs, encoder: bool = True, **kw: Any) -> Any:
    ids, mask, enc, enc_mask = inputs
    with torch.no_grad():
        return model(ids, mask, enc, enc_mask, **kw) if encoder else model(ids, mask, **kw)


def cached_steps(model: Any, ids: torch.Tensor, mask: torch.Tensor, enc: torch.Tensor, enc_mask: torch.Tensor,
                 prefix: int = 3) -> torch.Tensor:
    """Our cached decoding: `prefix` tokens at once, then one token per call -> logits (B, S, V)."""
    cache = model.new_cache()
    with torch.no_grad():
        out = model(ids[:, :prefix], mask[:, :prefix], enc, enc_mask, cache=cache)
        assert out.cache is cache and cache.seq_len == prefix
        logits = [out.logits]
        for t in range(prefix, ids.shape[1]):
            step = model(ids[:, t : t + 1], mask[:, : t + 1], enc, enc_mask, cache=cache, logits_to_keep=1)
            assert step.cache is cache and cache.seq_len == t + 1
            logits.append(step.logits)
    return torch.cat(logits, dim=1)


def check_logits(case: DecoderCase, impl: str, encoder: bool = True) -> None:
    """Logits of a full forward, with the encoder's states (or without: the decoder as a plain language model)."""
    got = run(case.load(impl), case.inputs(), encoder).logits
    what = "" if encoder else " without encoder states"
    assert_close(got, case.reference(impl, encoder).logits, ATOL_FP32, f"{case.name} logits{what} ({impl})")


def check_hidden_states(case: DecoderCase, impl: str) -> None:
    """The embeddings, then each layer's output (the last one after the final norm, where the model has one)."""
    got = run(case.load(impl), case.inputs(), output_hidden_states=True).hidden_states
    want = case.reference(impl, True, output_hidden_states=True).hidden_states
    assert len(got) == len(want) == case.layers + 1
    for i, (a, b) in enumerate(zip(got, want)):
        assert_close(a, b, ATOL_FP32, f"{case.name} hidden state {i} ({impl})")


def check_cached_steps(case: DecoderCase, impl: str) -> None:
    """Decoding with the cache gives, at every position, the logits of our full forward and of the reference."""
    model, inputs = case.load(impl), case.inputs()
    full = run(model, inputs).logits
    steps = cached_steps(model, *inputs, prefix=case.prefix)
    want = case.reference_steps(impl) if case.reference_steps is not None else case.reference(impl, True).logits
    for t in range(full.shape[1]):
        where = "prefill" if t < case.prefix else "step"
        assert_close(steps[:, t], full[:, t], ATOL_FP32, f"{case.name} {where} {t} vs our full forward ({impl})")
        assert_close(steps[:, t], want[:, t], ATOL_FP32, f"{case.name} {where} {t} vs the reference ({impl})")


def check_backends_agree(case: DecoderCase) -> None:
    inputs = case.inputs()
    eager, sdpa = run(case.load("eager"), inputs).logits, run(case.load("sdpa"), inputs).logits
    assert_close(sdpa, eager, ATOL_BACKENDS, f"{case.name} sdpa vs eager")


def check_attentions(case: DecoderCase) -> None:
    """Self- and cross-attention weights of every layer (eager: the only backend that returns them)."""
    got = run(case.load("eager"), case.inputs(), output_attentions=True)
    want = case.reference("eager", True, output_attentions=True)
    for i in range(case.layers):
        assert_close(got.attentions[i], want.attentions[i], ATOL_FP32, f"{case.name} self-attention, layer {i}")
        assert_close(got.cross_attentions[i], want.cross_attentions[i], ATOL_FP32, f"{case.name} cross-attention, "
                     f"layer {i}")


def check_loss(case: DecoderCase, labels: torch.Tensor, impl: str = "sdpa") -> None:
    got = run(case.load(impl), case.inputs(), labels=labels).loss
    want = case.reference(impl, True, labels=labels).loss
    assert_close(got.reshape(want.shape), want, ATOL_FP32, f"{case.name} causal LM loss")
