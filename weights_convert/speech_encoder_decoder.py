"""SpeechEncoderDecoderModel checkpoints: `encoder.*` + `decoder.*` + `enc_to_dec_proj.*`.

The halves are converted by their own architecture's converter (their keys, after the prefix, are those of a
bare Wav2Vec2Model/HubertModel and of an XxxForCausalLM), so this file is only the split and the join.
"""

from __future__ import annotations

import importlib
from typing import Any

from .core import ConversionReport, StateDict

# model_type -> the converter module of that architecture
CONVERTERS = {
    "wav2vec2": "weights_convert.wav2vec2",
    "hubert": "weights_convert.wav2vec2",
    "bert": "weights_convert.bert",
    "gpt2": "weights_convert.gpt2",
    "bart": "weights_convert.bart",
    "mbart": "weights_convert.bart",
    "speech_to_text_2": "weights_convert.speech2text2",
}
PROJECTION = ("enc_to_dec_proj.weight", "enc_to_dec_proj.bias")  # the same name on both sides


def converter_for(config: Any):
    model_type = getattr(config, "model_type", None)
    if model_type not in CONVERTERS:
        raise ValueError(f"No converter for model_type={model_type!r}; known: {', '.join(CONVERTERS)}.")
    return importlib.import_module(CONVERTERS[model_type])


def _split(state: StateDict, prefix: str) -> StateDict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def to_ours(state: StateDict, config: Any) -> tuple[StateDict, ConversionReport]:
    report = ConversionReport()
    ours: StateDict = {}
    for half, sub_config in (("encoder.", config.encoder), ("decoder.", config.decoder)):
        sub_ours, sub_report = converter_for(sub_config).to_ours(_split(state, half), sub_config)
        ours.update({half + k: v for k, v in sub_ours.items()})
        report.merge(sub_report, prefix_ours=half, prefix_theirs=half)
    for key in PROJECTION:
        if key in state:
            ours[key] = state[key]
            report.loaded.append((key, key))
    report.unexpected += [
        k for k in state if not k.startswith(("encoder.", "decoder.")) and k not in PROJECTION
    ]
    return ours, report


def to_checkpoint(state: StateDict, config: Any) -> StateDict:
    out: StateDict = {}
    for half, sub_config in (("encoder.", config.encoder), ("decoder.", config.decoder)):
        sub = converter_for(sub_config).to_checkpoint(_split(state, half), sub_config)
        out.update({half + k: v for k, v in sub.items()})
    out.update({k: state[k] for k in PROJECTION if k in state})
    return out
