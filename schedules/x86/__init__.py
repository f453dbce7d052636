"""Schedule rules for x86 CPUs with AVX2."""

from .lut_matmul_avx2 import LutMatmulAVX2

__all__ = ["LutMatmulAVX2"]
