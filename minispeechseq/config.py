"""The one base every config in minispeechseq shares.

Each model's config is a plain `@dataclass` whose field names and defaults are the keys of transformers'
`config.json`, so a real `config.json` reads straight into it. This mixin adds the four ways in and out:
`from_dict`, `from_json_file` / `from_pretrained(folder)`, `to_dict`, `save_pretrained(folder)`.

Keys we do not model (there are many: `architectures`, `torch_dtype`, task-specific heads...) are kept in
`extra` and written back by `to_dict`, so reading and writing a config loses nothing.

Every config checks its fields when it is made (`validate`, from `__post_init__`) and again when a model is built
from it (after any attribute edits): each field's type comes from its annotation, its range from the class's
`_rules` table (sizes >= 1, probabilities in [0, 1]...), and the rules between fields (heads dividing the width)
from `_relations`. A wrong value is a `ConfigError` naming the file, the field, the value and what was expected,
raised before a single tensor is allocated.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from .files.readers import read_json
from .files.resolve import CONFIG_FILES, resolve_folder

C = TypeVar("C", bound="ConfigMixin")

CONFIG_NAME = "config.json"


# ---------------------------------------------------------------------------------------------- field checks
class ConfigError(ValueError):
    """A config field of the wrong type or range, or fields that contradict each other."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a field accepts: `expected` completes "must be ...", `ok` tests a value."""

    expected: str
    ok: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # JSON true is no size


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


