"""``lut_matmul`` on AArch64 with NEON: the CPU rule template with ``tbl`` micro-kernels."""

from __future__ import annotations

from ...kernels.intrin_desc import LookupShape
from ..cpu.lut_matmul_rule import CpuLutMatmulRule
from ..hw import NEON_MAX_EXACT_CHUNK, max_int16_chunk
from .base import has_neon
from .neon_intrin import neon_intrin


class LutMatmulNEON(CpuLutMatmulRule):
    """Fast mode: ``tbl`` + ``saddl`` into int16 per plane; exact mode: ``tbl4`` on float tables."""

    def is_target_available(self, target) -> bool:
        return has_neon(target)

    def intrin(self, shape: LookupShape, chunk: int) -> str:
        return neon_intrin(shape, chunk)

    def max_chunk(self, shape: LookupShape) -> int:
        """Fast mode: the int16 budget of the planes; exact mode: a register-pressure cap."""
        return max_int16_chunk(shape.planes) if shape.mode == "fast" else NEON_MAX_EXACT_CHUNK

    def defaults(self, shape: LookupShape) -> tuple[int, int]:
        """No ARM machine to measure on: the chunk llvm-mca estimates fastest per lookup for
        Cortex-A76 and Neoverse V1 (README, ARM), with the chunk loop unrolled."""
        if shape.mode == "exact":
            return 4, 16
        return 4, 16
