"""``lut_matmul`` on x86 with AVX2: the shared CPU loop schedule with ``vpshufb`` micro-kernels."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from ...kernels.intrin_desc import LookupShape
from ...kernels.matmul import MATMUL_KERNEL
from ..cpu.matmul_loops import schedule_lut_matmul
from ..hw import max_int16_chunk
from .avx2_intrin import avx2_intrin
from .base import X86Rule

PREFERRED_CHUNK = {"fast": 8, "exact": 2}
"""Measured on a 2-core EPYC, M = 1, 4096 x 4096: fast mode is flat from 4 to 8 bytes and
slower at 16; exact mode spills registers beyond 2 bytes (8 float accumulator chains)."""

MAX_EXACT_CHUNK = 16


class LutMatmulAVX2(X86Rule):
    kernel = MATMUL_KERNEL

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, target: Target, tunable: bool) -> None:
        shape = LookupShape.from_func(func)
        max_chunk = max_int16_chunk(shape.planes) if shape.mode == "fast" else MAX_EXACT_CHUNK
        schedule_lut_matmul(sch, shape, max_chunk, PREFERRED_CHUNK[shape.mode], avx2_intrin, tunable)
