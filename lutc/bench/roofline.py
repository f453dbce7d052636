"""Read bandwidth, measured in the same run: the memory roofline of a weight-streaming GEMV.

A TVM TIR kernel sums an int32 buffer: 64 parallel tasks (split over TVM's pool), each reading
4 interleaved streams with 64-byte vector loads into vector accumulators. It does one add per
load, far below what a core can issue, so its time is the time to read the buffer. A 256 MiB
buffer gives DRAM bandwidth ("cold"); a 4 MiB one, read again and again, stays in the L3
("hot"). GB/s = bytes / per-call time, from the same timing loop as the libraries.

A decode step's floor is the weight bytes it streams (:func:`streamed_bytes`) over the DRAM
bandwidth (:func:`dram_bandwidths`, :func:`best_cold`); :class:`StepRoofline` holds both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial

import numpy as np
import onnx
import tvm
from tvm.script import tirx as T

from ..frontend.weight_params import PACKED_PARTS
from ..runtime import get_threads, set_threads
from ..weights import WeightLayout
from .cases import MIB
from .libs.tvm_default import host_target
from .timing import TimingPolicy, time_calls

LANES, STREAMS, TASKS = 16, 4, 64
METHOD = (
    f"TVM TIR int32 sum: {TASKS} parallel tasks x {STREAMS} interleaved streams of {LANES * 4}-byte vector "
    "loads; GB/s = buffer bytes / per-call time (best = min time, median = median batch)"
)
DRAM_MIB, L3_MIB = 256.0, 4.0
"""Buffer sizes of the whole-model benchmarks' bandwidth runs (``scale``, ``generate``): cold, hot."""
FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE)
FLOAT_MATMULS = ("MatMul", "Gemm")
"""ONNX operators that read a float weight whole on every call (a ``Gather`` reads rows)."""
LAYOUT_ONLY = ("Transpose", "Cast", "Identity")
"""Operators between a float weight and its matmul that leave it a weight (a tied head's transpose)."""


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
    # the caller's count, where lutc has sized the pool (reading it first would start a 1-thread pool)
    before = get_threads() if "TVM_NUM_THREADS" in os.environ else None
    try:
        for n in threads:
            set_threads(n)
            timing = time_calls([partial(func, a, o)], policy)
            results.append(Bandwidth(kind, n, size, size / timing.min_us / 1e3, size / timing.median_us / 1e3))
    finally:
        if before is not None:
            set_threads(before)  # the caller's timings after this run at the count it had set
    return results


def measure_bandwidth(threads: list[int], cold_mib: float, hot_mib: float, policy: TimingPolicy) -> list[Bandwidth]:
    """Cold (DRAM) and hot (L3) read bandwidth for each thread count; TVM's pool is left at the
    thread count it had."""
    cold = _measure("cold", int(cold_mib * MIB), threads, policy)
    return cold + _measure("hot", int(hot_mib * MIB), threads, policy)


def best(bandwidths: list[Bandwidth], kind: str, threads: int) -> Bandwidth | None:
    """The highest of the measurements of ``kind`` at ``threads`` (runs at start and end)."""
    found = [b for b in bandwidths if b.kind == kind and b.threads == threads]
    return max(found, key=lambda b: b.best_gbps, default=None)


def dram_bandwidths(threads: list[int]) -> list[Bandwidth]:
    """One run of the cold (``DRAM_MIB``) and hot (``L3_MIB``) read kernels at each thread count;
    the whole-model benchmarks run it before and after their timings."""
    return measure_bandwidth(threads, DRAM_MIB, L3_MIB, TimingPolicy(repeat=10, min_time=0.5))


def best_cold(measured: list[Bandwidth], threads: list[int]) -> dict[int, float]:
    """The best cold GB/s of ``measured`` at each thread count."""
    return {t: best(measured, "cold", t).best_gbps for t in threads}


def float_matmul_bytes(graph: onnx.GraphProto) -> int:
    """Bytes (as stored) of the float initializers a ``MatMul`` or ``Gemm`` reads, directly or
    through ``LAYOUT_ONLY`` operators: the unquantized weights a decode step streams."""
    floats = {t.name: t for t in graph.initializer if t.data_type in FLOAT_TYPES}
    layout = {n.output[0]: n.input[0] for n in graph.node if n.op_type in LAYOUT_ONLY and n.input and n.output}
    read = set()
    for node in graph.node:
        if node.op_type in FLOAT_MATMULS:
            for name in node.input:
                while name in layout and name not in floats:
                    name = layout[name]
                read.add(name)
    return sum(_stored_bytes(floats[name]) for name in read & floats.keys())


def _stored_bytes(tensor: onnx.TensorProto) -> int:
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize


def packed_bytes(layout: WeightLayout) -> int:
    """Bytes of a compiled model's LUT weights (the ``packed.*`` parameters its kernels read)."""
    return sum(w.nbytes for w in layout.weights if w.key.startswith(PACKED_PARTS))


def streamed_bytes(layout: WeightLayout, graph: onnx.GraphProto) -> int:
    """The weight bytes one decode step reads: the step's LUT weights (``layout``) plus the float
    matmul weights of its ONNX ``graph``."""
    return packed_bytes(layout) + float_matmul_bytes(graph)


@dataclass(frozen=True)
class StepRoofline:
    """A decode step's memory floor: ``streamed_bytes`` read once at ``bandwidth_gbps``.

    floor_ms = streamed_bytes / bandwidth; a step of ``step_ms`` moves streamed_bytes / step_ms
    and reaches floor_ms / step_ms of the roofline (above 1 where it outruns the read kernel).
    """

    streamed_bytes: int
    bandwidth_gbps: float

    def __post_init__(self) -> None:
        if self.streamed_bytes < 0 or self.bandwidth_gbps <= 0:
            raise ValueError(f"need bytes >= 0 and GB/s > 0; got {self.streamed_bytes}, {self.bandwidth_gbps}")

    @property
    def floor_ms(self) -> float:
        return self.streamed_bytes / self.bandwidth_gbps / 1e6

    def gbps(self, step_ms: float) -> float:
        """The streamed bytes over a step of ``step_ms``, in GB/s."""
        return self.streamed_bytes / step_ms / 1e6

    def fraction(self, step_ms: float) -> float:
        """The roofline fraction of a step of ``step_ms``."""
        return self.floor_ms / step_ms

    def cells(self, step_ms: float) -> str:
        """The markdown cells ``GB/s | roofline`` of a step of ``step_ms``."""
        return f"{self.gbps(step_ms):.1f} | {self.fraction(step_ms):.2f}"

    def note(self, threads: int) -> str:
        """The bandwidth at ``threads`` and what the GB/s and roofline cells mean."""
        return (f"DRAM read bandwidth (lutc.bench's read kernel, {DRAM_MIB:.0f} MiB, best of the runs before and "
                f"after the timings), {threads} thread(s): {self.bandwidth_gbps:.1f} GB/s; the "
                f"{self.streamed_bytes / 1e9:.3f} GB of weights a lutc decode step streams (its LUT weights and any "
                f"float matmul weights) take {self.floor_ms:.2f} ms at it (GB/s column: those bytes over the median "
                "step, for every engine; roofline: that over the read bandwidth, above 1 where the step outruns the "
                "read kernel)")  # fmt: skip
