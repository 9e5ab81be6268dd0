"""wav2vec2 pre-training checkpoints (transformers' Wav2Vec2ForPreTraining) <-> minispeechseq's Wav2Vec2ForPreTraining.

transformers stores the encoder under `wav2vec2.` (ours: `encoder.`, through the encoder's own converter, which it
is given, like the CTC one) and the pre-training head beside it. The head's table, checkpoint -> ours:

    quantizer.codevectors         (1, G V, d / G)  ->  quantizer.codevectors  (G, V, d / G)   the one reshape
    quantizer.weight_proj.*       Linear C -> G V  ->  quantizer.proj.*
    project_hid.*, project_q.*                     ->  the same names

Every tensor of such a checkpoint is loaded; none is skipped.
"""

from __future__ import annotations

from typing import Any

from .core import ConversionReport, KeyTable, StateDict

TABLE = KeyTable({
    "quantizer.codevectors": "quantizer.codevectors",
    "quantizer.weight_proj.weight": "quantizer.proj.weight",
    "quantizer.weight_proj.bias": "quantizer.proj.bias",
    **{f"{m}.{p}": f"{m}.{p}" for m in ("project_hid", "project_q") for p in ("weight", "bias")},
})
HEAD = tuple(TABLE.table)
CODEVECTORS = "quantizer.codevectors"
ENCODER_PREFIX = "wav2vec2."


def to_ours(state: StateDict, config: Any, encoder: Any) -> tuple[StateDict, ConversionReport]:
    head = {k: state[k] for k in HEAD if k in state}
    body = {k: v for k, v in state.items() if k not in head}
    ours, report = encoder.to_ours(body, config)
    ours = {"encoder." + k: v for k, v in ours.items()}
    # The report names checkpoint tensors as the file does: the prefix the encoder's converter stripped, put back.
    theirs_prefix = ENCODER_PREFIX if any(k.startswith(ENCODER_PREFIX) for k in body) else ""
    report.loaded = [(theirs_prefix + theirs, "encoder." + o) for theirs, o in report.loaded]
    report.skipped = [theirs_prefix + k for k in report.skipped]
    report.initialized = ["encoder." + k for k in report.initialized]
    for key, tensor in head.items():
        target = TABLE.to_ours(key)
        if key == CODEVECTORS:
            G, V = config.num_codevector_groups, config.num_codevectors_per_group
            if tensor.dim() != 3 or tensor.shape[:2] != (1, G * V):
                raise ValueError(f"{key} has shape {tuple(tensor.shape)}; with num_codevector_groups={G} and "
                                 f"num_codevectors_per_group={V} it should be (1, {G * V}, codevector_dim / {G}). "
                                 "Check that config.json belongs to these weights.")
            tensor = tensor.reshape(G, V, tensor.shape[-1])  # (1, G V, d/G) -> (G, V, d/G)
        ours[target] = tensor
        report.loaded.append((key, target))
    return ours, report


def to_checkpoint(state: StateDict, config: Any, encoder: Any) -> StateDict:
    enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    out = {ENCODER_PREFIX + k: v for k, v in encoder.to_checkpoint(enc, config).items()}
    for key, tensor in state.items():
        if key.startswith("encoder."):
            continue
        if key == CODEVECTORS:
            tensor = tensor.reshape(1, -1, tensor.shape[-1])  # (G, V, d/G) -> (1, G V, d/G)
        out[TABLE.to_checkpoint(key)] = tensor
    return out


class PreTrainingConverter:
    """The converter of a Wav2Vec2ForPreTraining checkpoint, around the converter of its encoder."""

    def __init__(self, encoder_converter: Any):
        self.encoder = encoder_converter

    def to_ours(self, state: StateDict, config: Any) -> tuple[StateDict, ConversionReport]:
        return to_ours(state, config, self.encoder)

    def to_checkpoint(self, state: StateDict, config: Any) -> StateDict:
        return to_checkpoint(state, config, self.encoder)

    def may_initialize(self, our_key: str) -> bool:
        """The head may be missing (a bare encoder or CTC-less checkpoint, pre-training continued from it: transformers
        initialises the head too), and whatever the encoder's converter allows."""
        if not our_key.startswith("encoder."):
            return True
        return self.encoder.may_initialize(our_key[len("encoder."):])
