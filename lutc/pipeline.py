"""The compilation phases of ``lutc.build``, in order, in the shape of TVM's per-target pipelines.

1. ``lut_passes``: rewrite quantized matmuls into LUT kernels, share tables, fold RMSNorms
   into the precompute they feed, drop dead code (``lutc.tune`` extracts its tasks after this
   phase);
2. ``weight_passes``: put the kernels' weights on huge pages;
3. ``schedule_passes``: schedule LUT kernels with ``lutc.schedules``;
4. ``legalize_passes``: TVM's CPU legalization and fusion for everything else;
5. ``default_schedule_passes``: lutc's float matmul rule and dlight's CPU rules for the remaining
   kernels; constant weights those rules repack are repacked once, at compile time;
6. ``lower_passes``: TVM's dataflow lowering and VM finalization.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline
from tvm.target import Target

from .relay_passes import (
    LutcApplyDefaultSchedules,
    LutcFuseNormPrecompute,
    LutcHugePageWeights,
    LutcIsolateShapeKernels,
    LutcRewriteQuantizedMatmul,
    LutcScheduleKernels,
    LutcShareTables,
    RewriteOptions,
)


def lut_passes(options: RewriteOptions) -> list[tvm.transform.Pass]:
    return [
        LutcRewriteQuantizedMatmul(options),
        LutcShareTables(),
        relax.transform.DeadCodeElimination(),  # the merged calls' reshapes: a norm's only use left
        LutcFuseNormPrecompute(),
        relax.transform.DeadCodeElimination(),
    ]


def weight_passes() -> list[tvm.transform.Pass]:
    return [LutcHugePageWeights()]


def schedule_passes(target: Target, tuned=None) -> list[tvm.transform.Pass]:
    return [LutcScheduleKernels(target, tuned)]


def legalize_passes(target: Target) -> list[tvm.transform.Pass]:
    """TVM's CPU legalization and fusion, with shape kernels kept out of fused groups."""
    return [
        *cpu_pipeline.library_dispatch_passes(target),
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        LutcIsolateShapeKernels(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


def default_schedule_passes(target: Target) -> list[tvm.transform.Pass]:
    """Mark constant weights layout-free, schedule, then fold the weight repacking the rules asked for."""
    return [
        relax.transform.AttachAttrLayoutFreeBuffers(),
        LutcApplyDefaultSchedules(),
        relax.transform.SplitLayoutRewritePreproc(),
        relax.transform.FoldConstant(),
    ]


def lower_passes(target: Target) -> list[tvm.transform.Pass]:
    return cpu_pipeline.dataflow_lower_passes(target) + cpu_pipeline.finalize_passes(target)


def get_pipeline(target: Target, options: RewriteOptions | None, tuned=None) -> tvm.transform.Pass:
    """The Relax pipeline for an LLVM CPU target; ``options=None`` when the LUT phase already ran.

    ``tuned``: a :class:`lutc.tuning.apply.TunedSchedules` whose records schedule the kernels.
    """
    if target.kind.name != "llvm":
        raise NotImplementedError(f"lutc.build supports LLVM CPU targets; got {target.kind.name}")

    @tvm.transform.module_pass(opt_level=0, name="LutcPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            phases = (
                (lut_passes(options) if options is not None else [])
                + weight_passes()
                + schedule_passes(target, tuned)
                + legalize_passes(target)
                + default_schedule_passes(target)
                + lower_passes(target)
            )
            return tvm.transform.Sequential(phases)(mod)

    return _pipeline
