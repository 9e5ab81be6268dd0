"""Reading and writing checkpoint folders in transformers' layout.

A checkpoint folder holds `config.json` and the weights in one of four forms, looked for in this order:
`model.safetensors`, `model.safetensors.index.json` (sharded), `pytorch_model.bin`, `pytorch_model.bin.index.json`.
`.bin` files are pickles: they are read with `torch.load(weights_only=True)`, which refuses to run code.

Writing is atomic: everything goes to a temporary folder next to the destination, which then replaces it by
renames, so an interrupted save never leaves a half-written checkpoint where a good one was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

StateDict = dict[str, torch.Tensor]

SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
BIN, BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"


def resolve_folder(name_or_path: str | os.PathLike) -> str:
    """A local folder as it is; otherwise a hub id looked up through huggingface_hub's cache (if installed)."""
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise ValueError(f"{path} is a file; a checkpoint folder (config.json + weights) was expected.")
    try:
        from huggingface_hub import snapshot_download  # optional: only for hub ids
    except ImportError:
        raise FileNotFoundError(
            f"{path} is not a folder. To load it as a hub id, install huggingface_hub "
            "(pip install huggingface_hub); otherwise pass the path of a local checkpoint folder."
        ) from None
    try:
        return snapshot_download(path)
    except Exception as e:  # huggingface_hub raises many types (offline, not found, bad id)
        raise FileNotFoundError(
            f"{path} is not a local folder, and huggingface_hub could not provide it ({type(e).__name__}: {e})."
        ) from None


def _load_one(path: str) -> StateDict:
    if not os.path.exists(path):
        raise FileNotFoundError(f"The checkpoint file {path} is missing.")
    if path.endswith(".safetensors"):
        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupted?): {e}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # an UnpicklingError for pickled code, EOFError/RuntimeError for a truncated file
        raise ValueError(
            f"{path} could not be read as a PyTorch weights file: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. "
            "Files containing anything but tensors are refused (torch.load(weights_only=True)), "
            "and truncated files cannot be read."
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a dict of tensors (a state dict).")
    return state


def _load_sharded(folder: str, index_name: str) -> StateDict:
    index_path = os.path.join(folder, index_name)
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{index_path} is not a valid shard index (it needs a 'weight_map'): {e}") from None
    state: StateDict = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = os.path.join(folder, shard)
        if not os.path.exists(shard_path):
            raise FileNotFoundError(f"The shard index {index_path} lists {shard}, which is not in {folder}.")
        state.update(_load_one(shard_path))
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise ValueError(f"The shard index lists tensors that no shard holds: {missing[:10]}")
    return state


def load_state_dict(folder: str | os.PathLike) -> StateDict:
    """All tensors of a transformers checkpoint folder, by their checkpoint names."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder} is not a folder; a checkpoint folder (config.json + weights) was expected.")
    for name, loader in (
        (SAFETENSORS, _load_one),
        (SAFETENSORS_INDEX, None),
        (BIN, _load_one),
        (BIN_INDEX, None),
    ):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return loader(path) if loader else _load_sharded(folder, name)
    raise FileNotFoundError(
        f"{folder} has no weights: expected one of {SAFETENSORS}, {SAFETENSORS_INDEX}, {BIN}, {BIN_INDEX}."
    )


def save_state_dict(state: StateDict, path: str) -> None:
    """Write tensors as safetensors. Tensors sharing memory (tied weights) are written as separate copies."""
    seen: set[int] = set()
    out: StateDict = {}
    for k, v in state.items():
        v = v.detach()
        ptr = v.untyped_storage().data_ptr() if v.numel() else id(v)
        out[k] = v.clone().contiguous() if ptr in seen or not v.is_contiguous() else v
        seen.add(ptr)
    save_file(out, path, metadata={"format": "pt"})


def atomic_save(folder: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call `write(tmp_folder)` to fill a fresh folder, then put it in place of `folder` by renames.

    If `write` fails (or the process dies), the temporary folder is removed (or left aside, under a name
    starting with `.tmp-`) and whatever was at `folder` before is untouched. Files already in `folder` that
    this save does not write are kept.
    """
    folder = os.path.abspath(os.fspath(folder))
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(folder)}-", dir=parent)
    try:
        write(tmp)
        for name in os.listdir(tmp):  # flush file contents before the rename makes them visible
            with open(os.path.join(tmp, name), "rb") as f:
                os.fsync(f.fileno())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.isdir(folder):
        # Files of the old folder that this save does not write (a tokenizer, a README) are carried over.
        for name in os.listdir(folder):
            src, dst = os.path.join(folder, name), os.path.join(tmp, name)
            if not os.path.exists(dst):
                (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, dst)
        old = tempfile.mkdtemp(prefix=f".old-{os.path.basename(folder)}-", dir=parent)
        os.rename(folder, os.path.join(old, "x"))  # the old checkpoint, out of the way but not yet deleted
        os.rename(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, folder)
