"""Schedule rules for x86 CPUs: AVX-512 (VBMI + VNNI) first, then AVX2."""

from .lut_matmul_avx2 import LutMatmulAVX2
from .lut_matmul_avx512 import LutMatmulAVX512

__all__ = ["LutMatmulAVX2", "LutMatmulAVX512"]
