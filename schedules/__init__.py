"""TensorIR schedule rules for the LUT kernels, one rule per file, per target family.

Installed as ``lutc.schedules``. :func:`schedule` applies the first rule that fits a
``lutc.kernel`` PrimFunc and a target, most specific first.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from ..kernels.names import kernel_of
from .arm import LutMatmulNEON
from .base import DEFAULT_KNOBS, Knobs, LutRule
from .cpu import LutMatmulPortable, LutPrecompute
from .cuda import LutMatmulCuda, LutPrecomputeCuda
from .x86 import LutMatmulAVX2, LutMatmulAVX512

RULES: tuple[LutRule, ...] = (
    LutMatmulAVX512(), LutMatmulAVX2(), LutMatmulNEON(), LutMatmulPortable(), LutPrecompute(),
    LutMatmulCuda(), LutPrecomputeCuda(),
)  # fmt: skip


def rule_for(func: tirx.PrimFunc, target: Target) -> LutRule:
    """The first rule that fits a ``lutc.kernel`` PrimFunc and a target, most specific first."""
    for rule in RULES:
        if rule.applies(func, target):
            return rule
    raise NotImplementedError(f"no lutc schedule rule for kernel {kernel_of(func)!r} on target {target}")


def schedule(func: tirx.PrimFunc, target: Target, knobs: Knobs = DEFAULT_KNOBS, tuned=None) -> s_tir.Schedule:
    """Schedule a ``lutc.kernel`` PrimFunc with the first rule that applies.

    ``tuned`` (a ``lutc.tuning.apply.TunedSchedules``): its record's schedule when it has one.
    """
    sch = tuned.schedule(func) if tuned is not None else None
    return sch if sch is not None else rule_for(func, target).apply(func, target, knobs)


__all__ = ["RULES", "Knobs", "LutRule", "rule_for", "schedule"]
