"""The timing pieces of the benchmarks (bench.py, bench_bounds.py, bench_int8.py): one timed call, two workloads
timed alternately, and a row of results with its ratios."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class Row:
    name: str
    ours: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)
    unit: str = "s"
    work: float = 0.0  # what one call processes (tokens, seconds of audio), for a throughput figure; 0: none
    work_unit: str = ""
    extra: dict = field(default_factory=dict)  # figures for the bound column (FLOPs, weight bytes, ...)

    def summary(self) -> dict:
        out = {"workload": self.name, "unit": self.unit, "ours_min": min(self.ours),
               "ours_median": statistics.median(self.ours), "ours_all": list(self.ours)}
        if self.theirs:
            out.update(theirs_min=min(self.theirs), theirs_median=statistics.median(self.theirs),
                       theirs_all=list(self.theirs), ratio=min(self.ours) / min(self.theirs),
                       # Call i of ours and call i of theirs ran back to back, so the machine's drift cancels in
                       # their ratio; the median of those ratios is the figure least moved by a slow moment.
                       paired_ratio=statistics.median(o / t for o, t in zip(self.ours, self.theirs, strict=True)))
        if self.work:  # throughput of the best call: higher is better, unlike the times
            out.update(work=self.work, work_unit=self.work_unit, ours_per_s=self.work / min(self.ours))
            if self.theirs:
                out["theirs_per_s"] = self.work / min(self.theirs)
        return {**out, **self.extra}


def _time(fn: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Seconds fn() takes. CUDA kernels run asynchronously: the queue is drained before the clock starts and
    again before it is read, or we would time the launches, not the work."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def alternate(name: str, ours: Callable[[], object], theirs: Callable[[], object] | None, repeats: int,
              device: torch.device | str = "cpu") -> Row:
    """Warm up both once, then time them alternately, so drifting machine load hits both alike."""
    row = Row(name)
    for fn in (ours, theirs):
        if fn is not None:
            _time(fn, device)
    for _ in range(repeats):
        for fn, times in ((ours, row.ours), (theirs, row.theirs)):
            if fn is not None:
                times.append(_time(fn, device))
    return row


def exactly(tokens: int) -> dict:
    """generate() arguments for exactly `tokens` new tokens, an end-of-sequence token or not."""
    return {"max_new_tokens": tokens, "min_new_tokens": tokens}


RETIME_LIMIT = 20  # extra back-to-back pairs a step time may take before the machine is called too loaded


def step_seconds(many: list[float], one: list[float], steps: int, time_many: Callable[[], object],
                 time_one: Callable[[], object], name: str, device: torch.device | str = "cpu") -> float:
    """Seconds per step of the `steps` decoding steps a `many`-token call makes beyond a one-token call:
    (min(many) - min(one)) / steps, from calls timed back to back. Each minimum is the least loaded moment of its
    calls; when a loaded machine leaves that difference at or below zero (timing noise larger than the steps'
    work, as with a tiny model and one repeat), more pairs are timed, until it is positive, at most RETIME_LIMIT of
    them (kept here: the rows' own lists stay paired). Still not positive: an error, not a negative latency."""
    many, one = list(many), list(one)
    for _ in range(RETIME_LIMIT):
        if min(many) > min(one):
            break
        many.append(_time(time_many, device))
        one.append(_time(time_one, device))
    if min(many) <= min(one):
        raise RuntimeError(f"{name}: {len(many)} timings of {steps + 1} tokens were never slower than the fastest "
                           f"of 1 token ({min(many):.2e} s vs {min(one):.2e} s): the machine is too loaded to time "
                           f"one decoding step; rerun it on a quieter machine or with more --repeats")
    return (min(many) - min(one)) / steps
