"""LutcApplyDefaultSchedules: dlight's CPU rules for every kernel lutc did not schedule.

dlight's CPU GEMV rule asserts on some static-shape kernels (seen on attention matmuls in
TVM 0.27); a kernel whose rule fails keeps its unscheduled loops instead of failing the build.
dlight's CPU ``Reduction`` rule is left out: on a static-shape decoder block it turned the fused
RMSNorm into a 6.8 ms kernel (9 us unscheduled).
"""

from __future__ import annotations

import warnings

import tvm

DLIGHT_RULES = ("GEMV",)


@tvm.transform.module_pass(opt_level=0, name="LutcApplyDefaultSchedules")
class LutcApplyDefaultSchedules:
    """Apply ``dlight.cpu`` rules function by function, skipping those that fail."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        from tvm.s_tir import dlight

        apply = dlight.ApplyDefaultSchedule(*(getattr(dlight.cpu, name)() for name in DLIGHT_RULES))
        updates = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tvm.tirx.PrimFunc) or (func.attrs and "tirx.is_scheduled" in func.attrs):
                continue
            try:
                updates[gvar] = apply(tvm.IRModule({gvar: func}))[gvar]
            except Exception as err:
                warnings.warn(f"{gvar.name_hint}: dlight failed ({type(err).__name__}); left unscheduled", stacklevel=2)
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod
