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
import stat
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from .files.resolve import CONFIG_FILES, resolve_folder

C = TypeVar("C", bound="ConfigMixin")

CONFIG_NAME = "config.json"


# ----------------------------------------------------------------------------------------------- reading files
# Every JSON file the library reads (config.json, generation_config.json, preprocessor_config.json, the tokenizer's
# files, shard indexes) goes through `read_text`, the one place that decides what may be read. A checkpoint folder is
# untrusted input: a `config.json` that is a FIFO would block `open()` forever, one that links to /dev/zero would be
# read until memory runs out, and a 10 GB regular file would be loaded whole. So: stat before opening, refuse anything
# but a regular file, refuse files over a size cap, open with O_NONBLOCK (a FIFO swapped in after the stat cannot
# block the open) and check again on the open file, then read at most the cap.
CONFIG_MAX_BYTES = 64 * 2**20  # the largest real config.json / shard index is a few MB; 64 MiB is headroom, not a limit
# tokenizer.json holds a whole vocabulary: the largest public ones (262k-token vocabularies, such as Gemma 3's) are
# about 35 MB. `tokenizers` then builds an in-memory model several times the file's size, so 512 MiB of JSON already
# means gigabytes of memory: past that, a file is a mistake or an attack, not a tokenizer.
TOKENIZER_MAX_BYTES = 512 * 2**20


def file_kind(mode: int) -> str:
    """What a stat mode is, for errors: 'a FIFO', 'a character device'..."""
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"))
    return next((name for test, name in kinds if test(mode)), "a regular file" if stat.S_ISREG(mode) else "a special file")


def _check_regular(path: str, info: os.stat_result, what: str, max_bytes: float) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path} is {file_kind(info.st_mode)}, not a regular file; a {what} must be a plain file.")
    if info.st_size > max_bytes:
        raise ValueError(f"{path} is {info.st_size:,} bytes, more than the {max_bytes:,} a {what} may have; "
                         "it is not a file minispeechseq wrote or reads.")


def check_regular_file(path: str | os.PathLike, what: str, max_bytes: float = float("inf")) -> None:
    """Refuse `path` unless it is a regular file (after symlinks) of at most `max_bytes`: for files that other
    libraries open by name (weights, vocab.txt), so that a FIFO or a device never reaches their `open()`."""
    try:
        _check_regular(os.fspath(path), os.stat(path), what, max_bytes)  # follows symlinks: the target is read
    except FileNotFoundError:
        raise FileNotFoundError(f"No {what} at {os.fspath(path)}.") from None


def read_text(path: str | os.PathLike, what: str, max_bytes: int = CONFIG_MAX_BYTES) -> str:
    """The UTF-8 text of the regular file `path`, at most `max_bytes` long (see the comment above). `what` names the
    file in the errors: missing, not a regular file, too large, or not UTF-8."""
    path = os.fspath(path)
    check_regular_file(path, what, max_bytes)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"No {what} at {path}.") from None
    with os.fdopen(fd, "rb") as f:
        _check_regular(path, os.fstat(fd), what, max_bytes)  # the file may have been swapped since the stat
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew while we read
        raise ValueError(f"{path} is more than the {max_bytes:,} bytes a {what} may have.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e}); a {what} was expected.") from None


def read_json(path: str | os.PathLike, what: str, max_bytes: int = CONFIG_MAX_BYTES) -> dict[str, Any]:
    """The JSON object stored in `path` (config.json, preprocessor_config.json, a shard index...), read by
    `read_text`. `what` names the file in the errors, which also cover invalid JSON and JSON that is not an object."""
    text = read_text(path, what, max_bytes)
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{os.fspath(path)} is not valid JSON ({e}); a {what} was expected.") from None
    if not isinstance(value, dict):
        raise ValueError(f"{os.fspath(path)} holds a JSON {type(value).__name__}, but a {what} is a JSON object.")
    return value


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
    # Keys that are computed, not stored, and so never written by `to_dict`.
    _derived_keys: ClassVar[tuple[str, ...]] = ()
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
        extra = {k: v for k, v in d.items() if k not in names and k != "model_type" and k not in cls._derived_keys}
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

    def __getattr__(self, name: str) -> Any:
        # Unknown config.json keys stay readable as attributes (config.architectures...), as in transformers.
        if name != "extra" and not name.startswith("__"):
            extra = self.__dict__.get("extra") or {}
            if name in extra:
                return extra[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")


def extra_field() -> Any:
    """The `extra` dataclass field: unknown config.json keys, kept for the round trip."""
    return dataclasses.field(default_factory=dict, repr=False, compare=False)
