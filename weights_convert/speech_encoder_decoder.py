"""SpeechEncoderDecoderModel checkpoints: `encoder.*` + `decoder.*` + `enc_to_dec_proj.*`.

The halves are converted by their own architecture's converter (their keys, after the prefix, are those of a
bare Wav2Vec2Model/HubertModel and of an XxxForCausalLM), so this file is only the split and the join. It is
given the table of converters (weights_convert/__init__.py) rather than importing it, so imports go one way.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .core import ConversionReport, StateDict

PROJECTION = ("enc_to_dec_proj.weight", "enc_to_dec_proj.bias")  # the same name on both sides
HALVES = ("encoder.", "decoder.")


def _split(state: StateDict, prefix: str) -> StateDict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


class PairConverter:
    """The converter of a speech-encoder-decoder checkpoint: each half through the converter of its model_type."""

    def __init__(self, converters: dict[str, Any]):
        self.converters = converters  # model_type -> converter (the table in weights_convert/__init__.py)

    def half(self, sub_config: Any) -> ModuleType:
        model_type = getattr(sub_config, "model_type", None)
        if model_type not in self.converters:
            raise ValueError(f"No converter for model_type={model_type!r}; known: {', '.join(self.converters)}.")
        return self.converters[model_type]

    def to_ours(self, state: StateDict, config: Any) -> tuple[StateDict, ConversionReport]:
        report = ConversionReport()
        ours: StateDict = {}
        for prefix, sub_config in zip(HALVES, (config.encoder, config.decoder)):
            sub_ours, sub_report = self.half(sub_config).to_ours(_split(state, prefix), sub_config)
            ours.update({prefix + k: v for k, v in sub_ours.items()})
            report.merge(sub_report, prefix_ours=prefix, prefix_theirs=prefix)
        for key in PROJECTION:
            if key in state:
                ours[key] = state[key]
                report.loaded.append((key, key))
        report.unexpected += [k for k in state if not k.startswith(HALVES) and k not in PROJECTION]
        return ours, report

    def to_checkpoint(self, state: StateDict, config: Any) -> StateDict:
        out: StateDict = {}
        for prefix, sub_config in zip(HALVES, (config.encoder, config.decoder)):
            sub = self.half(sub_config).to_checkpoint(_split(state, prefix), sub_config)
            out.update({prefix + k: v for k, v in sub.items()})
        out.update({k: state[k] for k in PROJECTION if k in state})
        return out

    def may_initialize(self, our_key: str) -> bool:
        """Nothing of a saved pair may be missing: a speech-encoder-decoder checkpoint holds both halves whole."""
        return False
