"""``lut_matmul`` on AArch64 with NEON: the CPU rule template with ``tbl`` micro-kernels."""

from __future__ import annotations

from ...kernels.spec import KernelSpec
from ..cpu.lut_matmul_rule import CpuLutMatmulRule
from ..hw import NEON_MAX_EXACT_CHUNK, max_int16_chunk
from .base import has_neon
from .neon_intrin import neon_intrin


class LutMatmulNEON(CpuLutMatmulRule):
    """Fast mode: ``tbl`` + ``saddl`` into int16 per plane; exact mode: ``tbl4`` on float tables."""

    def is_target_available(self, target) -> bool:
        return has_neon(target)

    def intrin(self, spec: KernelSpec, chunk: int) -> str:
        return neon_intrin(spec, chunk)

    def max_chunk(self, spec: KernelSpec) -> int:
        """Fast mode: the int16 budget of the planes; exact mode: a register-pressure cap."""
        return max_int16_chunk(spec.planes) if spec.mode == "fast" else NEON_MAX_EXACT_CHUNK

    def defaults(self, spec: KernelSpec) -> tuple[int, int]:
        """No ARM machine to measure on: the chunk llvm-mca 22 estimates fastest per lookup for
        Neoverse N1 (A76-class) and V1 (README, ARM), with the chunk loop unrolled. Exact mode and
        3-4 planes take 2 bytes: at 4 their tables and weights spill q registers (4-bit fast on N1:
        86/81 stack loads/stores per iteration, 5.81 against 4.79 cycles per 32 lookups)."""
        if spec.mode == "exact" or spec.planes > 2:
            return 2, 16
        return 4, 16
