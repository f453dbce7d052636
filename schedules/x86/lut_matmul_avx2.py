"""``lut_matmul`` on x86 with AVX2: the shared CPU loop schedule with ``vpshufb`` micro-kernels."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from ...kernels.intrin_desc import LookupShape
from ...kernels.matmul import MATMUL_KERNEL
from ..base import Knobs
from ..cpu.matmul_loops import register_chunk_intrinsics, schedule_lut_matmul, structural_choices
from ..hw import max_int16_chunk
from .avx2_intrin import avx2_intrin
from .base import X86Rule


def preferred_chunk_and_unroll(shape: LookupShape) -> tuple[int, int]:
    """Defaults measured on a 2-core EPYC (M = 1, 4096 x 4096, hot and cold weights).

    Fast mode: 1-2 planes run best with 8-byte chunks and an unrolled chunk loop; 3 planes with
    2-byte and 4 planes with 4-byte chunks, not unrolled (unrolled 3-4 bit chunk loops streamed
    cold weights at a quarter of the bandwidth). Exact mode spills registers beyond 2 bytes.
    """
    if shape.mode == "exact":
        return 2, 16
    return {1: (8, 16), 2: (8, 16), 3: (2, 0)}.get(shape.planes, (4, 0))


MAX_EXACT_CHUNK = 16


class LutMatmulAVX2(X86Rule):
    kernel = MATMUL_KERNEL

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, target: Target, knobs: Knobs) -> None:
        shape = LookupShape.from_func(func)
        chunk, unroll = preferred_chunk_and_unroll(shape)
        schedule_lut_matmul(sch, shape, max_chunk(shape), chunk, avx2_intrin, knobs, default_unroll=unroll)

    def structural_choices(self, func: tirx.PrimFunc, target: Target) -> dict[str, list[int]]:
        shape = LookupShape.from_func(func)
        return structural_choices(shape, max_chunk(shape))

    def register_intrinsics(self, func: tirx.PrimFunc, target: Target) -> None:
        shape = LookupShape.from_func(func)
        register_chunk_intrinsics(shape, max_chunk(shape), avx2_intrin)


def max_chunk(shape: LookupShape) -> int:
    """Fast mode: the int16 budget of the planes; exact mode: a register-pressure cap."""
    return max_int16_chunk(shape.planes) if shape.mode == "fast" else MAX_EXACT_CHUNK
