"""The one timing loop every library goes through.

A *batch* is ``count`` back-to-back calls timed with ``time.perf_counter_ns``; per-call time is
the batch time divided by ``count``. Calls cycle through the weight copies (one copy in hot
mode), continuing where the previous batch stopped. Python call overhead is therefore part of
every library's numbers, in the same way for all.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Call = Callable[[], object]

MIN_BATCHES = 3
"""Batches always timed, however slow the call."""


@dataclass(frozen=True)
class TimingPolicy:
    """How long to time: ``repeat`` batches sized so they add up to about ``min_time`` seconds.

    Slow calls (one call per batch already exceeds the budget) stop after
    ``MIN_BATCHES`` batches once ``2 * min_time`` has passed.
    """

    repeat: int = 10
    min_time: float = 0.5

    def __post_init__(self) -> None:
        if self.repeat < 1 or self.min_time <= 0:
            raise ValueError(f"repeat must be >= 1 and min_time > 0; got {self.repeat}, {self.min_time}")

    def calls_per_batch(self, seconds_per_call: float) -> int:
        return max(1, math.floor(self.min_time / self.repeat / max(seconds_per_call, 1e-9)))


@dataclass(frozen=True)
class Timing:
    """Per-call latency over batches: the minimum and the median of the batch means."""

    min_us: float
    median_us: float
    batches: int
    calls_per_batch: int


def _batch(calls: Sequence[Call], start: int, count: int) -> int:
    """Nanoseconds for ``count`` calls, cycling through ``calls`` from index ``start``."""
    n = len(calls)
    t0 = time.perf_counter_ns()
    for i in range(start, start + count):
        calls[i % n]()
    return time.perf_counter_ns() - t0


def time_calls(calls: Sequence[Call], policy: TimingPolicy) -> Timing:
    """Warm up with one call per copy, size the batches from those calls, then time the batches."""
    if not calls:
        raise ValueError("nothing to time")
    warm = statistics.median(_batch(calls, i, 1) for i in range(len(calls)))
    count = policy.calls_per_batch(warm * 1e-9)
    per_call, start, began = [], 0, time.perf_counter()
    while len(per_call) < policy.repeat:
        per_call.append(_batch(calls, start, count) / count)
        start += count
        if len(per_call) >= MIN_BATCHES and time.perf_counter() - began > 2 * policy.min_time:
            break
    return Timing(min(per_call) / 1e3, statistics.median(per_call) / 1e3, len(per_call), count)


def time_interleaved(calls: dict[str, Call], policy: TimingPolicy) -> dict[str, Timing]:
    """Time several calls A/B-style: batch ``r`` of every call runs before batch ``r + 1`` of any.

    Each call's batch size comes from its own warm-up, as in :func:`time_calls`; interleaving
    spreads the machine's slow drifts (frequency, neighbours) over all calls alike.
    """
    if not calls:
        raise ValueError("nothing to time")
    counts = {}
    for name, call in calls.items():
        warm = statistics.median(_batch([call], 0, 1) for _ in range(3))
        counts[name] = policy.calls_per_batch(warm * 1e-9)
    per_call: dict[str, list[float]] = {name: [] for name in calls}
    began, budget = time.perf_counter(), 2 * policy.min_time * len(calls)
    for batch in range(policy.repeat):
        for name, call in calls.items():
            per_call[name].append(_batch([call], 0, counts[name]) / counts[name])
        if batch + 1 >= MIN_BATCHES and time.perf_counter() - began > budget:
            break
    return {n: Timing(min(t) / 1e3, statistics.median(t) / 1e3, len(t), counts[n]) for n, t in per_call.items()}
