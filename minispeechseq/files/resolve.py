"""Where a `from_pretrained` argument points: a local folder, or a hub id in huggingface_hub's cache.

Every loader (the models, each config, the generation config, the feature extractor, the tokenizer, the processor
and the command line) calls `resolve_folder` first, then reads plain files from the folder it returns. So they all
accept the same names, tried in the order transformers tries them:

1. A local path that exists wins. (If a save died between its two renames, the checkpoint it moved aside is put
   back first: see `recover_interrupted_save` in saves.py.)
2. Otherwise a name shaped like a hub id (`org/name`, or a bare `name`) is looked up with huggingface_hub's
   `snapshot_download`, when huggingface_hub is installed. It reads its environment (`HF_HOME`, `HF_HUB_CACHE`,
   `HF_HUB_OFFLINE`, taken when huggingface_hub is imported) and takes transformers' `revision=`, `cache_dir=` and
   `local_files_only=` arguments. The cache it reads is the one transformers fills:

       <HF_HUB_CACHE>/models--org--name/refs/main                  the commit hash that `main` points to
       <HF_HUB_CACHE>/models--org--name/snapshots/<commit>/...     the files of that commit

3. Otherwise one FileNotFoundError that says what was tried: the local path, then the hub and why it failed.

No torch here: config.py loads configs through this module, and a config needs no tensors.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from .saves import recover_interrupted_save

# huggingface_hub's rule for repo ids (utils/_validators.py), simplified: `name` or `namespace/name`, in ASCII
# letters, digits, `-`, `_` and `.`, without `--` or `..`. An absolute path, `./ckpt` or `a/b/c` is no hub id, so
# a missing local folder gets a plain "not found" instead of a hub lookup.
_HUB_ID = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_.-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*")

# transformers' keyword arguments for where a checkpoint comes from; every from_pretrained takes them.
HUB_KWARGS = ("revision", "cache_dir", "local_files_only")

# The files each kind of loader reads, so that online it downloads only those (a tokenizer needs no weights, and
# hub repos often hold TensorFlow, Flax or ONNX copies nobody here reads). Offline they change nothing.
MODEL_FILES = ("*.json", "*.safetensors", "*.bin")  # config.json, generation_config.json, weights (or shards + index)
CONFIG_FILES = ("*.json",)
PREPROCESSING_FILES = ("*.json", "*.txt", "*.model")  # preprocessor_config.json, tokenizer.json, vocab.txt, merges.txt


class NotAFolderError(FileNotFoundError, ValueError):
    """A file given where a folder was expected. Both kinds, because before this module the model loaders raised a
    ValueError here and the tokenizer and processor a FileNotFoundError: code that catches either keeps working."""


def looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.fullmatch(name)) and "--" not in name and ".." not in name and len(name) <= 96


def resolve_folder(
    name_or_path: str | os.PathLike,
    *,
    what: str = "checkpoint folder",
    allow_file: bool = False,
    patterns: Sequence[str] | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> str:
    """The local folder `name_or_path` stands for (or, with `allow_file`, a local file given by its path).

    `what` names the thing in the errors ("tokenizer folder"). `patterns` are the files the caller will read, the
    only ones fetched when huggingface_hub downloads (None: the whole repo). `revision`, `cache_dir` and
    `local_files_only` mean what they mean in transformers, and matter only for hub ids (a local folder has no
    revisions).
    """
    path = os.fspath(name_or_path)
    if not os.path.exists(path):
        recover_interrupted_save(path)  # a save that died between its two renames leaves the old folder aside
    if os.path.isdir(path) or (allow_file and os.path.isfile(path)):
        return path
    if os.path.exists(path):
        raise NotAFolderError(f"{path} is a file; a {what} was expected.")

    not_local = f"No {what} at {path}: it is not a local {'path' if allow_file else 'folder'}"
    if not looks_like_hub_id(path):
        raise FileNotFoundError(f"{not_local}, nor a hub id (org/name).")
    try:
        import huggingface_hub  # optional: only hub ids need it
    except ImportError:
        raise FileNotFoundError(
            f"{not_local}; to load it as a hub id, install huggingface_hub (pip install huggingface_hub)."
        ) from None
    try:
        return huggingface_hub.snapshot_download(
            path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
            allow_patterns=list(patterns) if patterns is not None else None,
        )
    except Exception as e:  # huggingface_hub raises many types (offline, not found, gated, bad revision, network)
        why = _why_not_from_hub(path, revision, cache_dir, local_files_only, e)
        raise FileNotFoundError(f"{not_local}; {why}.") from None


def _why_not_from_hub(repo_id: str, revision: str | None, cache_dir: str | os.PathLike | None,
                      local_files_only: bool, error: Exception) -> str:
    """Why snapshot_download failed, in one clause. Offline, the cache is all there is, so we say what it lacks;
    online, the hub answered and its own first line says why."""
    from huggingface_hub import constants  # optional: only called after huggingface_hub was imported

    cache = os.fspath(cache_dir) if cache_dir is not None else constants.HF_HUB_CACHE
    message = (str(error).strip().splitlines() or [""])[0]
    if local_files_only:
        offline, online = "local_files_only=True", "without local_files_only=True"
    elif constants.HF_HUB_OFFLINE:
        offline, online = "HF_HUB_OFFLINE=1", "with HF_HUB_OFFLINE unset"
    else:
        return f"huggingface_hub could not provide it ({type(error).__name__}: {message})"
    repo = os.path.join(cache, "models--" + repo_id.replace("/", "--"))  # the layout in this module's docstring
    if not os.path.isdir(repo):
        return (f"the hub cache {cache} has no copy of it, and downloading is off ({offline}): "
                f"download it once {online}, or give a local folder")
    wanted = revision or "main"
    if not _snapshot_of(repo, wanted):
        refs = os.path.join(repo, "refs")
        cached = sorted(n for n in os.listdir(refs) if os.path.isfile(os.path.join(refs, n))) if os.path.isdir(refs) else []
        return (f"the hub cache {cache} has {repo_id} but not its revision {wanted!r} (cached: "
                f"{', '.join(cached) or 'no named revision'}), and downloading is off ({offline}): "
                f"download that revision once {online}, or ask for a cached one")
    return f"its cached copy in {cache} could not be used ({type(error).__name__}: {message})"


def _snapshot_of(repo: str, revision: str) -> str | None:
    """The cached snapshot folder of `revision` (a branch or tag named in refs/, or a commit hash), if any."""
    ref = os.path.join(repo, "refs", revision)
    commit = revision
    if os.path.isfile(ref):
        with open(ref, encoding="utf-8") as f:
            commit = f.read().strip()
    snapshot = os.path.join(repo, "snapshots", commit)
    return snapshot if os.path.isdir(snapshot) else None
