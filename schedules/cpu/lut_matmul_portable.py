"""``lut_matmul`` on any LLVM CPU: the CPU rule template with a scalar micro-kernel."""

from __future__ import annotations

from ...kernels.spec import KernelSpec
from ..hw import CHUNK_CANDIDATES
from .base import is_llvm_cpu
from .lut_matmul_rule import CpuLutMatmulRule
from .portable_intrin import portable_intrin

PREFERRED_CHUNK = 8


class LutMatmulPortable(CpuLutMatmulRule):
    """Correct everywhere LLVM runs; the per-ISA rules are the fast ones."""

    def is_target_available(self, target) -> bool:
        return is_llvm_cpu(target)

    def intrin(self, spec: KernelSpec, chunk: int) -> str:
        return portable_intrin(spec, chunk)

    def max_chunk(self, spec: KernelSpec) -> int:
        return max(CHUNK_CANDIDATES)

    def defaults(self, spec: KernelSpec) -> tuple[int, int]:
        return PREFERRED_CHUNK, 16
