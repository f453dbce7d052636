"""LutcApplyDefaultSchedules: default rules for every kernel lutc did not schedule.

A backend passes its rules (CUDA: dlight's GPU rules); without any, the CPU's apply.

CPU rules, in order (the first that returns a schedule wins): lutc's
:class:`~lutc.schedules.cpu.FloatMatmul` for float32 matmuls with a weight,
:class:`~lutc.schedules.cpu.BatchedMatmul` for attention's activation-by-activation matmuls,
:class:`~lutc.schedules.cpu.Elementwise` for fused injective chains, then dlight's CPU GEMV rule.
dlight's GEMV rule asserts on some static-shape kernels (seen on attention matmuls in TVM 0.27);
a rule that fails is skipped with a warning, and a kernel no rule takes keeps its unscheduled
loops instead of failing the build. dlight's CPU ``Reduction`` rule is left out: on a
static-shape decoder block it turned the fused RMSNorm into a 6.8 ms kernel (9 us unscheduled).
"""

from __future__ import annotations

import warnings

import tvm
from tvm.s_tir.dlight.base import ScheduleRule

from .module_update import with_functions

DLIGHT_RULES = ("GEMV",)


def default_rules() -> tuple[ScheduleRule, ...]:
    """lutc's float, batched (attention) and elementwise rules, then dlight's :data:`DLIGHT_RULES`."""
    from tvm.s_tir import dlight

    from ..schedules.cpu import BatchedMatmul, Elementwise, FloatMatmul

    return (FloatMatmul(), BatchedMatmul(), Elementwise(), *(getattr(dlight.cpu, name)() for name in DLIGHT_RULES))


def _scheduled(func: tvm.tirx.PrimFunc) -> bool:
    return bool(func.attrs) and "tirx.is_scheduled" in func.attrs


def _first_schedule(gvar: tvm.ir.GlobalVar, func: tvm.tirx.PrimFunc, appliers: list) -> tvm.tirx.PrimFunc | None:
    """``func`` scheduled by the first rule that takes it; None (with a warning if a rule failed) otherwise."""
    failed = []
    for rule, apply in appliers:
        try:
            new = apply(tvm.IRModule({gvar: func}))[gvar]
        except Exception as err:
            failed.append(f"{type(rule).__name__}: {type(err).__name__}")
            continue
        if _scheduled(new):
            return new
    if failed:
        warnings.warn(f"{gvar.name_hint}: dlight failed ({'; '.join(failed)}); left unscheduled", stacklevel=3)
    return None


@tvm.transform.module_pass(opt_level=0, name="LutcApplyDefaultSchedules")
class LutcApplyDefaultSchedules:
    """Apply ``rules`` (default: :func:`default_rules`) function by function, skipping rules that fail."""

    def __init__(self, rules: tuple[ScheduleRule, ...] | None = None):
        self.rules = rules

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        from tvm.s_tir import dlight

        rules = self.rules if self.rules is not None else default_rules()
        appliers = [(rule, dlight.ApplyDefaultSchedule(rule)) for rule in rules]
        updates = {}
        for gvar, func in mod.functions_items():
            if isinstance(func, tvm.tirx.PrimFunc) and not _scheduled(func):
                new = _first_schedule(gvar, func, appliers)
                if new is not None:
                    updates[gvar] = new
        return with_functions(mod, updates)
