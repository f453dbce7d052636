"""Relax graph passes that rewrite quantized matmuls into LUT kernels, one pass per file.

Installed as ``lutc.relay_passes`` (the name follows the original design; Relay itself is
gone from TVM). ``lutc.pipeline`` lists them in order.
"""

from .default_schedules import LutcApplyDefaultSchedules
from .fuse_norm_precompute import LutcFuseNormPrecompute
from .isolate_shape_kernels import LutcIsolateShapeKernels
from .lift_weights import LutcLiftWeights
from .rewrite_quantized_matmul import DECISIONS_ATTR, LutcRewriteQuantizedMatmul, RewriteOptions
from .schedule_kernels import LutcScheduleKernels
from .share_tables import LutcShareTables

__all__ = [
    "DECISIONS_ATTR",
    "LutcApplyDefaultSchedules",
    "LutcFuseNormPrecompute",
    "LutcIsolateShapeKernels",
    "LutcLiftWeights",
    "LutcRewriteQuantizedMatmul",
    "LutcScheduleKernels",
    "LutcShareTables",
    "RewriteOptions",
]
