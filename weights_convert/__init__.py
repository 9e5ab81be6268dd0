"""Key-mapping converters: transformers checkpoint names <-> minispeechseq names, one module per architecture.

This folder installs as `minispeechseq.weights_convert` (setup.cfg's package_dir): import it under that name.

Each converter module has `to_ours(state, config) -> (our state, ConversionReport)`, `to_checkpoint(our state,
config) -> state` and `may_initialize(our_key)` (which of our weights a checkpoint may lack). Loading a model
finds its converter in the one table below, by the `model_type` of its config.json. Imports go one way: the
models never import a converter, and the converters import no model (only torch and minispeechseq.layers).
"""

from __future__ import annotations

from typing import Any

from . import bart, bert, gpt2, speech2text2, wav2vec2
from .ctc import CTCConverter
from .pretraining import PreTrainingConverter
from .speech_encoder_decoder import PairConverter

# model_type (config.json) -> its converter.
CONVERTERS: dict[str, Any] = {
    "wav2vec2": wav2vec2,
    "hubert": wav2vec2,  # the same encoder, under the same checkpoint names
    "bert": bert,
    "gpt2": gpt2,
    "bart": bart,
    "mbart": bart,  # BART's names; only the final layer norm is added
    "speech_to_text_2": speech2text2,
}
CONVERTERS["speech-encoder-decoder"] = PairConverter(CONVERTERS)  # each half through the table above


# A task head on top of an architecture (the model class says which: its `checkpoint_head`) -> the converter
# that wraps the architecture's.
HEADS: dict[str, Any] = {"ctc": CTCConverter, "pretraining": PreTrainingConverter}


def converter_for(model_type: str | None, head: str | None = None) -> Any:
    """The converter of checkpoints whose config.json says `model_type`; with `head`, of that task model."""
    if model_type not in CONVERTERS:
        raise ValueError(f"No converter for model_type={model_type!r}; known: {', '.join(CONVERTERS)}.")
    if head is None:
        return CONVERTERS[model_type]
    if head not in HEADS:
        raise ValueError(f"No converter for a {head!r} head; known heads: {', '.join(HEADS)}.")
    return HEADS[head](CONVERTERS[model_type])
