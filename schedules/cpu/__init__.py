"""Schedule rules for any LLVM CPU target, and the loop structure x86 and ARM rules share."""

from .batched_matmul import BatchedMatmul
from .elementwise import Elementwise
from .float_matmul import FloatMatmul
from .lut_matmul_portable import LutMatmulPortable
from .lut_precompute import LutPrecompute

__all__ = ["BatchedMatmul", "Elementwise", "FloatMatmul", "LutMatmulPortable", "LutPrecompute"]
