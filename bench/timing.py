"""Timing helpers every benchmark shares: medians, and variants run in turns so that noise hits all alike."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable


def synchronize() -> None:
    """Wait for queued GPU work (a no-op without CUDA), so that a timer measures the work, not its launch.
    Only where torch is already imported: the fast engine's benchmark does not need it."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


def median_time(run: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``run`` over ``repeats`` calls, after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        synchronize()
        began = time.perf_counter()
        run()
        synchronize()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def interleaved(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each variant per round, the variants taking turns within each round.

    The order rotates from round to round, so no variant always runs first (or right after the same neighbour,
    whose leftovers, such as spinning OpenMP threads, could slow it down)."""
    for run in variants.values():  # warm-up: sessions opened, caches filled
        run()
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_number in range(repeats):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize()
            started = time.perf_counter()
            variants[name]()
            synchronize()
            times[name].append(time.perf_counter() - started)
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(samples) for name, samples in times.items()}
