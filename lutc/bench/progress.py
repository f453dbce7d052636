"""Progress display: a rich progress bar when rich is installed, plain lines otherwise."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .kernels import CaseResult, Progress
from .report import ort_best, speedup
from .tables import cell

if TYPE_CHECKING:
    from rich.progress import Progress as RichBar
    from rich.progress import TaskID


def case_line(result: CaseResult) -> str:
    """``<case>  hot: lutc fast a / b µs, ORT best c / d (1.23x) | cold: ...``."""
    parts = []
    for mode in dict.fromkeys(m.mode for m in result.measurements):
        ort, gain = ort_best(result, mode), speedup(result, mode)
        text = f"{mode}: lutc fast {cell(result.get('lutc-fast', mode))}"
        if ort:
            text += f", {ort.library} {cell(ort)}" + (f" ({gain:.2f}x)" if gain else "")
        bad = [m.library for m in result.measurements if m.mode == mode and m.status in ("fail", "error")]
        parts.append(text + (f", FAILED: {', '.join(bad)}" if bad else ""))
    return f"{result.case.label}  " + " | ".join(parts)


class PlainProgress:
    """One line per step on stderr."""

    def __init__(self, total: int):
        self.total, self.done = total, 0

    def status(self, text: str) -> None:
        print(f"[{self.done}/{self.total}] {text}", file=sys.stderr, flush=True)

    def case_done(self, result: CaseResult) -> None:
        self.done += 1
        print(f"[{self.done}/{self.total}] {case_line(result)}", file=sys.stderr, flush=True)


class RichProgress:
    """A bar with elapsed and remaining time, and a printed line per finished case."""

    def __init__(self, bar: RichBar, task: TaskID):
        self.bar, self.task = bar, task

    def status(self, text: str) -> None:
        self.bar.update(self.task, description=text)

    def case_done(self, result: CaseResult) -> None:
        self.bar.console.print(case_line(result), markup=False, highlight=False)
        self.bar.advance(self.task)


@contextmanager
def progress(total: int, plain: bool = False) -> Iterator[Progress]:
    """Rich progress unless ``plain`` or rich is missing."""
    try:
        from rich import progress as rp
    except ImportError:
        plain = True
    if plain:
        yield PlainProgress(total)
        return
    columns = (rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn())
    with rp.Progress(*columns, rp.TimeElapsedColumn(), rp.TimeRemainingColumn(), transient=False) as bar:
        yield RichProgress(bar, bar.add_task("starting", total=total))
