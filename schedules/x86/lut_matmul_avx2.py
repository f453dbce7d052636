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


class LutMatmulAVX2(X86Rule):
    kernel = MATMUL_KERNEL

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, target: Target, tunable: bool) -> None:
        shape = LookupShape.from_func(func)
        max_chunk = max_int16_chunk(shape.planes) if shape.mode == "fast" else 16
        schedule_lut_matmul(sch, shape, max_chunk, avx2_intrin, tunable)
