"""The compilation phases of ``lutc.build``, in order, in the shape of TVM's per-target pipelines.

1. ``lut_passes`` (every target): rewrite quantized matmuls into LUT kernels, share tables,
   fold RMSNorms into the precompute they feed, drop dead code (``lutc.tune`` extracts its
   tasks after this phase);
2. the target family's phases (:mod:`lutc.backend`): weight placement, LUT kernel schedules,
   legalization and fusion, default schedules for the rest, lowering.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.target import Target

from .backend import backend_of
from .relay_passes import LutcFuseNormPrecompute, LutcRewriteQuantizedMatmul, LutcShareTables, RewriteOptions


def lut_passes(options: RewriteOptions) -> list[tvm.transform.Pass]:
    """The LUT rewrite, then (``options.fuse``) table sharing and norm folding."""
    if not options.fuse:
        return [LutcRewriteQuantizedMatmul(options), relax.transform.DeadCodeElimination()]
    return [
        LutcRewriteQuantizedMatmul(options),
        LutcShareTables(),
        relax.transform.DeadCodeElimination(),  # the merged calls' reshapes: a norm's only use left
        LutcFuseNormPrecompute(),
        relax.transform.DeadCodeElimination(),
    ]


def get_pipeline(target: Target, options: RewriteOptions | None, tuned=None) -> tvm.transform.Pass:
    """The Relax pipeline for ``target``; ``options=None`` when the LUT phase already ran.

    ``tuned``: a :class:`lutc.tuning.apply.TunedSchedules` whose records schedule the kernels.
    """
    backend = backend_of(target)

    @tvm.transform.module_pass(opt_level=0, name="LutcPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            phases = (lut_passes(options) if options is not None else []) + backend.phases(target, tuned)
            return tvm.transform.Sequential(phases)(mod)

    return _pipeline
