"""Interrupted saves: the folders `checkpoint.atomic_save` works in, and the recovery of a save that died.

A save writes the new checkpoint into a temporary folder beside its destination, moves the old one aside, then
renames the new one into place. A save killed between those two renames leaves no checkpoint at the destination,
only the two aside folders; `recover_interrupted_save` puts the old one back. No torch here: `resolve_folder`
calls the recovery for every loader, configs included, and a config needs no tensors.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile

# The marker rule: a folder is removed or restored by recovery only if a save created it and marked it as its own.
# checkpoint.atomic_save works in folders next to its destination `<name>`: `.tmp-<name>-XXXX` (the new checkpoint
# being written) and `.old-<name>-XXXX` (the previous one, moved aside until the new one is in place). Names prove
# nothing (a user may well keep a `.old-mymodel-v1/` of their own), so each is a *container*: mkdtemp makes it, the
# marker file is the first thing written into it, and the checkpoint itself lives in its `x` subfolder (so the
# marker never ends up inside a checkpoint). A folder without the marker is never touched, whatever its name.
SAVE_MARKER = ".minispeechseq-save"
_MARKER_LINE = "minispeechseq save container: written by checkpoint.atomic_save, removed by it or by the next save\n"


def make_save_container(parent: str, kind: str, name: str) -> str:
    """A new, marked `.{kind}-{name}-XXXX` folder in `parent` (kind: "tmp" or "old"), private (mkdtemp: 0700)."""
    container = tempfile.mkdtemp(prefix=f".{kind}-{name}-", dir=parent)
    try:
        with open(os.path.join(container, SAVE_MARKER), "x", encoding="utf-8") as f:
            f.write(f"{_MARKER_LINE}pid {os.getpid()}\n")  # the pid: for a human wondering whose it is
    except BaseException:
        shutil.rmtree(container, ignore_errors=True)
        raise
    return container


def is_save_container(path: str) -> bool:
    """Whether `path` is a folder that atomic_save made and marked (the marker: a regular file, not a link)."""
    marker = os.path.join(path, SAVE_MARKER)
    try:
        if not stat.S_ISREG(os.lstat(marker).st_mode):
            return False
        with open(marker, encoding="utf-8", errors="replace") as f:
            return f.read(len(_MARKER_LINE)) == _MARKER_LINE
    except OSError:
        return False


def _aside_folders(folder: str, kind: str) -> list[str]:
    """The marked `.old-<name>-XXXX` (or `.tmp-...`) containers atomic_save made next to `folder`; mkdtemp's random
    suffix has no '-', so `ckpt`'s never match those of a sibling named `ckpt-2`."""
    parent, name = os.path.split(folder)
    if not os.path.isdir(parent):
        return []
    pattern = re.compile(rf"\.{kind}-{re.escape(name)}-[a-z0-9_]+")
    found = (os.path.join(parent, n) for n in os.listdir(parent) if pattern.fullmatch(n))
    return sorted(p for p in found if is_save_container(p))


def recover_interrupted_save(folder: str | os.PathLike, remove_temporaries: bool = False) -> bool:
    """Undo a checkpoint.atomic_save that died between its two renames (the old checkpoint moved aside, the new one
    not yet in place): put the old checkpoint back, which was complete, and drop that save's temporary folder.
    Returns True when it restored. Also removes the aside copy left by a save that completed but died before
    deleting it. `remove_temporaries`: also remove `.tmp-` folders of saves killed while writing (only safe
    when no other save to this folder is running: atomic_save passes True). Only marked containers are touched.

    Every loader calls it (through resolve.resolve_folder) before it looks for its folder, and every save before it
    writes: that is why it has a module of its own, without torch, rather than a place in checkpoint.py."""
    folder = os.path.realpath(os.fspath(folder))  # a save through a symlink works beside the link's target
    restored = False
    for old in _aside_folders(folder, "old"):
        inner = os.path.join(old, "x")
        if not os.path.lexists(folder) and os.path.isdir(inner):
            os.rename(inner, folder)
            restored = True
        shutil.rmtree(old, ignore_errors=True)
    if restored or remove_temporaries:
        for tmp in _aside_folders(folder, "tmp"):
            shutil.rmtree(tmp, ignore_errors=True)
    return restored
