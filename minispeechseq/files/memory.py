"""Memory estimates checked before allocating: a config or a generation setting that cannot fit is refused with
one sentence stating the estimate and what the machine has, instead of filling memory (and swap) first.

Available memory is the least of what the system can give (`MemAvailable` in /proc/meminfo, else
`os.sysconf` physical pages), a container's cgroup limit, and the process's own RLIMIT_AS (`ulimit -v`); on a
CUDA device, `torch.cuda.mem_get_info`. Estimates are lower bounds (the largest tensors only), so a refusal is
never a false alarm; an estimate below the limit may still run out, as any allocation may.
"""

from __future__ import annotations

import os

import torch

try:
    import resource  # POSIX only: the process's own limits
except ImportError:
    resource = None

GB = 1e9


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def host_available_bytes() -> int:
    """Bytes this process can still allocate on the host (see the module doc)."""
    found: list[int] = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)  # kB
    except OSError:
        pass
    if not found and hasattr(os, "sysconf"):
        try:
            found.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (OSError, ValueError):
            pass
    limit, used = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if limit is not None and used is not None:
        found.append(max(limit - used, 0))
    soft = resource.getrlimit(resource.RLIMIT_AS)[0] if resource is not None else -1
    if soft not in (-1, getattr(resource, "RLIM_INFINITY", -1)):
        found.append(max(soft - _process_virtual_bytes(), 0))
    return min(found) if found else 2**63 - 1


def _process_virtual_bytes() -> int:
    """The address space the process already holds (RLIMIT_AS counts it, mapped libraries included)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def available_bytes(device: torch.device | str | None = None) -> int:
    """Free memory where tensors of `device` live."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    return host_available_bytes()


def check_fits(need: int, what: str, advice: str, device: torch.device | str | None = None) -> None:
    """Refuse `what` (a phrase: "num_beams=1000 on 1 input") when `need` bytes exceed the free memory."""
    free = available_bytes(device)
    if need > free:
        raise ValueError(f"{what} would need about {need / GB:,.1f} GB but {free / GB:,.1f} GB of memory is "
                         f"available; {advice}.")
