"""Applying a tuning log at build time: the best record's trace, else the default schedule."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from tvm import s_tir, tirx
from tvm.target import Target

from ..schedules import rule_for
from .log import TuningLog, TuningLogWarning, mean_run_seconds
from .tasks import is_tunable, kernel_spec, task_name, workload_of


class UntunedKernelsWarning(UserWarning):
    """Some LUT kernels had no record in the tuning log and use the default schedule."""


@dataclass
class TunedSchedules:
    """The records of ``log_dir/<target-tag>/``, and which kernels used them."""

    log_dir: Path
    target: Target
    applied: dict[str, float] = field(default_factory=dict)
    """Task name -> tuned mean latency (seconds) of each kernel scheduled from the log."""
    fallbacks: dict[str, str] = field(default_factory=dict)
    """Task name -> why the default schedule was used."""

    def __post_init__(self) -> None:
        self.log = TuningLog(self.log_dir, self.target)
        if not Path(self.log_dir).is_dir():
            warnings.warn(f"tuning log directory {self.log_dir} does not exist", TuningLogWarning, stacklevel=4)
        self.database = self.log.read().database()

    def schedule(self, func: tirx.PrimFunc) -> s_tir.Schedule | None:
        """The tuned schedule of a ``lut_matmul`` kernel, or ``None`` (default schedule; noted)."""
        if not is_tunable(func):
            return None
        name = task_name(kernel_spec(func))
        record = self.database.query_tuning_record(workload_of(func), self.target, "main")
        if record is None:
            self.fallbacks[name] = "no record in the log"
            return None
        try:
            sch = self._replay(func, record.trace)
        except Exception as err:  # a record that does not replay must not break the build
            self.fallbacks[name] = f"its record does not apply ({str(err).strip().splitlines()[-1][:200]})"
            return None
        self.applied[name] = mean_run_seconds(record.run_secs) or 0.0
        return sch

    def _replay(self, func: tirx.PrimFunc, trace) -> s_tir.Schedule:
        """Replay ``trace`` on ``func`` itself (dynamic rows included), intrinsics registered first.

        The schedule takes ``func`` as it is: a copy of it made here (``func.with_attr``) would be held by
        the schedule alone, which TVM then rewrites in place, body included, and that body is ``func``'s.
        """
        rule_for(func, self.target).register_intrinsics(func, self.target)
        sch = s_tir.Schedule(func)
        trace.apply_to_schedule(sch, remove_postproc=False)
        return sch

    def warn_fallbacks(self) -> None:
        """One warning naming the kernels that fell back to the default schedule."""
        if self.fallbacks:
            listed = "; ".join(f"{name}: {why}" for name, why in sorted(self.fallbacks.items()))
            warnings.warn(
                f"{len(self.fallbacks)} LUT kernel(s) use the default schedule (tuning log {self.log.dir}): {listed}",
                UntunedKernelsWarning,
                stacklevel=3,
            )

    def summary(self) -> dict:
        return {"log": str(self.log.dir), "tuned": dict(self.applied), "default": dict(self.fallbacks)}
