"""LutcApplyTuningLog: the LUT kernels a tuning log has records for get their tuned schedule.

In the shape of TVM's ``relax.transform.MetaScheduleApplyDatabase``: the log of the target's tag
(``<log_dir>/<target-tag>/``, :class:`~lutc.tuning.log.TuningLog`) is read when the pass is made,
and each unscheduled ``lut_matmul`` kernel with a record gets the best record's schedule, marked
as :class:`~lutc.relay_passes.LutcScheduleKernels` marks the kernels it schedules; that pass, run
next, gives every other LUT kernel its rule's default. The module returned carries the outcome in
:data:`TUNING_ATTR`: the log, the kernels that use it (task name -> tuned mean latency in seconds)
and those on the default schedule (task name -> why). The builder reads it back with
:func:`tuning_summary` (``CompiledModel.metadata["tuning"]``) and warns about the fallbacks.
"""

from __future__ import annotations

from pathlib import Path

import tvm
from tvm import tirx
from tvm.target import Target

from ..relay_passes.module_update import with_functions
from ..relay_passes.schedule_kernels import is_scheduled, scheduled_kernel
from .apply import look_up, read_database
from .log import TuningLog

TUNING_ATTR = "lutc.tuning"
"""Module attribute: ``{"log": str, "tuned": {task: seconds}, "default": {task: why}}``."""


@tvm.transform.module_pass(opt_level=0, name="LutcApplyTuningLog")
class LutcApplyTuningLog:
    """Schedule the LUT kernels of ``log_dir``'s log for ``target`` from their best record (module docstring)."""

    def __init__(self, log_dir: str | Path, target: Target):
        self.target = target
        self.log = TuningLog(log_dir, target)
        self.database = read_database(log_dir, self.log, stacklevel=4)

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        updates, tuned, default = {}, {}, {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or is_scheduled(func):
                continue
            found = look_up(func, self.database, self.target)
            if found is None:
                continue
            if found.schedule is None:
                default[found.name] = found.why_default
            else:
                tuned[found.name] = found.seconds
                updates[gvar] = scheduled_kernel(found.schedule)
        outcome = {"log": str(self.log.dir), "tuned": tuned, "default": default}
        return with_functions(mod, updates).with_attr(TUNING_ATTR, outcome)


def tuning_summary(mod: tvm.IRModule) -> dict | None:
    """What :class:`LutcApplyTuningLog` recorded in ``mod`` (plain Python values, kernels by name);
    ``None`` when it did not run (a build without a tuning log)."""
    if mod.attrs is None or TUNING_ATTR not in mod.attrs:
        return None
    outcome = mod.attrs[TUNING_ATTR]
    return {
        "log": str(outcome["log"]),
        "tuned": {str(name): float(seconds) for name, seconds in sorted(outcome["tuned"].items())},
        "default": {str(name): str(why) for name, why in sorted(outcome["default"].items())},
    }
