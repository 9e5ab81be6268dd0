"""The machinery every converter shares: key tables with `{}` placeholders, and a report of what happened.

A converter (one module per architecture next to this one) is mostly a table:

    TABLE = {
        "encoder.layers.{}.attention.q_proj.weight": "layers.{}.attn.q_proj.weight",  # checkpoint -> ours
        "lm_head.weight": None,                                                       # dropped on purpose
        "quantizer.*": None,                                                          # a whole subtree dropped
    }

`{}` stands for a layer index (digits) and is carried over; a trailing `*` matches any rest of the key.
The same table read backwards writes our weights in the transformers layout (`KeyTable.to_checkpoint`).
What a table cannot say (transposes, splitting a fused matrix, legacy names) each converter writes out as
a few lines of plain code next to its table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

StateDict = dict[str, torch.Tensor]


class KeyTable:
    """A bidirectional mapping between checkpoint key names and ours, built from a dict with `{}` and `*`."""

    def __init__(self, table: dict[str, str | None]):
        self.table = table
        self._forward: list[tuple[re.Pattern, str | None]] = []
        self._backward: list[tuple[re.Pattern, str]] = []
        for theirs, ours in table.items():
            self._forward.append((self._pattern(theirs), ours))
            if ours is not None:
                self._backward.append((self._pattern(ours), theirs))

    @staticmethod
    def _pattern(template: str) -> re.Pattern:
        escaped = re.escape(template).replace(r"\{\}", r"(\d+)")
        if escaped.endswith(r"\*"):
            escaped = escaped[:-2] + "(.*)"  # captured, so "a.*" -> "b.*" carries the rest of the key over
        return re.compile(escaped + "$")

    @staticmethod
    def _fill(template: str, groups: tuple[str, ...]) -> str:
        rest = groups[-1] if template.endswith("*") else None
        for g in groups[: len(groups) - (rest is not None)]:
            template = template.replace("{}", g, 1)
        return template[:-1] + rest if rest is not None else template

    def to_ours(self, key: str) -> str | None:
        """Our name for a checkpoint key; None if the key is dropped on purpose; KeyError if unknown."""
        for pattern, ours in self._forward:
            m = pattern.match(key)
            if m:
                return None if ours is None else self._fill(ours, m.groups())
        raise KeyError(key)

    def to_checkpoint(self, key: str) -> str:
        """The transformers name of one of our keys (for saving in transformers' layout)."""
        for pattern, theirs in self._backward:
            m = pattern.match(key)
            if m:
                return self._fill(theirs, m.groups())
        raise KeyError(key)


@dataclass
class ConversionReport:
    """What a conversion did, for logs, `minispeechseq inspect`, and error messages."""

    loaded: list[tuple[str, str]] = field(default_factory=list)  # (checkpoint key, our key)
    skipped: list[str] = field(default_factory=list)  # checkpoint keys dropped on purpose (unused heads...)
    unexpected: list[str] = field(default_factory=list)  # checkpoint keys no table knows: an error
    initialized: list[str] = field(default_factory=list)  # our keys absent from the checkpoint, freshly initialised
    notes: list[str] = field(default_factory=list)  # legacy layouts recognised, tensors derived, etc.

    def merge(self, other: "ConversionReport", prefix_ours: str = "", prefix_theirs: str = "") -> None:
        self.loaded += [(prefix_theirs + t, prefix_ours + o) for t, o in other.loaded]
        self.skipped += [prefix_theirs + k for k in other.skipped]
        self.unexpected += [prefix_theirs + k for k in other.unexpected]
        self.initialized += [prefix_ours + k for k in other.initialized]
        self.notes += other.notes


def rename_keys(state: StateDict, table: KeyTable, report: ConversionReport) -> StateDict:
    """Apply `table` to every key of a checkpoint state dict; unknown keys are collected in `report.unexpected`."""
    ours: StateDict = {}
    for key, tensor in state.items():
        try:
            target = table.to_ours(key)
        except KeyError:
            report.unexpected.append(key)
            continue
        if target is None:
            report.skipped.append(key)
        else:
            if target in ours:
                raise ValueError(f"Two checkpoint tensors map to the same weight {target!r} (one of them is {key!r}).")
            ours[target] = tensor
            report.loaded.append((key, target))
    return ours


def strip_prefix(state: StateDict, prefixes: tuple[str, ...], report: ConversionReport | None = None) -> StateDict:
    """Remove the first of `prefixes` that *all* prefixed keys share (e.g. "wav2vec2." of a ...ForCTC checkpoint).

    Only the keys that carry the prefix lose it; the others (a task head such as "lm_head.") are left for the
    table to skip or reject.
    """
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in state):
            if report is not None:
                report.notes.append(f"stripped the {prefix!r} prefix")
            return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}
    return state


def rename_legacy_layernorm(state: StateDict, norm_names: tuple[str, ...], report: ConversionReport) -> StateDict:
    """Old TF-ported checkpoints call LayerNorm parameters `gamma`/`beta`. Rename them, but only when the
    parameter's module is a LayerNorm (its name is one of `norm_names`), never by a global string replace."""
    out: StateDict = {}
    renamed = 0
    for key, tensor in state.items():
        module, _, param = key.rpartition(".")
        if param in ("gamma", "beta") and module.rpartition(".")[2] in norm_names:
            key = f"{module}.{'weight' if param == 'gamma' else 'bias'}"
            renamed += 1
        out[key] = tensor
    if renamed:
        report.notes.append(f"renamed {renamed} legacy LayerNorm gamma/beta tensors")
    return out


# Decoder converters: what a warm start may lack, and the tied LM head.
CROSS_ATTENTION = re.compile(r"layers\.\d+\.cross_attn(_norm)?\.")


def is_cross_attention(our_key: str) -> bool:
    """Cross-attention (and its norm) may be absent from a decoder checkpoint (a plain language model, warm-started
    into a speech decoder): those weights are then initialised."""
    return CROSS_ATTENTION.match(our_key) is not None


def tie_lm_head(ours: StateDict, config: Any, report: ConversionReport) -> None:
    """tie_word_embeddings: the LM head *is* the token embedding matrix. transformers re-ties after loading and
    ignores a stored copy; we do the same, and say so when the stored copy differed."""
    if not config.tie_word_embeddings or "embed_tokens.weight" not in ours:
        return
    stored = ours.get("lm_head.weight")
    if stored is not None and not torch.equal(stored, ours["embed_tokens.weight"]):
        report.notes.append("tie_word_embeddings=True: the checkpoint's separate LM head weight was replaced by the "
                            "token embeddings, as transformers does")
    ours["lm_head.weight"] = ours["embed_tokens.weight"]


def without_tied_head(our_state: StateDict, config: Any) -> StateDict:
    """Our state without the tied copy of the embeddings: transformers 5 saves tied weights once, re-ties on load."""
    if not config.tie_word_embeddings:
        return our_state
    return {k: v for k, v in our_state.items() if k != "lm_head.weight"}
