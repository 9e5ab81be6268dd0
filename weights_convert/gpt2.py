"""GPT-2 checkpoints <-> minispeechseq's GPT2LMHeadModel.

Layouts read:
- OpenAI's original `gpt2` files (GPT2Model): no prefix (`h.0.attn.c_attn.weight`, `wte.weight`...), no
  `lm_head` (it is the tied `wte`), and the causal-mask buffers `attn.bias` / `attn.masked_bias`, skipped;
- GPT2LMHeadModel: the same under `transformer.`, plus `lm_head.weight` (absent in transformers 5 saves, as it is
  tied). The decoder half of a SpeechEncoderDecoderModel checkpoint is this layout.

Two exceptions to the table, both from GPT-2's `Conv1D` layers:
- their weights are (in, out), the transpose of nn.Linear's (out, in): every Conv1D weight is transposed;
- q, k, v are one fused `c_attn` (in, 3·D); in cross-attention q is `q_attn` and k, v are fused in `c_attn` (in, 2·D):
  they are split along the output dimension here, and concatenated back by `to_checkpoint`.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from .core import (
    ConversionReport, KeyTable, StateDict, is_cross_attention, rename_keys, strip_prefix, tie_lm_head, without_tied_head,
)

# Checkpoint module -> our module. Conv1D modules (transposed weights) are marked True.
MODULES = {
    "h.{}.ln_1": ("layers.{}.self_attn_norm", False),
    "h.{}.attn.c_proj": ("layers.{}.self_attn.out_proj", True),
    "h.{}.ln_cross_attn": ("layers.{}.cross_attn_norm", False),
    "h.{}.crossattention.q_attn": ("layers.{}.cross_attn.q_proj", True),
    "h.{}.crossattention.c_proj": ("layers.{}.cross_attn.out_proj", True),
    "h.{}.ln_2": ("layers.{}.ffn_norm", False),
    "h.{}.mlp.c_fc": ("layers.{}.fc1", True),
    "h.{}.mlp.c_proj": ("layers.{}.fc2", True),
    "ln_f": ("final_norm", False),
}

TABLE = KeyTable({
    "wte.weight": "embed_tokens.weight",
    "wpe.weight": "embed_positions.weight",
    **{f"{theirs}.{p}": f"{ours}.{p}" for theirs, (ours, _) in MODULES.items() for p in ("weight", "bias")},
    "lm_head.weight": "lm_head.weight",  # tied to wte (see to_ours)
    # Causal-mask buffers older transformers saved with every attention; masks are built on the fly now.
    "h.{}.attn.bias": None,
    "h.{}.attn.masked_bias": None,
    "h.{}.crossattention.bias": None,
    "h.{}.crossattention.masked_bias": None,
})

# Our weights that are stored transposed (Conv1D) in checkpoints.
TRANSPOSED = re.compile(
    "(?:" + "|".join(re.escape(ours).replace(r"\{\}", r"\d+") for ours, conv in MODULES.values() if conv) + r")\.weight$"
)
# The fused projections: checkpoint c_attn <-> our q/k/v (self-attention) or k/v (cross-attention).
FUSED_THEIRS = re.compile(r"h\.(\d+)\.(attn|crossattention)\.c_attn\.(weight|bias)$")
FUSED_OURS = re.compile(r"layers\.(\d+)\.(self_attn|cross_attn)\.([qkv])_proj\.(weight|bias)$")
PARTS = {"attn": ("self_attn", "qkv"), "crossattention": ("cross_attn", "kv")}


may_initialize = is_cross_attention  # warm-starting a decoder from a plain GPT-2 adds cross-attention


def to_ours(hf_state: StateDict, config: Any) -> tuple[StateDict, ConversionReport]:
    report = ConversionReport()
    state = strip_prefix(hf_state, ("transformer.",), report)
    fused = {k: v for k, v in state.items() if FUSED_THEIRS.match(k)}
    ours = rename_keys({k: v for k, v in state.items() if k not in fused}, TABLE, report)
    for key in ours:
        if TRANSPOSED.match(key):
            ours[key] = ours[key].t().contiguous()  # Conv1D (in, out) -> Linear (out, in)

    D = config.n_embd
    for key, tensor in fused.items():
        layer, module, param = FUSED_THEIRS.match(key).groups()
        ours_module, parts = PARTS[module]
        if tensor.shape[-1] != len(parts) * D:
            raise ValueError(f"{key} has shape {tuple(tensor.shape)}; with n_embd={D} its last dimension should be "
                             f"{len(parts) * D} ({'/'.join(parts)} fused). Check that config.json fits these weights.")
        # weight (in, n·D) -> n × (in, D); bias (n·D,) -> n × (D,). Split in q, k, v order.
        for part, chunk in zip(parts, tensor.split(D, dim=-1)):
            target = f"layers.{layer}.{ours_module}.{part}_proj.{param}"
            ours[target] = chunk.t().contiguous() if param == "weight" else chunk.contiguous()  # (D, in)
            report.loaded.append((key, target))

    tie_lm_head(ours, config, report)
    return ours, report


def to_checkpoint(our_state: StateDict, config: Any) -> StateDict:
    """Our weights under transformers' GPT2LMHeadModel names (Conv1D layout, fused c_attn)."""
    out: StateDict = {}
    fused: dict[tuple[str, str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in without_tied_head(our_state, config).items():
        if key == "lm_head.weight":
            out["lm_head.weight"] = tensor  # untied: stored under its own name, outside `transformer.`
            continue
        m = FUSED_OURS.match(key)
        if m and not (m.group(2) == "cross_attn" and m.group(3) == "q"):  # cross q_proj is its own q_attn
            layer, module, part, param = m.groups()
            fused.setdefault((layer, module, param), {})[part] = tensor
            continue
        out["transformer." + TABLE.to_checkpoint(key)] = tensor.t().contiguous() if TRANSPOSED.match(key) else tensor
    for (layer, module, param), parts in fused.items():
        theirs = "attn" if module == "self_attn" else "crossattention"
        order = PARTS[theirs][1]
        # Linear (D, in) -> Conv1D (in, D), then side by side: (in, n·D); biases simply concatenated.
        chunks = [parts[p].t() if param == "weight" else parts[p] for p in order]
        out[f"transformer.h.{layer}.{theirs}.c_attn.{param}"] = torch.cat(chunks, dim=-1).contiguous()
    return out
