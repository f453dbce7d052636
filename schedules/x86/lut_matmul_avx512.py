"""``lut_matmul`` on x86 with AVX-512 VBMI + VNNI: the CPU rule template with ``vpermi2b`` /
``vpdpbusd`` micro-kernels."""

from __future__ import annotations

from ...kernels.spec import KernelSpec
from ..cpu.lut_matmul_rule import CpuLutMatmulRule
from ..hw import AVX512_MAX_EXACT_CHUNK, AVX512_MAX_FAST_CHUNK
from .avx512_intrin import avx512_intrin, fits
from .base import has_avx512

ROW_COUNTS = (1, 2, 4)
PREFERRED_ROWS = 1
"""Several rows per call share each quad's loads, transposes and indices (a third fewer µops
per row), but at M = 16, 4096 x 4096 they measured no faster than one row with rows inside
groups (1364 vs 1313 µs at 2 bits, 2505 vs 2528 at 4): the tables, not the weights, are then
what streams. A tuning choice."""


class LutMatmulAVX512(CpuLutMatmulRule):
    """Fast mode: ``vpermi2b`` lookups summed by ``vpdpbusd`` into int32; exact mode: ``vpermps``."""

    def is_target_available(self, target) -> bool:
        return has_avx512(target)

    prefetches = True

    def intrin(self, spec: KernelSpec, chunk: int, rows: int = 1, prefetch: bool = False) -> str:
        return avx512_intrin(spec, chunk, rows, prefetch)

    def row_counts(self, spec: KernelSpec) -> tuple[int, ...]:
        """Fast mode with a static M: 1, 2 or 4 rows per call (each must divide M)."""
        if spec.mode != "fast" or spec.m is None or spec.m <= 1:
            return (1,)
        return tuple(r for r in ROW_COUNTS if spec.m % r == 0)

    def preferred_rows(self, spec: KernelSpec) -> int:
        return max(r for r in self.row_counts(spec) if r <= PREFERRED_ROWS)

    def default_m_inner(self, spec: KernelSpec) -> int:
        """Fast mode with a static M > 1 runs its rows inside groups (each group's weights stay
        in L1 for all rows): M = 16, 4096 x 4096 2-bit 1313 against 2263 µs. Dynamic M keeps rows
        outside (one row, the decode case, is 10 % faster so: 222 against 246 µs), and so does
        exact mode, compute-bound (M = 16 2-bit 4221 against 4657 µs)."""
        return 1 if spec.m is not None and spec.m > 1 and spec.mode == "fast" else 0

    def max_chunk(self, spec: KernelSpec) -> int:
        return AVX512_MAX_FAST_CHUNK if spec.mode == "fast" else AVX512_MAX_EXACT_CHUNK

    def chunk_fits(self, spec: KernelSpec, chunk: int) -> bool:
        return fits(spec, chunk)

    def defaults(self, spec: KernelSpec) -> tuple[int, int]:
        """Measured on a 2-core Intel Xeon (AVX-512 VBMI/VNNI; M = 1, 2048 x 2048 in L2, 1 thread):
        fast mode is flat within 10 % from 4 to 32 bytes, best at 8 (4 at 3 planes), unrolled;
        exact mode is best at 2 bytes (16 float tables in registers), 15-25 % slower at 8."""
        if spec.mode == "exact":
            return 2, 16
        return (4, 16) if spec.planes == 3 else (8, 16)
