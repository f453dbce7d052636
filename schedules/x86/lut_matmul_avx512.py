"""``lut_matmul`` on x86 with AVX-512 VBMI + VNNI: the CPU rule template with ``vpermi2b`` /
``vpdpbusd`` micro-kernels."""

from __future__ import annotations

from ...kernels.intrin_desc import LookupShape
from ..cpu.lut_matmul_rule import CpuLutMatmulRule
from ..hw import AVX512_MAX_EXACT_CHUNK, AVX512_MAX_FAST_CHUNK
from .avx512_intrin import avx512_intrin, fits
from .base import has_avx512


class LutMatmulAVX512(CpuLutMatmulRule):
    """Fast mode: ``vpermi2b`` lookups summed by ``vpdpbusd`` into int32; exact mode: ``vpermps``."""

    def is_target_available(self, target) -> bool:
        return has_avx512(target)

    def intrin(self, shape: LookupShape, chunk: int) -> str:
        return avx512_intrin(shape, chunk)

    def max_chunk(self, shape: LookupShape) -> int:
        return AVX512_MAX_FAST_CHUNK if shape.mode == "fast" else AVX512_MAX_EXACT_CHUNK

    def chunk_fits(self, shape: LookupShape, chunk: int) -> bool:
        return fits(shape, chunk)

    def defaults(self, shape: LookupShape) -> tuple[int, int]:
        """Measured on a 2-core Intel Xeon (AVX-512 VBMI/VNNI; M = 1, 2048 x 2048 in L2, 1 thread):
        fast mode is flat within 10 % from 4 to 32 bytes, best at 8 (4 at 3 planes), unrolled;
        exact mode is best at 2 bytes (16 float tables in registers), 15-25 % slower at 8."""
        if shape.mode == "exact":
            return 2, 16
        return (4, 16) if shape.planes == 3 else (8, 16)
