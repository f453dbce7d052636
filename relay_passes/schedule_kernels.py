"""LutcScheduleKernels: schedule every ``lutc.kernel`` PrimFunc with lutc's rules for a target.

Runs before legalization, after the tuning phase (``lutc.tuning.apply_tuning_log``): a kernel
that phase scheduled from a tuning log is left as it is; every other kernel gets the rule's
default. Scheduled kernels are marked ``tirx.is_scheduled`` (dlight leaves them alone) and opaque
(``op_pattern`` 8), so operator fusion keeps them whole (:func:`scheduled_kernel`).
"""

from __future__ import annotations

import tvm
from tvm.target import Target

from .. import schedules
from ..kernels.dequantize import DEQUANTIZE_KERNEL
from ..kernels.names import OPAQUE, kernel_of
from .module_update import with_functions

SCHEDULED_ATTR = "tirx.is_scheduled"


def scheduled_kernel(sch: tvm.s_tir.Schedule) -> tvm.tirx.PrimFunc:
    """The kernel ``sch`` scheduled, as the model's module holds it: marked scheduled and opaque."""
    func = sch.mod["main"].without_attr("global_symbol")
    return func.with_attrs({SCHEDULED_ATTR: True, "op_pattern": OPAQUE})


def is_scheduled(func: tvm.tirx.PrimFunc) -> bool:
    return bool(func.attrs) and SCHEDULED_ATTR in func.attrs


def _unscheduled_kernel(func) -> bool:
    """A LUT kernel lutc schedules (the dequantize path's kernel is dlight's) not yet scheduled."""
    kernel = kernel_of(func)
    return kernel is not None and kernel != DEQUANTIZE_KERNEL and not is_scheduled(func)


@tvm.transform.module_pass(opt_level=0, name="LutcScheduleKernels")
class LutcScheduleKernels:
    """Apply the first matching ``lutc.schedules`` rule to each LUT kernel not yet scheduled."""

    def __init__(self, target: Target):
        self.target = target

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return with_functions(
            mod,
            {
                gvar: scheduled_kernel(schedules.schedule(func, self.target))
                for gvar, func in mod.functions_items()
                if _unscheduled_kernel(func)
            },
        )
