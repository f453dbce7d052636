"""``lut_precompute`` on any LLVM CPU: every stage vectorized.

The precompute reads each activation once and writes ``K/4`` tables of 8 or 16 entries;
next to the lookups it should cost a few percent. Entry loops are vectorized; the three
reductions (the row maximum of ``|x|``, the group maximum of ``|T|`` and the group sum of
``x``) are split with ``rfactor`` into vector-wide partial results first, so none runs as a
scalar chain. A fused RMSNorm (``normed``) is computed once per row into a K-wide buffer
first, its sum of squares vectorized the same way and its ``x + skip`` inlined.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from ...kernels.names import (
    FLOAT_TABLE_BLOCK,
    MAXABS_BLOCK,
    NORMED_BLOCK,
    PRECOMPUTE_KERNEL,
    ROWMAX_BLOCK,
    SKIP_SUM_BLOCK,
    SUMSQ_BLOCK,
    TABLES,
    XSUM_BLOCK,
)
from ..base import Knobs, block_names
from .base import CpuRule

VECTOR_LANES = 16


def _vectorize_reduction(sch: s_tir.Schedule, name: str, lanes: int) -> None:
    """Split the innermost reduction loop by ``lanes`` and reduce lane-wise partials first."""
    loop = sch.get_loops(sch.get_sblock(name))[-1]
    extent = int(sch.get(loop).extent)
    if extent % lanes:
        return
    _, lane = sch.split(loop, [None, lanes])
    lane_name = sch.get(lane).loop_var.name
    partial = sch.rfactor(lane, factor_axis=0)
    loops = sch.get_loops(partial)
    lane_loop = next(loop for loop in loops if sch.get(loop).loop_var.name == lane_name)
    sch.reorder(*(loop for loop in loops if loop != lane_loop), lane_loop)
    sch.vectorize(lane_loop)


class LutPrecompute(CpuRule):
    kernel = PRECOMPUTE_KERNEL

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, target: Target, knobs: Knobs) -> None:
        names = block_names(sch)
        if SKIP_SUM_BLOCK in names:
            sch.compute_inline(sch.get_sblock(SKIP_SUM_BLOCK))
        if NORMED_BLOCK in names:
            sch.vectorize(sch.get_loops(sch.get_sblock(NORMED_BLOCK))[-1])
            _vectorize_reduction(sch, SUMSQ_BLOCK, VECTOR_LANES)
        for name in (FLOAT_TABLE_BLOCK, TABLES):
            if name in names:
                sch.vectorize(sch.get_loops(sch.get_sblock(name))[-1])
        _vectorize_reduction(sch, XSUM_BLOCK, VECTOR_LANES)
        _vectorize_reduction(sch, ROWMAX_BLOCK, VECTOR_LANES)
        if MAXABS_BLOCK in names:
            _vectorize_reduction(sch, MAXABS_BLOCK, VECTOR_LANES)
