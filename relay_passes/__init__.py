"""lutc's Relax graph passes, one pass per file.

- the LUT rewrite: :class:`LutcRewriteQuantizedMatmul` turns ``matmul(x, lut_dequantize(W))``
  into a table precompute and a lookup matmul; :class:`LutcShareTables` shares a precompute
  between matmuls of one activation; :class:`LutcFuseNormPrecompute` folds an RMSNorm into it;
- scheduling: :class:`LutcScheduleKernels` applies ``lutc.schedules``' rules to the LUT kernels,
  :class:`LutcApplyDefaultSchedules` default rules to the rest;
- the rest of the pipeline: :class:`LutcLiftWeights` (weight stages out of ``main``),
  :class:`LutcIsolateShapeKernels` (kernels with scalar shape arguments kept out of fusion),
  :class:`LutcVectorWeights` (GPUs: ``lut_matmul`` weights in the vector layout),
  :class:`LutcFastMath` (exp, tanh, erf, sigmoid, softmax, GELU as vectorizable polynomials on CPUs).

Installed as ``lutc.relay_passes`` (the name follows the original design; Relay itself is
gone from TVM). ``lutc.pipeline`` and the backends list them in order.
"""

from .default_schedules import LutcApplyDefaultSchedules
from .fast_math import LutcFastMath
from .fuse_norm_precompute import LutcFuseNormPrecompute
from .isolate_shape_kernels import LutcIsolateShapeKernels
from .lift_weights import LutcLiftWeights
from .rewrite_quantized_matmul import DECISIONS_ATTR, LutcRewriteQuantizedMatmul, RewriteOptions
from .schedule_kernels import LutcScheduleKernels
from .share_tables import LutcShareTables
from .vector_weights import LutcVectorWeights

__all__ = [
    "DECISIONS_ATTR",
    "LutcApplyDefaultSchedules",
    "LutcFastMath",
    "LutcFuseNormPrecompute",
    "LutcIsolateShapeKernels",
    "LutcLiftWeights",
    "LutcRewriteQuantizedMatmul",
    "LutcScheduleKernels",
    "LutcShareTables",
    "LutcVectorWeights",
    "RewriteOptions",
]
