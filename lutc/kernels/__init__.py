"""The LUT kernels as TensorIR PrimFuncs, and a numpy-facing wrapper to compile and run them.

- :func:`lut_precompute` / :func:`lut_matmul`: unscheduled, target-independent PrimFuncs;
- :func:`build_lut_gemm`: schedule them for a target (``lutc.schedules``) and compile.
"""

from .gemm import LutGemm, PreparedWeight, Workspace, build_lut_gemm, scheduled_module
from .matmul import lut_matmul
from .precompute import lut_precompute
from .spec import KernelSpec

__all__ = [
    "KernelSpec",
    "LutGemm",
    "PreparedWeight",
    "Workspace",
    "build_lut_gemm",
    "lut_matmul",
    "lut_precompute",
    "scheduled_module",
]
