"""Honest bounds for a greedy decoding step: what one step must read, and how fast this machine reads.

A greedy step for one utterance multiplies one row of activations by every decoder weight: little arithmetic per
byte, so the time goes into reading memory. Per generated token the step reads
- the weights, once: every Linear layer and the LM head (of the embedding tables only one row, not counted; the
  cross-attention key/value projections ran once, at the first step, and are not read again);
- the cross-attention keys and values of every layer, 2 x T frames x D, computed once per utterance, read at
  every step;
- the self-attention cache, 2 x t tokens x D per layer at token t: the only part that grows with the length.

The machine's side is a plain memory copy (`dst.copy_(src)` over tensors far larger than the caches, the bytes
read and written both counted), measured in the same run. It is deliberately not the matrix-vector speed of the
library under test, which would call any library's step "near its bound". The weight-streaming time is then
weight bytes / copy bandwidth, and the rest of the step (the K/V and cache reads, the arithmetic, the Python and
the tensor bookkeeping) is what remains.
"""

from __future__ import annotations

import torch
from torch import nn

from .bench_timing import _time
from ..recognition.quantize import Int8Linear


def copy_bandwidth(mbytes: int = 256, repeats: int = 5, device: torch.device | str = "cpu") -> float:
    """Bytes/s of copying an `mbytes` MiB fp32 tensor into another: 2 x size per copy (one read, one write)."""
    src = torch.randn(mbytes * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    best = min(_time(lambda: dst.copy_(src), device) for _ in range(repeats + 1))  # the first call warms up
    return 2 * src.numel() * src.element_size() / best


def _cross_kv_projections(decoder: nn.Module) -> set[int]:
    """ids of the cross-attention key/value projections: they run on the encoder output once per utterance."""
    once: set[int] = set()
    for name, module in decoder.named_modules():
        if name.endswith("cross_attn"):
            once.update((id(module.k_proj), id(module.v_proj)))
    return once


def decoder_stream_bytes(model: nn.Module) -> int:
    """Weight bytes one greedy step reads: every decoder weight once, int8 layers at their int8 size, except the
    embedding tables (a step reads one row of each; a head tied to the token embedding counts as the head) and the
    cross-attention key/value projections."""
    decoder = model.decoder
    once = _cross_kv_projections(decoder)
    seen: set[int] = set()
    total = 0
    for module in decoder.modules():
        if id(module) in once or isinstance(module, nn.Embedding):
            continue
        if isinstance(module, Int8Linear):
            total += module.nbytes()
            continue
        for p in module.parameters(recurse=False):
            if id(p) not in seen:  # a tied weight is read once a step
                seen.add(id(p))
                total += p.numel() * p.element_size()
    return total


def step_bytes(model: nn.Module, frames: int, token: int, rows: int = 1) -> dict[str, int]:
    """What greedy step `token` (1 = the first new token) reads, in bytes, for `rows` decoder rows of one
    utterance each and `frames` encoder frames: weights, cross-attention K/V and the self-attention cache."""
    decoder = model.decoder
    size = decoder.get_input_embeddings().weight.element_size()  # activations keep the embeddings' dtype
    cross = self_cache = 0
    for layer in decoder.layers:
        width = layer.self_attn.k_proj.out_features  # keys and values are (H x hd) = this wide
        self_cache += 2 * token * width * size * rows  # keys and values of the `token` positions so far
        if layer.cross_attn is not None:
            cross += 2 * frames * layer.cross_attn.k_proj.out_features * size * rows
    return {"weights": decoder_stream_bytes(model), "cross_kv": cross, "self_cache": self_cache}


def step_reads(model: nn.Module, frames: int, first: int = 2, last: int = 32,
               shown: tuple[int, ...] = (1, 32, 128)) -> dict:
    """The bytes greedy steps read: at the tokens `shown` (the cache's share grows), and on average over steps
    `first`..`last`, the steps a per-token latency of (time of `last` tokens - time of 1) / (last - 1) averages."""
    timed = [sum(step_bytes(model, frames, t).values()) for t in range(first, last + 1)]
    return {"frames": frames, "bytes_at_token": {str(t): step_bytes(model, frames, t) for t in shown},
            "bytes_per_step": sum(timed) / len(timed)}


def step_budget(reads: dict, per_token_s: float, bandwidth: float) -> dict:
    """A measured per-token latency against what its steps read (`step_reads`) and the copy bandwidth: the
    bandwidth the steps achieve, and the shares of a step that weight streaming and everything else take."""
    weights = next(iter(reads["bytes_at_token"].values()))["weights"]
    weight_share = weights / bandwidth / per_token_s
    return {**reads, "per_token_s": per_token_s, "achieved_bytes_per_s": reads["bytes_per_step"] / per_token_s,
            "copy_bytes_per_s": bandwidth, "weight_stream_s": weights / bandwidth,
            "weight_stream_fraction": weight_share, "other_fraction": 1.0 - weight_share}


def format_budget(name: str, budget: dict) -> str:
    """Lines for the bench: the bytes per step at each shown token (the cache's share growing), then the step."""
    mb = 2**20
    lines = [f"{name}: bytes one greedy step reads ({budget['frames']} encoder frames)",
             f"  {'token':>6s} {'weights':>10s} {'cross K/V':>10s} {'self cache':>11s} {'cache share':>12s}"]
    for t, b in budget["bytes_at_token"].items():
        total = sum(b.values())
        lines.append(f"  {t:>6s} {b['weights'] / mb:8.1f}MB {b['cross_kv'] / mb:8.1f}MB {b['self_cache'] / mb:9.2f}MB "
                     f"{b['self_cache'] / total:11.1%}")
    lines.append(f"  step {budget['per_token_s'] * 1e3:.1f} ms reads {budget['bytes_per_step'] / mb:.0f} MB: "
                 f"{budget['achieved_bytes_per_s'] / 1e9:.1f} GB/s achieved vs {budget['copy_bytes_per_s'] / 1e9:.1f} "
                 f"GB/s memory copy; streaming the weights at copy speed = {budget['weight_stream_s'] * 1e3:.1f} ms = "
                 f"{budget['weight_stream_fraction']:.0%} of the step, everything else {budget['other_fraction']:.0%}")
    return "\n".join(lines)
