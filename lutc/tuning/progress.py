"""Progress of a tuning run: a rich progress bar fed by a meta_schedule measure callback."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

from .log import mean_run_seconds


def mean_seconds(result) -> float | None:
    """The mean run time of a runner result, ``None`` when it failed."""
    return None if result.error_msg is not None else mean_run_seconds(result.run_secs)


@derived_object
class ReportMeasurements(PyMeasureCallback):
    """Calls ``report(trials, seconds, failures)`` after each measured batch: ``None`` times for
    failed trials, and why each failed (the last line of the builder's or runner's message)."""

    def __init__(self, report: Callable[[int, list[float | None], list[str]], None]):
        self.report = report

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        pairs = list(zip(builder_results, runner_results, strict=True))
        times = [None if b.error_msg is not None else mean_seconds(r) for b, r in pairs]
        failures = [_last_line(b.error_msg or r.error_msg) for b, r in pairs if b.error_msg or r.error_msg]
        self.report(len(runner_results), times, failures)


def _last_line(message: str) -> str:
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


class PlainProgress:
    """A line per measured batch, for logs and pipes (rich's live bar shows nothing there)."""

    def __init__(self):
        self.tasks: dict[int, dict] = {}
        self.start = time.monotonic()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def add_task(self, description: str, total: int, completed: int = 0, best: str = "") -> int:
        task_id = len(self.tasks)
        self.tasks[task_id] = {"description": description, "total": total, "completed": completed, "best": best}
        self._print(task_id)
        return task_id

    def update(self, task_id: int, advance: int = 0, completed: int | None = None, best: str | None = None) -> None:
        task = self.tasks[task_id]
        task["completed"] = task["completed"] + advance if completed is None else completed
        task["best"] = task["best"] if best is None else best
        self._print(task_id)

    def _print(self, task_id: int) -> None:
        t = self.tasks[task_id]
        elapsed = time.monotonic() - self.start
        line = f"[{elapsed:6.0f} s] {t['description']}: {t['completed']}/{t['total']} trials, {t['best']}"
        print(line, file=sys.stderr, flush=True)


def progress_bar(enabled: bool) -> Progress | PlainProgress:
    """Task, bar, trials done/total, best latency, time left and elapsed; plain lines off a terminal."""
    if enabled and not Console(stderr=True).is_terminal:
        return PlainProgress()
    return Progress(
        TextColumn("{task.description:<36}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[best]:>12}"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def best_text(seconds: float | None) -> str:
    return "best   -" if seconds is None else f"best {seconds * 1e6:7.1f} us"
