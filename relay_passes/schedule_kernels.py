"""LutcScheduleKernels: schedule every ``lutc.kernel`` PrimFunc with lutc's rules for a target.

Runs before legalization. With a tuning log (``lutc.tuning.apply.TunedSchedules``) a kernel
that has a record gets its tuned schedule; every other kernel gets the rule's default.
Scheduled kernels are marked ``tirx.is_scheduled`` (dlight leaves them alone) and opaque
(``op_pattern`` 8), so operator fusion keeps them whole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import tvm
from tvm.target import Target

from .. import schedules
from ..kernels.dequantize import DEQUANTIZE_KERNEL
from ..schedules.base import kernel_of
from .module_update import with_functions

if TYPE_CHECKING:
    from ..tuning.apply import TunedSchedules

OPAQUE = 8
"""``relay.op.OpPattern.OPAQUE``: never fused with neighbours."""
SCHEDULED_ATTR = "tirx.is_scheduled"


def is_scheduled(func: tvm.tirx.PrimFunc) -> bool:
    return bool(func.attrs) and SCHEDULED_ATTR in func.attrs


@tvm.transform.module_pass(opt_level=0, name="LutcScheduleKernels")
class LutcScheduleKernels:
    """Apply the first matching ``lutc.schedules`` rule to each LUT kernel."""

    def __init__(self, target: Target, tuned: TunedSchedules | None = None):
        self.target, self.tuned = target, tuned

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        updates = {}
        for gvar, func in mod.functions_items():
            kernel = kernel_of(func) if isinstance(func, tvm.tirx.PrimFunc) else None
            if kernel is None or kernel == DEQUANTIZE_KERNEL:
                continue
            sch = schedules.schedule(func, self.target, tuned=self.tuned)
            scheduled = sch.mod["main"].without_attr("global_symbol")
            updates[gvar] = scheduled.with_attrs({SCHEDULED_ATTR: True, "op_pattern": OPAQUE})
        return with_functions(mod, updates)
