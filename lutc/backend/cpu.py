"""The CPU backend (LLVM targets: x86, AArch64): its phases after the LUT rewrite and the tuning
log (``phases``, by name, in the order they run), its device, its tuning tag and what a machine
needs to run its code.

1. ``schedule_passes``: LUT kernels the tuning log did not schedule, scheduled with
   ``lutc.schedules`` (the target's ISA rule);
2. ``legalize_passes``: exp, tanh, erf, sigmoid, softmax and GELU as polynomials that vectorize
   (:class:`~lutc.relay_passes.LutcFastMath`), then TVM's CPU legalization and fusion;
3. ``default_schedule_passes``: lutc's float matmul rule and dlight's CPU rules for the
   remaining kernels; constant weights those rules repack are repacked once, at compile time;
4. ``lift_passes`` (before legalization) and ``weight_passes``: work on model weights alone (a
   transpose, a reshape, the rules' repacking) lifted into weight stages run once when the weights
   are made (:class:`~lutc.relay_LutcLiftWeights`);
5. ``lower_passes``: TVM's dataflow lowering and VM finalization.

The model's weights are loaded onto transparent huge pages (``HUGE_PAGES``, :mod:`lutc.weights`).
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline
from tvm.target import Target

from ..relay_passes import LutcApplyDefaultSchedules, LutcFastMath, LutcLiftWeights, LutcScheduleKernels
from ..targets import isa_level
from ..targets import missing_on_host as missing_cpu_features
from .legalize import legalize_and_fuse

KINDS = ("llvm",)
CAN_TUNE = True
"""``lutc.tune`` builds and times candidates for these targets."""
HUGE_PAGES = True
"""Weights go on 2 MiB pages: a decode step streams them from DRAM (:func:`lutc.runtime.huge_page_region`)."""


def lift_passes() -> list[tvm.transform.Pass]:
    """Weight preprocessing lifted out of ``main`` before legalization (a transposed weight stays a weight)."""
    return [LutcLiftWeights()]


def weight_passes() -> list[tvm.transform.Pass]:
    """The default schedules' weight rewrites lifted out of ``main``."""
    return [LutcLiftWeights()]


def schedule_passes(target: Target) -> list[tvm.transform.Pass]:
    """LUT kernels the tuning phase left unscheduled get their rule's default schedule."""
    return [LutcScheduleKernels(target)]


def legalize_passes(target: Target) -> list[tvm.transform.Pass]:
    """Fast transcendental ops, then TVM's CPU legalization and fusion, with shape kernels kept out
    of fused groups."""
    return [LutcFastMath(), *legalize_and_fuse(cpu_pipeline.library_dispatch_passes(target))]


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


def phases(target: Target) -> dict[str, list[tvm.transform.Pass]]:
    """Every phase after the LUT rewrite and the tuning log (:func:`lutc.pipeline.phases`), by name, in order."""
    return {
        "schedule": schedule_passes(target),
        "lift": lift_passes(),
        "legalize": legalize_passes(target),
        "default_schedule": default_schedule_passes(target),
        "weights": weight_passes(),
        "lower": lower_passes(target),
    }


def device(_target: Target, session=None) -> tvm.runtime.Device:
    return tvm.cpu() if session is None else session.cpu()


def level(target: Target) -> str:
    """What the code needs, in words: the ISA level, ``x86_64-avx512``, ``aarch64-neon``, ..."""
    return isa_level(target)


def tuning_tag(target: Target) -> str:
    """``llvm-<arch>-<level>``: the ISA level (:func:`lutc.targets.isa_level`) names the features
    lutc's kernels use, not the CPU, so every AVX2 machine shares one log."""
    return f"{target.kind.name}-{isa_level(target)}"


def missing_on_host(target: Target) -> list[str]:
    """What this machine lacks to run code built for ``target`` (:func:`lutc.targets.missing_on_host`)."""
    return missing_cpu_features(target)
