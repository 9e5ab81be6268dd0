"""Decoding in three parts, each readable and testable alone (see STYLE.md, principle 5):

- `logits_process.py`: pure logit processors (repetition penalty, n-gram blocking, forced tokens, top-k...);
- `search.py`: the token selectors (greedy, sampling) and the beam bookkeeping;
- `loop.py`: one short loop, `generate(model, input_values, ...)`, that ties them to a model;
- `settings.py`: one call's settings resolved and checked (prompt, lengths, token ids, memory) before the loop;
- `outputs.py`: what `return_dict_in_generate` returns, and `compute_transition_scores`.

`config.py` holds `GenerationConfig`, every knob with transformers' name and default.
"""

from .config import GenerationConfig
from .logits_process import (
    ForceToken,
    MinLength,
    NoBadWords,
    NoRepeatNGram,
    RepetitionPenalty,
    SuppressTokens,
    Temperature,
    TopK,
    TopP,
    apply_processors,
    build_processors,
)
from .loop import generate
from .outputs import GenerateOutput, compute_transition_scores
from .search import BeamSearch, greedy, sample

__all__ = [
    "BeamSearch",
    "ForceToken",
    "GenerateOutput",
    "GenerationConfig",
    "MinLength",
    "NoBadWords",
    "NoRepeatNGram",
    "RepetitionPenalty",
    "SuppressTokens",
    "Temperature",
    "TopK",
    "TopP",
    "apply_processors",
    "build_processors",
    "compute_transition_scores",
    "generate",
    "greedy",
    "sample",
]
