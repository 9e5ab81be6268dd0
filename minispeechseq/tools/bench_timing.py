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
