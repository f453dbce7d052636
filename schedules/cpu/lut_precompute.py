"""``lut_precompute`` on any LLVM CPU: vectorized over table entries.

The precompute reads each activation once and writes ``K/4`` tables of 8 or 16 entries;
next to the lookups it costs a few percent, so the schedule stays simple: entry loops are
vectorized and the rest runs in order.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from ...kernels.precompute import PRECOMPUTE_KERNEL
from .base import CpuRule


class LutPrecompute(CpuRule):
    kernel = PRECOMPUTE_KERNEL

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, target: Target, tunable: bool) -> None:
        names = {sch.get(block).name_hint for block in sch.get_child_blocks(sch.get_sblock("root"))}
        for name in ("table", "tables"):
            if name in names:
                sch.vectorize(sch.get_loops(sch.get_sblock(name))[-1])
