"""Reading and writing checkpoint folders in transformers' layout.

A checkpoint folder holds `config.json` and the weights in one of four forms, looked for in this order:
`model.safetensors`, `model.safetensors.index.json` (sharded), `pytorch_model.bin`, `pytorch_model.bin.index.json`.
`.bin` files are pickles: they are read with `torch.load(weights_only=True)`, which refuses to run code.

Writing is atomic: everything goes to a temporary folder next to the destination, which then replaces it by
renames, so an interrupted save never leaves a half-written checkpoint where a good one was (and a save killed
between its two renames is undone by the next load or save: see `atomic_save`, and `recover_interrupted_save` in
saves.py, which every loader calls while it looks for its folder).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .readers import check_regular_file, file_kind, read_json
from .saves import is_save_container, make_save_container, recover_interrupted_save

StateDict = dict[str, torch.Tensor]

SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
BIN, BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"


def torch_load(path: str, what: str) -> object:
    """`torch.load(weights_only=True)` of a regular file (never a pickle's code), any failure as one ValueError."""
    check_regular_file(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # an UnpicklingError for pickled code, EOFError/RuntimeError for a truncated file
        raise ValueError(
            f"{path} could not be read as a {what}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. "
            "Files containing anything but tensors are refused (torch.load(weights_only=True)), "
            "and truncated files cannot be read."
        ) from None


def _load_one(path: str) -> StateDict:
    if not os.path.lexists(path):
        raise FileNotFoundError(f"The checkpoint file {path} is missing.")
    if path.endswith(".safetensors"):
        check_regular_file(path, "safetensors file")
        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupted?): {e}") from None
    state = torch_load(path, "PyTorch weights file")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a dict of tensors (a state dict).")
    return state


def _shard_files(index_path: str) -> dict[str, str]:
    """The index's {tensor name: shard file}, refused unless every shard is a relative path inside the checkpoint
    folder: an index is untrusted input, and `../../etc/passwd` or `/dev/zero` must never be opened. (Only the names
    are checked: a shard that is a symlink to elsewhere is fine, as in huggingface_hub's cache, where every file is.)"""
    weight_map = read_json(index_path, "shard index").get("weight_map")
    if not isinstance(weight_map, dict):
        raise ValueError(f"{index_path} is not a valid shard index: it needs a 'weight_map' object "
                         f"(tensor name -> shard file), not {type(weight_map).__name__}.")
    for tensor, shard in weight_map.items():
        parts = shard.replace("\\", "/").split("/") if isinstance(shard, str) else []
        if not parts or os.path.isabs(shard) or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"{index_path}: the entry {tensor!r} -> {shard!r} is not a shard file name inside the "
                             "checkpoint folder; the index is damaged or hostile, and was not followed.")
    return weight_map


def _load_sharded(folder: str, index_name: str) -> StateDict:
    index_path = os.path.join(folder, index_name)
    weight_map = _shard_files(index_path)
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


def _set_modes(new: str, previous: str) -> None:
    """Give what `write` made the permissions it should have. A file or folder that already existed at the same place
    in the checkpoint being replaced keeps its mode: a `chmod 700` checkpoint stays private (mkdtemp's 0700 and
    some writers' private files would otherwise win, or the umask's 0755 / 0644 would make it world-readable).
    Anything new gets what an ordinary os.makedirs / open would give (0777 / 0666 less the umask), as in transformers."""
    umask = os.umask(0)
    os.umask(umask)
    for here, _, names in os.walk(new):
        before = os.path.normpath(os.path.join(previous, os.path.relpath(here, new)))
        _chmod_like(here, before, 0o777 & ~umask)
        for name in names:
            _chmod_like(os.path.join(here, name), os.path.join(before, name), 0o666 & ~umask)


def _chmod_like(path: str, before: str, default: int) -> None:
    try:
        old = os.lstat(before).st_mode
    except OSError:  # nothing there before (or not readable): a new file
        old = None
    same_kind = old is not None and stat.S_IFMT(old) == stat.S_IFMT(os.lstat(path).st_mode)
    os.chmod(path, stat.S_IMODE(old) if same_kind else default)


