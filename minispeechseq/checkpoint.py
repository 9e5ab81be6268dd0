"""Reading and writing checkpoint folders in transformers' layout.

A checkpoint folder holds `config.json` and the weights in one of four forms, looked for in this order:
`model.safetensors`, `model.safetensors.index.json` (sharded), `pytorch_model.bin`, `pytorch_model.bin.index.json`.
`.bin` files are pickles: they are read with `torch.load(weights_only=True)`, which refuses to run code.

Writing is atomic: everything goes to a temporary folder next to the destination, which then replaces it by
renames, so an interrupted save never leaves a half-written checkpoint where a good one was (and a save killed
between its two renames is undone by the next load or save: see `atomic_save`, and `recover_interrupted_save` in
resolve.py, which every loader calls while it looks for its folder).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import read_json
from .resolve import recover_interrupted_save

StateDict = dict[str, torch.Tensor]

SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
BIN, BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"


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
    weight_map = read_json(index_path, "shard index").get("weight_map")
    if not isinstance(weight_map, dict):
        raise ValueError(f"{index_path} is not a valid shard index: it needs a 'weight_map' object.")
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
    if not os.path.exists(folder):
        recover_interrupted_save(folder)
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


def _is_weights_file(name: str) -> bool:
    """Weights in any of the four layouts, shards included (`model-00001-of-00002.safetensors`)."""
    return name in (SAFETENSORS, SAFETENSORS_INDEX, BIN, BIN_INDEX) or bool(
        re.fullmatch(r"(model|pytorch_model)-\d+-of-\d+\.(safetensors|bin)", name)
    )


def _public_permissions(root: str) -> None:
    """mkdtemp makes a private folder (0700), and some writers private files: give the checkpoint the
    permissions an ordinary os.makedirs / open would have (0777 / 0666 less the umask), as transformers does."""
    umask = os.umask(0)
    os.umask(umask)
    for here, _, names in os.walk(root):
        os.chmod(here, 0o777 & ~umask)
        for name in names:
            os.chmod(os.path.join(here, name), 0o666 & ~umask)


def _fsync_tree(root: str) -> None:
    for here, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(here, name), "rb") as f:
                os.fsync(f.fileno())


def atomic_save(folder: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call `write(tmp_folder)` to fill a fresh folder, then put it in place of `folder` by renames.

    If `write` fails, the temporary folder is removed and whatever was at `folder` before is untouched. Files
    already in `folder` that this save does not write (a tokenizer, a README) are kept; weights files of another
    layout are not (they would be stale weights next to the new ones).

    Replacing a folder takes two renames (old aside, new in place). If the second one fails, the old folder is
    renamed back. If the process dies between them, `folder` is missing: the next load or save through this
    module (`recover_interrupted_save`) puts the old checkpoint back. A save killed while writing leaves only
    its `.tmp-` folder, which the next save to `folder` removes. (One save per folder at a time.)
    """
    folder = os.path.abspath(os.fspath(folder))
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    recover_interrupted_save(folder, remove_temporaries=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(folder)}-", dir=parent)
    try:
        write(tmp)
        _public_permissions(tmp)
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                src, dst = os.path.join(folder, name), os.path.join(tmp, name)
                if not os.path.exists(dst) and not _is_weights_file(name):
                    (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, dst)
        _fsync_tree(tmp)  # the contents on disk before a rename makes them visible
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not os.path.isdir(folder):
        try:
            os.rename(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return
    old = tempfile.mkdtemp(prefix=f".old-{os.path.basename(folder)}-", dir=parent)
    aside = os.path.join(old, "x")
    try:
        os.rename(folder, aside)  # the old checkpoint, out of the way but not yet deleted
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
        raise
    try:
        os.rename(tmp, folder)
    except BaseException:
        os.rename(aside, folder)  # the new one could not be put in place: the old one goes back
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