INT = Rule("an int", _is_int)
NUMBER = Rule("a finite number", _is_number)
FLAG = Rule("true or false", lambda v: isinstance(v, bool))
TEXT = Rule("a string", lambda v: isinstance(v, str))
SIZE = Rule("an int >= 1", lambda v: _is_int(v) and v >= 1)
COUNT = Rule("an int >= 0", lambda v: _is_int(v) and v >= 0)
PROBABILITY = Rule("a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1)
POSITIVE = Rule("a finite number > 0", lambda v: _is_number(v) and v > 0)
NON_NEGATIVE = Rule("a finite number >= 0", lambda v: _is_number(v) and v >= 0)
SIZES = Rule("a non-empty list of ints >= 1", lambda v: isinstance(v, (list, tuple)) and len(v) > 0
             and all(SIZE.ok(x) for x in v))


def optional(rule: Rule) -> Rule:
    return Rule(f"{rule.expected} or null", lambda v: v is None or rule.ok(v))


def one_of(*choices: Any) -> Rule:
    return Rule(f"one of {', '.join(map(repr, choices))}", lambda v: v in choices)


def rules(table: dict[Rule, tuple[str, ...]]) -> dict[str, Rule]:
    """{rule: field names} -> {field name: rule}: a class's `_rules`, written one line per kind of field."""
    return {name: rule for rule, names in table.items() for name in names}


def decoder_parameters(vocab: int, width: int, layers: int, ffn: int, positions: int, cross_width: int | None,
                       has_cross: bool = True) -> int:
    """A text decoder's weight count without biases and norms (a lower bound, for the memory check before building):
    embeddings (the head is tied to them), then per layer self-attention, cross-attention and the feed-forward block."""
    # Cross-attention: q and o read the decoder's width, k and v the encoder's.
    cross = 2 * width * width + 2 * width * (cross_width or width) if has_cross else 0
    return (vocab + positions) * width + layers * (4 * width * width + cross + 2 * width * ffn)


def divides(config: Any, part: str, whole: str) -> tuple[bool, str]:
    """The relation "field `part` divides field `whole`" (attention heads and the width they split)."""
    p, w = getattr(config, part), getattr(config, whole)
    return w % p == 0, f"{whole} ({w}) must be divisible by {part} ({p}), which splits it into equal parts."


# A field without a rule of its own is at least of its annotated type (annotations are strings here, as written).
BY_ANNOTATION = {"int": INT, "int | None": optional(INT), "float": NUMBER, "float | None": optional(NUMBER),
                 "bool": FLAG, "str": TEXT, "str | None": optional(TEXT), "tuple[int, ...]": SIZES}


class ConfigMixin:
    """Mixin for dataclass configs. Subclasses set `model_type` (the value config.json carries)."""

    model_type: ClassVar[str] = ""
    # transformers' generic names for fields a config calls otherwise (its `attribute_map`: GPT-2's n_embd is also
    # `hidden_size`), so that code reading any decoder's config asks one set of names. An alias reads and writes
    # its field; it is not a key of its own, so config.json never stores it (nor does `extra` keep one it holds).
    attribute_map: ClassVar[dict[str, str]] = {}
    # Field name -> the Rule of its values, where the annotation alone says too little (see `rules`).
    _rules: ClassVar[dict[str, Rule]] = {}

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a ConfigError at the first field of the wrong type or range, or the first broken relation."""
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            rule = self._rules.get(f.name) or BY_ANNOTATION.get(str(f.type))
            value = getattr(self, f.name)
            if rule is not None and not rule.ok(value):
                raise ConfigError(f"{f.name} must be {rule.expected}, got {value!r}.")
        for ok, message in self._relations():
            if not ok:
                raise ConfigError(message)

    def _relations(self) -> list[tuple[bool, str]]:
        """(holds, what to say when not) for rules between fields; called once every field passed its own."""
        return []

    # ---------------------------------------------------------------------------------------------- in
    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any], **overrides: Any) -> C:
        if not isinstance(d, dict):
            raise ValueError(f"{cls.__name__}.from_dict expects a dict, got {type(d).__name__}.")
        d = {**d, **overrides}
        found = d.get("model_type")
        if cls.model_type and found is not None and found != cls.model_type:
            raise ValueError(
                f"This config.json is for model_type={found!r}, but {cls.__name__} reads "
                f"model_type={cls.model_type!r}. Use the config class of that model."
            )
        names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        known = {k: v for k, v in d.items() if k in names}
        # Not stored: aliases, and values computed from the fields (properties, such as Wav2Vec2Config's
        # num_feat_extract_layers, which transformers writes into config.json).
        computed = {k for k in d if k in cls.attribute_map or isinstance(getattr(cls, k, None), property)}
        extra = {k: v for k, v in d.items() if k not in names and k != "model_type" and k not in computed}
        config = cls(**known)
        config.extra = extra
        return config

    @classmethod
    def from_json_file(cls: type[C], path: str | os.PathLike) -> C:
        d = read_json(path, "transformers config.json")
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{os.fspath(path)}: {e}") from None

    @classmethod
    def from_pretrained(cls: type[C], folder: str | os.PathLike, *, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, local_files_only: bool = False,
                        **overrides: Any) -> C:
        """Read `folder/config.json` (or a config.json path directly); a hub id is found through huggingface_hub
        (`revision`, `cache_dir`, `local_files_only` as in transformers; see files/resolve.py)."""
        folder = resolve_folder(folder, what=f"folder with {CONFIG_NAME}", allow_file=True, patterns=CONFIG_FILES,
                                revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
        path = os.path.join(folder, CONFIG_NAME) if os.path.isdir(folder) else folder
        if not os.path.exists(path):
            raise FileNotFoundError(f"{folder} has no {CONFIG_NAME}; a transformers checkpoint folder was expected.")
        config = cls.from_json_file(path)
        for k, v in overrides.items():
            setattr(config, k, v)
        if overrides:
            config.validate()
        return config

    # --------------------------------------------------------------------------------------------- out
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(getattr(self, "extra", {}) or {})
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if isinstance(value, ConfigMixin):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        if self.model_type:
            out["model_type"] = self.model_type
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, CONFIG_NAME), "w", encoding="utf-8") as f:
            f.write(self.to_json_string())

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(type(self).attribute_map.get(name, name), value)

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not attributes: an alias reads its field (see `attribute_map`), and
        # unknown config.json keys stay readable as attributes (config.architectures...), as in transformers.
        if name in type(self).attribute_map:
            return getattr(self, type(self).attribute_map[name])
        if name != "extra" and not name.startswith("__"):
            extra = self.__dict__.get("extra") or {}
            if name in extra:
                return extra[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")


def extra_field() -> Any:
    """The `extra` dataclass field: unknown config.json keys, kept for the round trip."""
    return dataclasses.field(default_factory=dict, repr=False, compare=False)
