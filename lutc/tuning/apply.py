"""Applying a tuning log: a ``lut_matmul`` kernel's best record replayed, else the default schedule.

:func:`look_up` answers for one kernel. A build applies a whole log with the pass
:class:`~lutc.tuning.apply_tuning_log.LutcApplyTuningLog`, which records in the module it returns
what it applied; :class:`TunedSchedules` serves single kernels (``lutc.kernels.build_lut_gemm``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tvm import s_tir, tirx
from tvm.s_tir import meta_schedule as ms
from tvm.target import Target

from ..schedules import rule_for
from .log import TuningLog, TuningLogWarning, mean_run_seconds
from .tasks import is_tunable, task_name_of, workload_of


class UntunedKernelsWarning(UserWarning):
    """Some LUT kernels had no record in the tuning log and use the default schedule."""


@dataclass(frozen=True, eq=False)
class KernelTuning:
    """What a tuning log gives one ``lut_matmul`` kernel: its tuned schedule, or why it has none."""

    name: str
    """The kernel's task name (:func:`lutc.tuning.tasks.task_name`)."""
    schedule: s_tir.Schedule | None
    """The best record's schedule; ``None``: the kernel keeps the default schedule."""
    seconds: float = 0.0
    """The record's mean latency (seconds) when it has a schedule."""
    why_default: str = ""
    """Why there is no schedule."""


def read_database(log_dir: str | Path, log: TuningLog, stacklevel: int = 2) -> ms.database.MemoryDatabase:
    """The records of ``log`` (a :class:`TuningLog` under ``log_dir``) in memory; a warning when
    ``log_dir`` does not exist, and (:meth:`TuningLog.read`) when the log is unusable."""
    if not Path(log_dir).is_dir():
        warnings.warn(f"tuning log directory {log_dir} does not exist", TuningLogWarning, stacklevel=stacklevel + 1)
    return log.read().database()


def look_up(func: tirx.PrimFunc, database: ms.database.Database, target: Target) -> KernelTuning | None:
    """The tuned schedule of a ``lut_matmul`` kernel, or why it has none; ``None`` for any other function."""
    if not is_tunable(func):
        return None
    name = task_name_of(func)
    record = database.query_tuning_record(workload_of(func), target, "main")
    if record is None:
        return KernelTuning(name, None, why_default="no record in the log")
    try:
        sch = _replay(func, record.trace, target)
    except Exception as err:  # a record that does not replay must not break the build
        return KernelTuning(name, None, why_default=f"its record does not apply ({_last_line(err)})")
    return KernelTuning(name, sch, seconds=mean_run_seconds(record.run_secs) or 0.0)


def _last_line(err: Exception) -> str:
    return str(err).strip().splitlines()[-1][:200]


def _replay(func: tirx.PrimFunc, trace, target: Target) -> s_tir.Schedule:
    """Replay ``trace`` on ``func`` itself (dynamic rows included), intrinsics registered first.

    The schedule takes ``func`` as it is: a copy of it made here (``func.with_attr``) would be held by
    the schedule alone, which TVM then rewrites in place, body included, and that body is ``func``'s.
    """
    rule_for(func, target).register_intrinsics(func, target)
    sch = s_tir.Schedule(func)
    trace.apply_to_schedule(sch, remove_postproc=False)
    return sch


def warn_untuned(log: str | Path, default: Mapping[str, str], stacklevel: int = 2) -> None:
    """One warning naming the kernels that fell back to the default schedule (none: no warning)."""
    if default:
        listed = "; ".join(f"{name}: {why}" for name, why in sorted(default.items()))
        warnings.warn(
            f"{len(default)} LUT kernel(s) use the default schedule (tuning log {log}): {listed}",
            UntunedKernelsWarning,
            stacklevel=stacklevel + 1,
        )


@dataclass
class TunedSchedules:
    """The records of ``log_dir/<target-tag>/``, and which kernels used them (one kernel at a time,
    for :func:`lutc.kernels.scheduled_module`; a model's build uses ``LutcApplyTuningLog``)."""

    log_dir: Path
    target: Target
    applied: dict[str, float] = field(default_factory=dict)
    """Task name -> tuned mean latency (seconds) of each kernel scheduled from the log."""
    fallbacks: dict[str, str] = field(default_factory=dict)
    """Task name -> why the default schedule was used."""

    def __post_init__(self) -> None:
        self.log = TuningLog(self.log_dir, self.target)
        self.database = read_database(self.log_dir, self.log, stacklevel=4)

    def schedule(self, func: tirx.PrimFunc) -> s_tir.Schedule | None:
        """The tuned schedule of a ``lut_matmul`` kernel, or ``None`` (default schedule; noted)."""
        found = look_up(func, self.database, self.target)
        if found is None:
            return None
        if found.schedule is None:
            self.fallbacks[found.name] = found.why_default
        else:
            self.applied[found.name] = found.seconds
        return found.schedule

    def warn_fallbacks(self) -> None:
        """One warning naming the kernels that fell back to the default schedule."""
        warn_untuned(self.log.dir, self.fallbacks, stacklevel=3)

    def summary(self) -> dict:
        return {"log": str(self.log.dir), "tuned": dict(self.applied), "default": dict(self.fallbacks)}
