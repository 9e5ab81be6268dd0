"""Speech2Text2 decoder checkpoints <-> minispeechseq's Speech2Text2ForCausalLM.

Layouts read: Speech2Text2ForCausalLM (`model.decoder.*` + `lm_head.weight`), the same names inside a
SpeechEncoderDecoderModel's `decoder.` part, and the decoder alone (`decoder.*`). Written: Speech2Text2ForCausalLM's names, so transformers 4.x loads what we save.

The sinusoidal table `model.decoder.embed_positions.weights` is stored in checkpoints (transformers 4.x made it a
frozen nn.Parameter) but is not a weight: we compute it. We do not load it, but we *check* it when present:
a checkpoint whose table differs from the formula would be decoded with other positions than it was trained
with, so that is an error rather than a silent difference. `to_checkpoint` writes it back (computed), because
transformers 4.x would otherwise report it missing and keep its own copy (the same values).
"""

from __future__ import annotations

import torch

from minispeechseq.layers import sinusoids

from .bart import LAYER_MODULES
from .core import (
    ConversionReport, KeyTable, StateDict, is_cross_attention, rename_keys, strip_prefix, tie_lm_head, without_tied_head,
)

# Its layers are BART's post-LN decoder layer, under the same checkpoint names.
MODULES = LAYER_MODULES
TABLE = KeyTable(
    {
        "decoder.embed_tokens.weight": "embed_tokens.weight",
        **{f"{theirs}.{p}": f"{ours}.{p}" for theirs, ours in MODULES.items() for p in ("weight", "bias")},
        "lm_head.weight": "lm_head.weight",
        "decoder.version": None,  # fairseq bookkeeping
    }
)
POSITIONS_KEY = "decoder.embed_positions.weights"

may_initialize = is_cross_attention  # a decoder trained as a plain LM, warm-started


def position_table(config) -> torch.Tensor:
    """The table transformers 4.x stores: rows 0 .. max_target_positions + 1 (fairseq's offset of 2)."""
    return sinusoids(torch.arange(config.max_target_positions + 2), config.d_model, config.pad_token_id)


def check_positions(stored: torch.Tensor, config) -> str:
    """Raise if a stored sinusoid table is not the one we compute; return a note for the report."""
    rows = stored.shape[0]
    ours = sinusoids(torch.arange(rows), config.d_model, config.pad_token_id)  # (rows, D)
    if stored.shape != ours.shape:
        raise ValueError(
            f"{POSITIONS_KEY} has shape {tuple(stored.shape)}, but d_model={config.d_model}; "
            "config.json does not belong to these weights."
        )
    # Half-precision checkpoints round the table: allow a couple of units in the last place of their dtype.
    tolerance = max(1e-3, 2 * torch.finfo(stored.dtype).eps)
    diff = (stored.float() - ours).abs().max().item()
    if diff > tolerance:
        raise ValueError(
            f"{POSITIONS_KEY} differs from the sinusoidal positions this model computes (max abs difference "
            f"{diff:.3e} > {tolerance:.1e}); the checkpoint was trained with other positions and cannot be "
            "loaded as Speech2Text2 (check pad_token_id and d_model in config.json)."
        )
    return f"{POSITIONS_KEY} ({rows} rows) matches the computed sinusoids (max abs difference {diff:.1e}); not loaded"


def to_ours(hf_state: StateDict, config) -> tuple[StateDict, ConversionReport]:
    report = ConversionReport()
    state = strip_prefix(hf_state, ("model.",), report)
    stored_positions = state.pop(POSITIONS_KEY, None)
    if stored_positions is not None:
        report.notes.append(check_positions(stored_positions, config))  # a note, not `skipped`: nothing is lost
    ours = rename_keys(state, TABLE, report)
    tie_lm_head(ours, config, report)
    return ours, report


def to_checkpoint(our_state: StateDict, config) -> StateDict:
    """Our weights under transformers' Speech2Text2ForCausalLM names (plus the computed position table)."""
    out: StateDict = {}
    for key, tensor in without_tied_head(our_state, config).items():
        name = TABLE.to_checkpoint(key)
        out[name if name == "lm_head.weight" else "model." + name] = tensor
    dtype = our_state["embed_tokens.weight"].dtype
    out["model." + POSITIONS_KEY] = position_table(config).to(dtype)
    return out
