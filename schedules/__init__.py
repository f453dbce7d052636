"""TensorIR schedule rules for the LUT kernels, one rule per file, per target family.

Installed as ``lutc.schedules``. :func:`schedule` applies the first rule that fits a
``lutc.kernel`` PrimFunc and a target, most specific first.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from .base import LutRule, kernel_of
from .cpu import LutMatmulPortable, LutPrecompute
from .x86 import LutMatmulAVX2

RULES: tuple[LutRule, ...] = (LutMatmulAVX2(), LutMatmulPortable(), LutPrecompute())


def schedule(func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule:
    """Schedule a ``lutc.kernel`` PrimFunc with the first rule that applies."""
    for rule in RULES:
        sch = rule.apply(func, target, tunable)
        if sch is not None:
            return sch
    raise NotImplementedError(f"no lutc schedule rule for kernel {kernel_of(func)!r} on target {target}")


__all__ = ["RULES", "LutRule", "schedule"]
