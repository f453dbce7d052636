"""Carry a tuning log over to the current ``lut_matmul`` kernels.

A record is keyed by the structural hash of the unscheduled kernel, so any change to the
kernel's TensorIR (a new input, another epilogue step) leaves a log written by an older lutc
unused: every kernel falls back to the default schedule. The schedule itself (the trace)
names blocks and loops that a change of that kind keeps, so it usually still applies.

:func:`migrate_log` rebuilds each record's kernel from the spec stored in it, replays the
record's trace on the rebuilt kernel, and keeps the records that replay, under the new
workloads, with their trial counts; the others leave the log (each reported, with why).
Timings were measured on the older kernel; tune again (``lutc tune``) to measure the current
one. Run as
``python -m lutc.tuning.migrate LOG_DIR [--target x86]``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tvm
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms
from tvm.target import Target

from ..schedules import rule_for
from ..targets import resolve_target
from .log import LogContents, TuningLog, workload_hash
from .tasks import is_tunable, task_name_of, workload_of


@dataclass
class Migration:
    """What :func:`migrate_log` did: records moved, already current, or dropped (and why)."""

    moved: list[str] = field(default_factory=list)
    current: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        lines = [f"{len(self.moved)} record(s) moved to the current kernels, {len(self.current)} already current"]
        lines += [f"dropped {name}: {why}" for name, why in sorted(self.dropped.items())]
        return "\n".join(lines)


def _replays(mod: tvm.IRModule, trace, target: Target) -> None:
    func = mod["main"]
    rule_for(func, target).register_intrinsics(func, target)
    trace.apply_to_schedule(s_tir.Schedule(mod), remove_postproc=False)


def _migrated(record: ms.database.TuningRecord, target: Target, report: Migration):
    """``(record, new hash)`` for the current kernel, or ``None`` when it cannot move."""
    func = record.workload.mod["main"]
    if not is_tunable(func):
        report.dropped[workload_hash(record.workload.mod)] = "not a lut_matmul kernel"
        return None
    name = task_name_of(func)
    workload = workload_of(func)
    if workload_hash(workload) == workload_hash(record.workload.mod):
        report.current.append(name)
        return record, workload_hash(workload)
    try:
        _replays(workload, record.trace, target)
    except Exception as err:  # a trace that no longer fits is reported, never fatal
        report.dropped[name] = f"its schedule does not apply ({str(err).strip().splitlines()[-1][:160]})"
        return None
    args = ms.arg_info.ArgInfo.from_prim_func(workload["main"])
    moved = ms.database.TuningRecord(record.trace, ms.database.Workload(workload), record.run_secs, record.target, args)
    report.moved.append(name)
    return moved, workload_hash(workload)


def migrate_log(log_dir: str | Path, target: str | Target = "x86") -> Migration:
    """Rewrite the log of ``target`` under ``log_dir`` for the current kernels (module docstring)."""
    target = resolve_target(target) if isinstance(target, str) else target
    log = TuningLog(log_dir, target)
    contents, report = log.read(), Migration()
    records, trials = [], {}
    for record in contents.records:
        migrated = _migrated(record, target, report)
        if migrated is not None:
            new, key = migrated
            records.append(new)
            old = contents.trials.get(workload_hash(record.workload.mod), 0)
            trials[key] = max(trials.get(key, 0), old)
    if report.moved or report.dropped:  # a record that cannot apply is gone from the log, not left stale
        log.replace(LogContents(records, trials))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lutc.tuning.migrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("log_dir", help="the directory given to 'lutc tune --log-dir' (holds <target-tag>/)")
    parser.add_argument("--target", default="x86", help="the target whose log to migrate (default: x86)")
    args = parser.parse_args(argv)
    if not Path(args.log_dir).is_dir():
        print(f"error: {args.log_dir} is not a directory", file=sys.stderr)
        return 2
    print(migrate_log(args.log_dir, args.target).describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
