"""The one base every config in minispeechseq shares.

Each model's config is a plain `@dataclass` whose field names and defaults are the keys of transformers'
`config.json`, so a real `config.json` reads straight into it. This mixin adds the four ways in and out:
`from_dict`, `from_json_file` / `from_pretrained(folder)`, `to_dict`, `save_pretrained(folder)`.

Keys we do not model (there are many: `architectures`, `torch_dtype`, task-specific heads...) are kept in
`extra` and written back by `to_dict`, so reading and writing a config loses nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, ClassVar, TypeVar

from .resolve import CONFIG_FILES, resolve_folder

C = TypeVar("C", bound="ConfigMixin")

CONFIG_NAME = "config.json"


def read_json(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """The JSON object stored in `path` (config.json, preprocessor_config.json, a shard index...). `what` names
    the file in the errors: a missing file, invalid JSON, or JSON that is not an object."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No {what} at {os.fspath(path)}.")
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{os.fspath(path)} is not valid JSON ({e}); a {what} was expected.") from None
    if not isinstance(value, dict):
        raise ValueError(f"{os.fspath(path)} holds a JSON {type(value).__name__}, but a {what} is a JSON object.")
    return value


class ConfigMixin:
    """Mixin for dataclass configs. Subclasses set `model_type` (the value config.json carries)."""

    model_type: ClassVar[str] = ""
    # Keys that are computed, not stored, and so never written by `to_dict`.
    _derived_keys: ClassVar[tuple[str, ...]] = ()

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
        return cls.from_dict(read_json(path, "transformers config.json"))

    @classmethod
    def from_pretrained(cls: type[C], folder: str | os.PathLike, *, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, local_files_only: bool = False,
                        **overrides: Any) -> C:
        """Read `folder/config.json` (or a config.json path directly); a hub id is found through huggingface_hub
        (`revision`, `cache_dir`, `local_files_only` as in transformers; see resolve.py)."""
        folder = resolve_folder(folder, what=f"folder with {CONFIG_NAME}", allow_file=True, patterns=CONFIG_FILES,
                                revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
        path = os.path.join(folder, CONFIG_NAME) if os.path.isdir(folder) else folder
        if not os.path.exists(path):
            raise FileNotFoundError(f"{folder} has no {CONFIG_NAME}; a transformers checkpoint folder was expected.")
        config = cls.from_json_file(path)
        for k, v in overrides.items():
            setattr(config, k, v)
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
