"""CTC checkpoints (transformers' Wav2Vec2ForCTC / HubertForCTC) <-> minispeechseq's Wav2Vec2ForCTC / HubertForCTC.

A CTC model is an encoder plus one Linear, `lm_head` (hidden size -> vocabulary), under the same name on both
sides. transformers stores the encoder under `wav2vec2.` / `hubert.`; ours lives under `encoder.`. So this
converter is a split and a join around the encoder's own converter, which it is given (like the pair's, it
does not import the table; weights_convert/__init__.py builds it).
"""

from __future__ import annotations

from typing import Any

from .core import ConversionReport, StateDict

HEAD = ("lm_head.weight", "lm_head.bias")
PREFIX = {"wav2vec2": "wav2vec2.", "hubert": "hubert."}  # transformers' attribute name of the encoder


class CTCConverter:
    """The converter of a ...ForCTC checkpoint, around the converter of its encoder's model_type."""

    def __init__(self, encoder_converter: Any):
        self.encoder = encoder_converter

    def to_ours(self, state: StateDict, config: Any) -> tuple[StateDict, ConversionReport]:
        head = {k: state[k] for k in HEAD if k in state}
        ours, report = self.encoder.to_ours({k: v for k, v in state.items() if k not in head}, config)
        ours = {"encoder." + k: v for k, v in ours.items()}
        report.loaded = [(theirs, "encoder." + o) for theirs, o in report.loaded]
        report.initialized = ["encoder." + k for k in report.initialized]
        ours.update(head)
        report.loaded += [(k, k) for k in head]
        return ours, report

    def to_checkpoint(self, state: StateDict, config: Any) -> StateDict:
        encoder = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        prefix = PREFIX[config.model_type]
        out = {prefix + k: v for k, v in self.encoder.to_checkpoint(encoder, config).items()}
        out.update({k: state[k] for k in HEAD if k in state})
        return out

    def may_initialize(self, our_key: str) -> bool:
        """The head may be missing (a bare encoder checkpoint, fine-tuned into a CTC model: transformers
        initialises the head too), and whatever the encoder's converter allows."""
        if our_key in HEAD:
            return True
        return our_key.startswith("encoder.") and self.encoder.may_initialize(our_key[len("encoder."):])
