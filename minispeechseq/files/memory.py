"""Memory estimates checked before allocating: a config or a generation setting that cannot fit is refused with
one sentence stating the estimate and what the machine has, instead of filling memory (and swap) first.

Available memory is the least of what the system can give (`MemAvailable` in /proc/meminfo, else
`os.sysconf` physical pages), a container's cgroup limit, and the process's own RLIMIT_AS (`ulimit -v`); on a
CUDA device, `torch.cuda.mem_get_info`. Estimates are lower bounds (the largest tensors only), so a refusal is
never a false alarm; an estimate below the limit may still run out, as any allocation may.

Also here: the eager attention path's own limit (`EAGER_ATTENTION_MAX_BYTES`, `check_eager_memory`).
"""

from __future__ import annotations

import math
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


# ------------------------------------------------------------------------------------------ eager attention
# The eager path materialises the (B, H, Sq, Sk) weights: for 10 minutes of audio (30 000 frames) that is
# 3.6 GB per head in fp32, enough to exhaust a machine. Above this many bytes it refuses, before allocating,
# and points to sdpa (whose kernels never hold the whole matrix). Override it per call (`attend(...,
# eager_max_bytes=...)`), by setting this attribute, or with the environment variable below, which a model reads
# once, when it chooses the eager backend (attention.use_attn_implementation), not at every attention call.
EAGER_ATTENTION_MAX_BYTES = 2 * 1024**3
EAGER_MAX_BYTES_ENV = "MINISPEECHSEQ_EAGER_MAX_BYTES"


def eager_limit_bytes() -> int:
    """The eager path's limit: the environment variable when set, else EAGER_ATTENTION_MAX_BYTES."""
    raw = os.environ.get(EAGER_MAX_BYTES_ENV)
    if raw is None or raw.strip() == "":
        return EAGER_ATTENTION_MAX_BYTES
    try:
        value = float(raw)  # accepts "4e9" as well as "4000000000"
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 1):  # int(inf) would raise OverflowError, a traceback
        raise ValueError(f"The environment variable {EAGER_MAX_BYTES_ENV}={raw!r} must be a finite, positive byte "
                         "count such as 4e9; unset it for the default.")
    return int(value)


def check_eager_memory(q: torch.Tensor, k: torch.Tensor, limit: int | None = None) -> None:
    """Refuse, before allocating, an eager attention whose weights would exceed `limit` bytes."""
    limit = eager_limit_bytes() if limit is None else limit
    B, H, Sq, _ = q.shape
    Sk = k.shape[2]
    # The scores (B, H, Sq, Sk) in q's dtype, then their softmax in fp32: the fp32 copy is the largest tensor.
    need = B * H * Sq * Sk * max(q.element_size(), 4)
    if need > limit:
        raise ValueError(
            f"Eager attention over {Sq} queries x {Sk} keys (batch {B}, {H} heads) would materialise "
            f"{need:,} bytes ({need / 2**30:.2f} GiB) of attention weights, above the limit of {limit:,} bytes. Use "
            "attn_implementation='sdpa' (model.set_attn_implementation('sdpa')), which never holds the whole matrix, "
            f"or raise the limit with the environment variable {EAGER_MAX_BYTES_ENV} (bytes)."
        )
