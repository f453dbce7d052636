"""Tune tasks one by one into a shared log, resuming where earlier runs stopped.

Each task is tuned into a private in-memory database seeded with the log's records of that
workload (so measured candidates are not measured again), then merged into the log under its
lock. A run that is interrupted loses at most the task in flight. A task that already had
``trials`` trials in the log is skipped.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tvm_ffi
from tvm.s_tir import meta_schedule as ms
from tvm.target import Target

from ..errors import LutcError
from ..runtime import get_threads
from .log import LogContents, TuningLog, commit_record, mean_run_seconds, workload_hash
from .measure import Measure, RpcTracker, make_builder, make_runner
from .progress import ReportMeasurements, best_text, progress_bar
from .space import design_spaces
from .tasks import TuneTask

POPULATION = 64
"""Evolutionary search population: the spaces are small (tens to hundreds of points)."""


@dataclass(frozen=True)
class TuneOptions:
    """How to tune: trials per task, timing and where candidates run."""

    trials: int = 64
    threads: int | None = None
    """Pool threads while timing (default: the target's ``num-cores``)."""
    measure: Measure = "cold"
    repeat: int = 5
    build_timeout: float = 120.0
    run_timeout: float = 60.0
    rpc: RpcTracker | None = None
    seed: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise ValueError(f"trials must be a positive int; got {self.trials!r}")
        if self.measure not in ("cold", "hot"):
            raise ValueError(f"measure must be 'cold' or 'hot'; got {self.measure!r}")


@dataclass(frozen=True)
class TaskResult:
    """A task after tuning: trials run now and in total, the best mean latency in the log, and
    how many kernel calls of the model share it."""

    name: str
    trials_run: int
    trials_total: int
    best_seconds: float | None
    calls: int = 1
    failures: str | None = None
    """Why trials of this run failed (the most common reason), ``None`` when none did."""


def _check_writable(directory: Path) -> None:
    """Fail before tuning, not at the first merge, when the log cannot be written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LutcError(f"cannot create the tuning log directory {directory}: {err.strerror}") from None
    if not os.access(directory, os.W_OK):
        raise LutcError(f"the tuning log directory {directory} is not writable")


def tune_tasks(tasks: Sequence[TuneTask], target: Target, log_dir, options: TuneOptions) -> list[TaskResult]:
    """Tune every task up to ``options.trials`` trials into ``log_dir/<target-tag>/``."""
    if not tasks:
        raise ValueError("nothing to tune: no LUT kernels (lut_matmul) in the model")
    log = TuningLog(log_dir, target)
    _check_writable(log.dir)
    contents = log.read()
    threads = options.threads or int(target.attrs.get("num-cores", 0) or 0) or get_threads()
    builder = make_builder(target, options.build_timeout)
    runner = make_runner(threads, options.run_timeout, options.measure, options.repeat, options.rpc)
    results = []
    with progress_bar(options.progress) as bar:
        for task in tasks:
            results.append(_tune_one(task, target, log, contents, builder, runner, options, bar))
    return results


def _tune_one(task: TuneTask, target, log: TuningLog, contents: LogContents, builder, runner, options, bar):
    key = workload_hash(task.workload)
    done = contents.trials.get(key, 0)
    todo = max(0, options.trials - done)
    known = [r for r in contents.records if tvm_ffi.structural_equal(r.workload.mod, task.workload)]
    best = _best(known)
    bar_task = bar.add_task(task.name, total=options.trials, completed=min(done, options.trials), best=best_text(best))
    if todo == 0:
        return TaskResult(task.name, 0, done, best, task.weight)
    run = _Run(best)

    def report(trials: int, times: list[float | None], failures: list[str]) -> None:
        run.record(times, failures)
        bar.update(bar_task, advance=trials, best=best_text(run.best))

    context = _context(task, target, options.seed)
    records = _search(context, known, todo, builder, runner, ReportMeasurements(report))
    log.merge(records, {key: todo})
    bar.update(bar_task, completed=options.trials)
    return TaskResult(task.name, run.trials, done + todo, _best(records), task.weight, run.failure_summary())


def _search(context: ms.TuneContext, known: list, trials: int, builder, runner, callback) -> list:
    """``trials`` more trials of one task, seeded with its ``known`` records; returns all records."""
    database = ms.database.MemoryDatabase()
    for record in known:
        commit_record(database, record)
    with tempfile.TemporaryDirectory(prefix="lutc-tune-") as work_dir:
        ms.tune.tune_tasks(
            tasks=[context],
            task_weights=[1.0],
            work_dir=work_dir,
            max_trials_global=trials,
            num_trials_per_iter=min(trials, 16),
            builder=builder,
            runner=runner,
            database=database,
            cost_model=ms.cost_model.XGBModel(num_tuning_cores=1),
            measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), callback],
            task_scheduler="round-robin",
        )
    return list(database.get_all_tuning_records())


class _Run:
    """Trials measured so far in this run and the best time seen."""

    def __init__(self, best: float | None):
        self.trials, self.best = 0, best
        self.failures: dict[str, int] = {}

    def record(self, times: list[float | None], failures: list[str]) -> None:
        self.trials += len(times)
        ok = [t for t in times if t is not None]
        if ok and (self.best is None or min(ok) < self.best):
            self.best = min(ok)
        for reason in failures:
            self.failures[reason] = self.failures.get(reason, 0) + 1

    def failure_summary(self) -> str | None:
        """``N of M trials failed: <most common reason>``, or ``None`` when none failed."""
        if not self.failures:
            return None
        reason = max(self.failures, key=self.failures.get)
        return f"{sum(self.failures.values())} of {self.trials} trials failed: {reason}"


def _best(records) -> float | None:
    times = [t for t in (mean_run_seconds(r.run_secs) for r in records) if t is not None]
    return min(times) if times else None


def _context(task: TuneTask, target: Target, seed: int | None) -> ms.TuneContext:
    return ms.TuneContext(
        mod=task.workload,
        target=target,
        space_generator=design_spaces(target),
        search_strategy=ms.search_strategy.EvolutionarySearch(population_size=POPULATION, init_min_unmeasured=16),
        task_name=task.name,
        rand_state=-1 if seed is None else seed,
        num_threads=1,
        logger=logging.getLogger("lutc.tuning.meta_schedule"),
    ).clone()
