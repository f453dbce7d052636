"""``lut_precompute`` on CUDA: one kernel per stage, every loop bound to threads.

Elementwise stages (``normed``, ``x + skip``, ``row_up``, the unquantized ``table`` of fast
mode, ``inverse``) are inlined into their consumers, so no activation-sized intermediate
reaches global memory. Each remaining stage is one kernel:

- reductions (``sumsq``, ``rowmax``, ``xsum``, ``maxabs``): one thread block per output,
  the reduction split across ``threadIdx.x`` (a serial part per thread, then a cross-thread
  reduction through shared memory);
- spatial stages (``row_scale``, ``lut_scale``, ``tables``): their loops fused and split
  over ``blockIdx.x`` / ``threadIdx.x``.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from ...kernels.precompute import PRECOMPUTE_KERNEL
from ..base import Knobs, block_names, choose
from .base import CudaRule

INLINED = ("skip_sum", "normed", "row_up", "inverse")
REDUCTIONS = ("sumsq", "rowmax", "xsum", "maxabs")
SPATIAL = ("row_scale", "lut_scale", "tables")
REDUCE_THREADS = (32, 64, 128, 256)
DEFAULT_REDUCE_THREADS = 128
SPATIAL_THREADS = 256


def _reduction_threads(extent: int, preferred: int) -> int:
    """Threads for a reduction of ``extent``: ``preferred``, fewer when the extent is small."""
    return max([t for t in REDUCE_THREADS if t <= max(extent, REDUCE_THREADS[0]) and t <= preferred])


def _bind_reduction(sch: s_tir.Schedule, name: str, threads: int) -> None:
    block = sch.get_sblock(name)
    spatial_count = sum(1 for var in sch.get(block).iter_vars if var.iter_type == tirx.IterVar.DataPar)
    loops = sch.get_loops(block)
    sch.bind(sch.fuse(*loops[:spatial_count]), "blockIdx.x")
    reduction = sch.fuse(*loops[spatial_count:])
    extent = sch.get(reduction).extent
    count = _reduction_threads(int(extent), threads) if isinstance(extent, tirx.IntImm) else threads
    _, inner = sch.split(reduction, [None, count])
    sch.bind(inner, "threadIdx.x")


def _bind_spatial(sch: s_tir.Schedule, name: str) -> None:
    block = sch.get_sblock(name)
    fused = sch.fuse(*sch.get_loops(block))
    outer, inner = sch.split(fused, [None, SPATIAL_THREADS])
    sch.bind(outer, "blockIdx.x")
    sch.bind(inner, "threadIdx.x")


class LutPrecomputeCuda(CudaRule):
    """``lut_precompute`` (with or without a fused RMSNorm); see the module docstring."""

    kernel = PRECOMPUTE_KERNEL

    def structural_choices(self, func: tirx.PrimFunc, target: Target) -> dict[str, list[int]]:
        return {"reduce_threads": list(REDUCE_THREADS)}

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, target: Target, knobs: Knobs) -> None:
        threads = choose(sch, "reduce_threads", list(REDUCE_THREADS), DEFAULT_REDUCE_THREADS, knobs)
        names = block_names(sch)
        if "table" in names:  # fast mode: the float table feeds maxabs and the quantized tables
            sch.compute_inline(sch.get_sblock("table"))
        for name in INLINED:
            if name in names:
                sch.compute_inline(sch.get_sblock(name))
        for name in REDUCTIONS:
            if name in names:
                _bind_reduction(sch, name, threads)
        for name in SPATIAL:
            if name in names:
                _bind_spatial(sch, name)
