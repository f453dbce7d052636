"""``lut_matmul`` on any LLVM CPU: the shared loop schedule with a scalar micro-kernel."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from ...kernels.intrin_desc import LookupShape
from ...kernels.matmul import MATMUL_KERNEL
from ..base import Knobs
from ..hw import CHUNK_CANDIDATES
from .base import CpuRule
from .matmul_loops import register_chunk_intrinsics, schedule_lut_matmul, structural_choices
from .portable_intrin import portable_intrin

PREFERRED_CHUNK = 8


class LutMatmulPortable(CpuRule):
    """Correct everywhere LLVM runs; the per-ISA rules are the fast ones."""

    kernel = MATMUL_KERNEL

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, target: Target, knobs: Knobs) -> None:
        shape = LookupShape.from_func(func)
        schedule_lut_matmul(sch, shape, max(CHUNK_CANDIDATES), PREFERRED_CHUNK, portable_intrin, knobs)

    def structural_choices(self, func: tirx.PrimFunc, target: Target) -> dict[str, list[int]]:
        return structural_choices(LookupShape.from_func(func), max(CHUNK_CANDIDATES))

    def register_intrinsics(self, func: tirx.PrimFunc, target: Target) -> None:
        register_chunk_intrinsics(LookupShape.from_func(func), max(CHUNK_CANDIDATES), portable_intrin)
