"""Schedule rules for AArch64 CPUs: NEON ``tbl`` micro-kernels."""

from .lut_matmul_neon import LutMatmulNEON

__all__ = ["LutMatmulNEON"]
