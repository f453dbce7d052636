"""Read bandwidth, measured in the same run: the memory roofline of a weight-streaming GEMV.

A TVM TIR kernel sums an int32 buffer: 64 parallel tasks (split over TVM's pool), each reading
4 interleaved streams with 64-byte vector loads into vector accumulators. It does one add per
load, far below what a core can issue, so its time is the time to read the buffer. A 256 MiB
buffer gives DRAM bandwidth ("cold"); a 4 MiB one, read again and again, stays in the L3
("hot"). GB/s = bytes / per-call time, from the same timing loop as the libraries.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import tvm
from tvm.script import tirx as T

from ..runtime import set_threads
from .cases import MIB
from .libs.tvm_default import host_target
from .timing import TimingPolicy, time_calls

LANES, STREAMS, TASKS = 16, 4, 64
METHOD = (
    f"TVM TIR int32 sum: {TASKS} parallel tasks x {STREAMS} interleaved streams of {LANES * 4}-byte vector "
    "loads; GB/s = buffer bytes / per-call time (best = min time, median = median batch)"
)


@dataclass(frozen=True)
class Bandwidth:
    """Read bandwidth of ``threads`` threads over a buffer of ``nbytes`` (``kind``: cold or hot)."""

    kind: str
    threads: int
    nbytes: int
    best_gbps: float
    median_gbps: float


def _read_kernel(rows: int) -> tvm.tirx.PrimFunc:
    @T.prim_func
    def read_sum(a: T.Buffer((TASKS, rows, STREAMS, LANES), "int32"), o: T.Buffer((TASKS, STREAMS, LANES), "int32")):
        for p in T.parallel(TASKS):
            for s in range(STREAMS):
                for lane in T.vectorized(LANES):
                    o[p, s, lane] = 0
            for r in range(rows):
                for s in T.unroll(STREAMS):
                    for lane in T.vectorized(LANES):
                        o[p, s, lane] = o[p, s, lane] + a[p, r, s, lane]

    return read_sum


def _measure(kind: str, nbytes: int, threads: list[int], policy: TimingPolicy) -> list[Bandwidth]:
    rows = max(1, nbytes // (4 * TASKS * STREAMS * LANES))
    func = tvm.tirx.build(_read_kernel(rows), target=host_target(max(threads)))
    a = tvm.runtime.tensor(np.ones((TASKS, rows, STREAMS, LANES), np.int32))
    o = tvm.runtime.empty((TASKS, STREAMS, LANES), "int32", tvm.cpu())
    func(a, o)
    if int(o.numpy().astype(np.int64).sum()) != a.shape[0] * rows * STREAMS * LANES:
        raise RuntimeError("the bandwidth kernel summed wrongly")
    size, results = a.numpy().nbytes, []
    for n in threads:
        set_threads(n)
        timing = time_calls([partial(func, a, o)], policy)
        results.append(Bandwidth(kind, n, size, size / timing.min_us / 1e3, size / timing.median_us / 1e3))
    return results


def measure_bandwidth(threads: list[int], cold_mib: float, hot_mib: float, policy: TimingPolicy) -> list[Bandwidth]:
    """Cold (DRAM) and hot (L3) read bandwidth for each thread count."""
    cold = _measure("cold", int(cold_mib * MIB), threads, policy)
    return cold + _measure("hot", int(hot_mib * MIB), threads, policy)


def best(bandwidths: list[Bandwidth], kind: str, threads: int) -> Bandwidth | None:
    """The highest of the measurements of ``kind`` at ``threads`` (runs at start and end)."""
    found = [b for b in bandwidths if b.kind == kind and b.threads == threads]
    return max(found, key=lambda b: b.best_gbps, default=None)
