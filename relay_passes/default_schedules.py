"""LutcApplyDefaultSchedules: default rules for every kernel lutc did not schedule.

A backend passes its rules (CUDA: dlight's GPU rules); without any, the CPU's apply.

CPU rules, in order (the first that returns a schedule wins): lutc's
:class:`~lutc.schedules.cpu.FloatMatmul` for float32 matmuls with a weight,
:class:`~lutc.schedules.cpu.BatchedMatmul` for attention's activation-by-activation matmuls,
:class:`~lutc.schedules.cpu.Elementwise` for fused injective chains, then dlight's CPU GEMV rule.
dlight's GEMV rule asserts on some static-shape kernels (seen on attention matmuls in TVM 0.27):
a dlight rule that fails on a kernel (:data:`DLIGHT_RULE_FAILURES`) is skipped with a warning, and
a kernel no rule takes keeps its unscheduled loops instead of failing the build. lutc's own rules
are not guarded: an error in one is a bug in lutc and fails the build. dlight's CPU ``Reduction``
rule is left out: on a static-shape decoder block it turned the fused RMSNorm into a 6.8 ms kernel
(9 us unscheduled).

Rules are applied the way dlight's ``ApplyDefaultSchedule`` applies them (the function's
``target`` attribute, else the current target; the rule's one schedule, marked scheduled), one
function and one rule at a time, so a failing rule is known by name.
"""

from __future__ import annotations

import warnings

import tvm
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.s_tir.schedule import ScheduleError
from tvm.target import Target

from ..schedules.cpu import BatchedMatmul, Elementwise, FloatMatmul
from .module_update import with_functions
from .schedule_kernels import SCHEDULED_ATTR, is_scheduled

DLIGHT_RULES = ("GEMV",)
DLIGHT_RULE_FAILURES: tuple[type[BaseException], ...] = (ScheduleError, tvm.error.InternalError, AssertionError)
"""What a dlight rule raises on a kernel it does not fit: a schedule primitive's ``ScheduleError``,
a failed check in TVM's C++ (``InternalError``), an ``assert`` of dlight's analysis (its GEMV
``normalize``: ``assert s_loops``, ``assert r_loops``)."""


def default_rules() -> tuple[ScheduleRule, ...]:
    """lutc's float, batched (attention) and elementwise rules, then dlight's :data:`DLIGHT_RULES`."""
    from tvm.s_tir import dlight  # with the rules, not at import: dlight imports TVM's tensor intrinsics

    return (FloatMatmul(), BatchedMatmul(), Elementwise(), *(getattr(dlight.cpu, name)() for name in DLIGHT_RULES))


def is_dlight_rule(rule: ScheduleRule) -> bool:
    """A rule of TVM's dlight (its failures on a kernel are tolerated), not one of lutc's."""
    return type(rule).__module__.startswith("tvm.s_tir.dlight.")


def _target_of(func: tvm.tirx.PrimFunc) -> Target:
    """The function's ``target`` attribute, else the current target (as dlight takes it)."""
    target = func.attrs.get("target") if func.attrs else None
    return target if target is not None else Target.current(allow_none=False)


def _apply(rule: ScheduleRule, func: tvm.tirx.PrimFunc, target: Target) -> tvm.tirx.PrimFunc | None:
    """``func`` scheduled by ``rule`` and marked scheduled; ``None`` when the rule does not apply."""
    space = rule.apply(func, target, False)
    if space is None:
        return None
    schedules = [space] if isinstance(space, tvm.s_tir.Schedule) else list(space)
    if len(schedules) != 1:
        raise ValueError(f"{type(rule).__name__} gave {len(schedules)} schedules; a default schedule is one")
    return schedules[0].mod["main"].with_attr(SCHEDULED_ATTR, True)


def _first_schedule(gvar: tvm.ir.GlobalVar, func: tvm.tirx.PrimFunc, rules) -> tvm.tirx.PrimFunc | None:
    """``func`` scheduled by the first rule that takes it; None (with a warning if a dlight rule failed) otherwise."""
    target = _target_of(func)
    failed = []
    for rule in rules:
        if not is_dlight_rule(rule):
            new = _apply(rule, func, target)  # lutc's own: an error is a bug, never skipped
        else:
            try:
                new = _apply(rule, func, target)
            except DLIGHT_RULE_FAILURES as err:
                failed.append(f"{type(rule).__name__}: {type(err).__name__}")
                continue
        if new is not None:
            return new
    if failed:
        warnings.warn(f"{gvar.name_hint}: dlight failed ({'; '.join(failed)}); left unscheduled", stacklevel=3)
    return None


@tvm.transform.module_pass(opt_level=0, name="LutcApplyDefaultSchedules")
class LutcApplyDefaultSchedules:
    """Apply ``rules`` (default: :func:`default_rules`) function by function, skipping dlight rules that fail."""

    def __init__(self, rules: tuple[ScheduleRule, ...] | None = None):
        self.rules = rules

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rules = self.rules if self.rules is not None else default_rules()
        updates = {}
        for gvar, func in mod.functions_items():
            if isinstance(func, tvm.tirx.PrimFunc) and not is_scheduled(func):
                new = _first_schedule(gvar, func, rules)
                if new is not None:
                    updates[gvar] = new
        return with_functions(mod, updates)
