"""The LUT kernels as target-independent TensorIR PrimFuncs, and the names that tie them to
the passes and schedules that use them.

- :func:`lut_precompute` / :func:`lut_matmul` (and the fallback ``lut_dequantize``):
  unscheduled PrimFuncs for a :class:`KernelSpec`, tagged ``lutc.kernel``;
- :mod:`.names`: the ``lutc.kernel`` tag (:func:`~.names.kernel_of`), the kernels' attribute,
  block and loop names.

This layer imports only :mod:`lutc.quant` (and TVM). Compiling and calling the kernels from
numpy is :mod:`lutc.gemm`'s (``build_lut_gemm``, ``LutGemm``).
"""

from .matmul import lut_matmul
from .precompute import lut_precompute
from .spec import KernelSpec

__all__ = ["KernelSpec", "lut_matmul", "lut_precompute"]
