"""Schedule rules for CUDA GPUs: ``lut_matmul`` and ``lut_precompute``."""

from .base import is_cuda
from .lut_matmul_cuda import LutMatmulCuda
from .lut_precompute_cuda import LutPrecomputeCuda

__all__ = ["LutMatmulCuda", "LutPrecomputeCuda", "is_cuda"]
