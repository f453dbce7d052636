"""``lut_precompute`` on CUDA: one kernel, one thread block per activation row.

Elementwise stages (``normed``, ``x + skip``, ``row_up``, the unquantized ``table`` of fast
mode, ``inverse``) are inlined into their consumers, so no activation-sized intermediate
reaches global memory. Every other stage runs in the row's block, in dependency order, its
per-row intermediates (``sumsq``, ``rowmax``, ``maxabs``) in shared memory (TVM inserts the
``__syncthreads`` between a stage and its readers):

- the row reductions (``sumsq``, ``rowmax``) split K across ``threadIdx.x`` with a
  cross-thread reduction;
- the per-group stages (``xsum``, ``maxabs``, ``lut_scale``) put groups on threads, or, with
  fewer than :data:`MIN_SPATIAL_FOR_THREADS` groups (per-channel formats), the group's
  reduction across threads;
- ``tables`` and ``row_scale``: their loops fused and split over ``threadIdx.x``.

One launch per precompute instead of one per stage (5-7): a decode step has one precompute
per distinct activation of each layer.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from ...kernels.names import (
    FLOAT_TABLE_BLOCK,
    INVERSE_BLOCK,
    LUT_SCALE_BLOCK,
    MAXABS_BLOCK,
    NORMED_BLOCK,
    PRECOMPUTE_KERNEL,
    ROW_SCALE_BLOCK,
    ROW_UP_BLOCK,
    ROWMAX_BLOCK,
    SKIP_SUM_BLOCK,
    SUMSQ_BLOCK,
    TABLES,
    XSUM_BLOCK,
)
from ..base import Knobs, block_names, choose
from .base import CudaRule

INLINED = (SKIP_SUM_BLOCK, NORMED_BLOCK, ROW_UP_BLOCK, INVERSE_BLOCK)
STAGES = (SUMSQ_BLOCK, ROWMAX_BLOCK, MAXABS_BLOCK, ROW_SCALE_BLOCK, XSUM_BLOCK, LUT_SCALE_BLOCK, TABLES)
"""The kernel's stages in dependency order; the first present one roots the row loop."""
SHARED = (SUMSQ_BLOCK, ROWMAX_BLOCK, MAXABS_BLOCK)
"""Per-row intermediates read by later stages of the same block."""
ACCUMULATED_LOCALLY = (MAXABS_BLOCK,)
"""Shared stages whose reduction one thread runs serially: it accumulates in a register and
stores once (a read-modify-write loop on shared memory makes TVM put a barrier inside the
thread's bounds check, which it refuses)."""
BLOCK_THREADS = (64, 128, 256, 512)
DEFAULT_BLOCK_THREADS = 256
MIN_SPATIAL_FOR_THREADS = 32


def _extent(sch: s_tir.Schedule, loops) -> int | None:
    """The product of the loops' extents; ``None`` when one is not a constant."""
    total = 1
    for loop in loops:
        extent = sch.get(loop).extent
        if not isinstance(extent, tirx.IntImm):
            return None
        total *= int(extent)
    return total


def _bind_in_row(sch: s_tir.Schedule, block: s_tir.SBlockRV, threads: int) -> s_tir.LoopRV | None:
    """Put the loops of ``block`` below the row loop onto ``threadIdx.x``; the thread loop."""
    loops = sch.get_loops(block)[1:]
    if not loops:
        return None
    spatial_count = sum(1 for var in sch.get(block).iter_vars if var.iter_type == tirx.IterVar.DataPar) - 1
    spatial, reduction = loops[:spatial_count], loops[spatial_count:]
    few_outputs = (_extent(sch, spatial) or MIN_SPATIAL_FOR_THREADS) < MIN_SPATIAL_FOR_THREADS
    across = reduction if reduction and few_outputs else spatial
    fused = sch.fuse(*across) if len(across) > 1 else across[0]
    _, inner = sch.split(fused, [None, threads])
    sch.bind(inner, "threadIdx.x")
    return inner


def _accumulate_locally(sch: s_tir.Schedule, name: str, threads: int) -> None:
    """Stage ``name`` into a register under the thread loop of its store to shared memory."""
    block = sch.get_sblock(name)
    store = sch.cache_write(block, 0, "local")
    thread = _bind_in_row(sch, store, threads)
    sch.compute_at(block, thread)


class LutPrecomputeCuda(CudaRule):
    """``lut_precompute`` (with or without a fused RMSNorm); see the module docstring."""

    kernel = PRECOMPUTE_KERNEL

    def structural_choices(self, func: tirx.PrimFunc, target: Target) -> dict[str, list[int]]:
        return {"block_threads": list(BLOCK_THREADS)}

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, target: Target, knobs: Knobs) -> None:
        threads = choose(sch, "block_threads", list(BLOCK_THREADS), DEFAULT_BLOCK_THREADS, knobs)
        names = block_names(sch)
        if FLOAT_TABLE_BLOCK in names:  # fast mode: the float table feeds maxabs and the quantized tables
            sch.compute_inline(sch.get_sblock(FLOAT_TABLE_BLOCK))
        for name in INLINED:
            if name in names:
                sch.compute_inline(sch.get_sblock(name))
        stages = [name for name in STAGES if name in names]
        row = sch.get_loops(sch.get_sblock(stages[0]))[0]
        for name in stages:
            block = sch.get_sblock(name)
            if name in SHARED:
                sch.set_scope(block, 0, "shared")
            if name != stages[0]:
                sch.reverse_compute_at(block, row)
        sch.bind(row, "blockIdx.x")
        for name in stages:
            if name in ACCUMULATED_LOCALLY:
                _accumulate_locally(sch, name, threads)
            else:
                _bind_in_row(sch, sch.get_sblock(name), threads)
