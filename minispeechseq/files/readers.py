"""Reading untrusted files: the one place that decides what may be read.

Every JSON file the library reads goes through `read_text` (see the comment below), and files that other libraries
open by name (weights, vocab.txt) are checked by `check_regular_file` first. The config classes, the feature
extractor, the tokenizer and the checkpoint reader import them from here.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

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
