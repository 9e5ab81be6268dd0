"""GenerationConfig: every knob of `generate`, with transformers' names, defaults and file format.

A checkpoint folder may carry `generation_config.json` (transformers writes one next to `config.json`).
`model.generation_config` is read from it when present, else built from the model config's token ids
(`from_model_config`). A call to `generate(..., **kwargs)` then overrides fields for that call only
(`update`), and an unknown kwarg is an error rather than a silent no-op.

Lengths count the decoder start token: `max_length=20` means the start token plus 19 generated tokens
(transformers' convention). `max_new_tokens`, when set, wins over `max_length` and counts only new tokens.

Every setting is checked when a config is made or updated (config.py's `validate`): its type, a finite value for
every float (a NaN compares false with everything, so it would pass every range check), sizes >= 1. Settings that only matter for one strategy
(temperature > 0 when sampling, top_p in (0, 1]) are checked by their processors; token ids against the
vocabulary by `generate`, which knows it. A None for a setting that cannot be None (num_beams, temperature...)
means "not given", as transformers 5 writes unset settings, so a caller can forward its own None defaults.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import COUNT, SIZE, ConfigMixin, extra_field, optional, rules
from ..files.resolve import CONFIG_FILES, resolve_folder

GENERATION_CONFIG_NAME = "generation_config.json"

# When neither the call, nor generation_config.json, nor the model sets a length, transformers (>= 5)
# generates this many new tokens (max_length = 20 + the start token).
DEFAULT_MAX_NEW_TOKENS = 20


@dataclass
class GenerationConfig(ConfigMixin):
    # ------------------------------------------------------------------------------------ length
    max_length: int | None = None  # total length, start token included; None -> 20 new tokens
    max_new_tokens: int | None = None  # generated tokens only; wins over max_length when set
    min_length: int = 0  # EOS is forbidden while the sequence (start token included) is shorter
    min_new_tokens: int | None = None  # the same counted in new tokens; wins over min_length when set
    # -------------------------------------------------------------------------------- strategy
    do_sample: bool = False  # False: greedy (num_beams=1) or beam search; True: multinomial sampling
    num_beams: int = 1  # 1 = no beam search
    num_return_sequences: int = 1  # rows per input; must be <= num_beams for beam search
    # Beam search stopping rule (transformers' semantics): True stops an utterance once num_beams hypotheses
    # are finished; False stops when a heuristic (best running score at the *current* length) says no running
    # beam can beat the worst finished one; "never" uses the best score reachable by max_length (with a positive
    # length_penalty), i.e. canonical beam search.
    early_stopping: bool | str = False
    length_penalty: float = 1.0  # finished score = sum log-probs / (new tokens ** length_penalty)
    # ------------------------------------------------------------------------------- sampling
    temperature: float = 1.0  # logits / temperature before top-k / top-p; must be > 0 when sampling
    top_k: int | None = 50  # keep the k most likely tokens (ties with the k-th kept); 0 / None = off
    top_p: float = 1.0  # keep the smallest set whose probability reaches top_p; 1.0 = off
    # -------------------------------------------------------------------------- token control
    repetition_penalty: float = 1.0  # CTRL paper: divide positive / multiply negative scores of seen tokens
    no_repeat_ngram_size: int = 0  # forbid any n-gram of this size from appearing twice; 0 = off
    bad_words_ids: list[list[int]] | None = None  # token sequences that must never be generated
    suppress_tokens: list[int] | None = None  # tokens that are never generated
    forced_bos_token_id: int | None = None  # token forced right after the start token (mBART target language)
    forced_eos_token_id: int | list[int] | None = None  # token forced as the last one when max_length is reached
    # --------------------------------------------------------------------------- special ids
    decoder_start_token_id: int | None = None  # the first decoder token of every sequence
    bos_token_id: int | None = None  # used as start token when decoder_start_token_id is unset
    eos_token_id: int | list[int] | None = None  # one id or several; a sequence ends at any of them
    pad_token_id: int | None = None  # fills finished rows; defaults to the first EOS id
    # ---------------------------------------------------------------------------- timestamps
    # The cross-attention heads whose maps follow the audio, [[layer, head], ...] (as Whisper's generation
    # config); word timestamps read them. None: chosen per utterance (minispeechseq/recognition/timestamps.py).
    alignment_heads: list[list[int]] | None = None
    # ------------------------------------------------------------------------------- outputs
    use_cache: bool = True  # False re-runs the whole prefix every step (slow; a check of the cache)
    return_dict_in_generate: bool = False  # a GenerateOutput instead of the bare token ids (see outputs.py)
    output_scores: bool = False  # with it: the processed scores of every step
    output_logits: bool = False  # with it: the raw logits of every step
    output_attentions: bool = False  # with it: encoder, decoder and cross-attention weights (eager attention)
    output_hidden_states: bool = False  # with it: the encoder's and every step's decoder hidden states
    extra: dict = extra_field()  # noqa: RUF009 (it returns a dataclasses.field)

    # What each setting accepts beyond its annotated type (config.py: validate; floats must be finite).
    _rules: ClassVar = rules({
        SIZE: ("num_beams", "num_return_sequences"),
        optional(SIZE): ("max_length",),
        COUNT: ("min_length", "no_repeat_ngram_size"),
        optional(COUNT): ("min_new_tokens", "top_k"),
    })

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) is None and f.name not in self.nullable_fields():
                setattr(self, f.name, f.default)  # None = unset = the default (transformers 5's files write it)
        super().__post_init__()

    @classmethod
    def nullable_fields(cls) -> set[str]:
        """The settings for which None means something (off, or "use another setting")."""
        return {f.name for f in dataclasses.fields(cls) if "None" in str(f.type)}

    # ------------------------------------------------------------------------------- files
    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, config_file_name: str | os.PathLike | None = None, *,
                        revision: str | None = None, cache_dir: str | os.PathLike | None = None,
                        local_files_only: bool = False, **overrides: Any) -> GenerationConfig:
        """Read `folder/generation_config.json` (or that file's path); a hub id is found through huggingface_hub
        (`revision`, `cache_dir`, `local_files_only` as in transformers; see files/resolve.py).

        `config_file_name` reads another file of the folder, as transformers' argument of that name (several
        generation setups saved side by side: `save_pretrained(folder, config_file_name="beam.json")`)."""
        name = os.fspath(config_file_name) if config_file_name is not None else GENERATION_CONFIG_NAME
        folder = resolve_folder(folder, what=f"folder with {name}", allow_file=config_file_name is None,
                                patterns=(*CONFIG_FILES, name), revision=revision, cache_dir=cache_dir,
                                local_files_only=local_files_only)
        path = os.path.join(folder, name) if os.path.isdir(folder) else folder
        if not os.path.exists(path):
            raise FileNotFoundError(f"{folder} has no {name}; it is written by save_pretrained.")
        config = cls.from_json_file(path)
        return config.update(**overrides) if overrides else config

    def save_pretrained(self, folder: str | os.PathLike, config_file_name: str | os.PathLike | None = None) -> None:
        """Write `folder/generation_config.json`, or `folder/<config_file_name>` (transformers' argument)."""
        name = os.fspath(config_file_name) if config_file_name is not None else GENERATION_CONFIG_NAME
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
            f.write(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_model_config(cls, config: Any) -> GenerationConfig:
        """The token ids a model config carries (decoder_start/bos/eos/pad), everything else default."""
        ids = ("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id")
        return cls(**{name: getattr(config, name, None) for name in ids})

    # ------------------------------------------------------------------------------- overrides
    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls) if f.name != "extra"}

    def update(self, **kwargs: Any) -> GenerationConfig:
        """A copy with `kwargs` set. An unknown name is a ValueError: a typo must not silently do nothing.
        None for a setting that cannot be None keeps the current value (see the module doc)."""
        unknown = sorted(set(kwargs) - self.field_names())
        if unknown:
            raise ValueError(
                f"Unknown generation argument(s) {unknown}. Known ones are the GenerationConfig fields: "
                f"{sorted(self.field_names())}, plus inputs, decoder_input_ids, encoder_outputs, generator and "
                "return_dict."
            )
        nullable = self.nullable_fields()
        kwargs = {k: v for k, v in kwargs.items() if v is not None or k in nullable}
        return dataclasses.replace(self, extra=dict(self.extra), **kwargs)