def _carry_over(folder: str, new: str, top: bool = True) -> None:
    """Copy into `new` what `folder` (the checkpoint being replaced) holds and this save did not write: a tokenizer,
    a README, subfolders. Weights files of another layout are dropped (stale weights beside the new ones).

    Symbolic links are copied as links, never as what they point to (a link to a large file or to /dev/zero must
    not be read, and a looping link has no target). Other special files (FIFOs, sockets, devices) are refused
    rather than skipped: copying one means reading it (a FIFO blocks, a device never ends), and skipping it would
    delete it along with the old folder; the error names it, and nothing has changed."""
    for name in sorted(os.listdir(folder)):
        src, dst = os.path.join(folder, name), os.path.join(new, name)
        if os.path.lexists(dst) or (top and _is_weights_file(name)):
            continue
        mode = os.lstat(src).st_mode
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISDIR(mode):
            os.mkdir(dst)
            _carry_over(src, dst, top=False)
            shutil.copystat(src, dst)
        elif stat.S_ISREG(mode):
            shutil.copy2(src, dst, follow_symlinks=False)
        else:
            raise OSError(f"{src} is {file_kind(mode)}, which a save cannot carry into the new checkpoint (it would "
                          f"have to read it); move it out of {folder} and save again.")


def _fsync_tree(root: str) -> None:
    for here, _, names in os.walk(root):
        for name in names:
            path = os.path.join(here, name)
            if os.path.islink(path):  # a carried-over link: its target is not ours to open (it may be a FIFO)
                continue
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def atomic_save(folder: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call `write(new_folder)` to fill a fresh folder, then put it in place of `folder` by renames.

    If `write` fails, the temporary folder is removed and whatever was at `folder` before is untouched. Files
    already in `folder` that this save does not write (a tokenizer, a README) are kept (`_carry_over`), and so are
    the modes of what was there (`_set_modes`). A `folder` that is a symbolic link stays one: the folder it points
    to receives the checkpoint, as with transformers' save_pretrained.

    Replacing a folder takes two renames (old aside, new in place). If the second one fails, the old folder is
    renamed back. If the process dies between them, `folder` is missing: the next load or save through this
    module (`recover_interrupted_save`) puts the old checkpoint back. A save killed while writing leaves only
    its `.tmp-` container, which the next save to `folder` removes. Both containers carry the marker of
    saves.py's marker rule, so that recovery never removes a folder of the user's. (One save per folder at a time.)
    """
    folder = os.path.realpath(os.fspath(folder))
    parent, name = os.path.split(folder)
    if is_save_container(parent):
        # `folder` is the new checkpoint of an enclosing atomic save (training's checkpoint writes the model's
        # save_pretrained into it): that save already makes it atomic. A second level would put its own `.tmp-x-`
        # container beside it, which a kill would leave for no later save to match.
        os.makedirs(folder, exist_ok=True)
        write(folder)
        return
    os.makedirs(parent, exist_ok=True)
    recover_interrupted_save(folder, remove_temporaries=True)
    tmp = make_save_container(parent, "tmp", name)
    new, old = os.path.join(tmp, "x"), None
    try:
        os.mkdir(new)
        write(new)
        _set_modes(new, folder)
        if os.path.isdir(folder):
            _carry_over(folder, new)
        _fsync_tree(new)  # the contents on disk before a rename makes them visible
        if os.path.isdir(folder):
            old = make_save_container(parent, "old", name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        if old is None:
            os.rename(new, folder)
            return
        aside = os.path.join(old, "x")
        os.rename(folder, aside)  # the old checkpoint, out of the way but not yet deleted
        try:
            os.rename(new, folder)
        except BaseException:
            os.rename(aside, folder)  # the new one could not be put in place: the old one goes back
            raise
    finally:  # not reached by a kill between the renames: then recover_interrupted_save finds both containers
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
