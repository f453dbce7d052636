"""Schedule rules for any LLVM CPU target, and the loop structure x86 and ARM rules share."""

from .lut_matmul_portable import LutMatmulPortable
from .lut_precompute import LutPrecompute

__all__ = ["LutMatmulPortable", "LutPrecompute"]
