"""``lutc.tune``: tune a model's LUT kernels into a tuning log.

Model-level, so it sits in the build-and-run layer: it imports the model and runs lutc's LUT
passes as :func:`lutc.build` does (:func:`lutc.builder.lut_module`), then hands the kernels
to :mod:`lutc.tuning`, which knows nothing of models.
"""

from __future__ import annotations

from pathlib import Path

from tvm.target import Target

from .builder import BuildOptions, lut_module
from .frontend.weights import ModelSource
from .targets import resolve_target
from .tuning.api import check_tunable
from .tuning.measure import RpcTracker
from .tuning.tasks import tasks_of_module
from .tuning.tuner import TaskResult, TuneOptions, tune_tasks


def tune(
    model: ModelSource,
    target: str | dict | Target = "x86",
    *,
    trials: int = 64,
    log_dir: str | Path = "tuning_logs",
    rpc: RpcTracker | None = None,
    timeout: float = 60.0,
    threads: int | None = None,
    measure: str = "cold",
    progress: bool = True,
    **build_options,
) -> list[TaskResult]:
    """Tune each distinct LUT kernel of ``model`` for up to ``trials`` trials into ``log_dir/<target-tag>/``.

    Tuning again resumes: a kernel with ``trials`` trials in the log is skipped. ``rpc`` times
    candidates on a device behind a TVM RPC tracker; ``timeout`` bounds one candidate's run
    (seconds); ``threads`` is the thread count while timing (default: the target's cores);
    ``measure`` is ``"cold"`` (caches flushed before each run, as for a model's streamed
    weights) or ``"hot"``. ``build_options`` are :func:`lutc.build`'s (``mode``, ``shapes``...):
    tune with the options you build with, or the kernels will not match the log. The model's
    other kernels (norms, attention, elementwise) are not tuned: they keep dlight's and lutc's
    default schedules.
    """
    opts = BuildOptions(**build_options)
    tvm_target = resolve_target(target, threads or opts.threads)
    check_tunable(tvm_target)
    mod, _ = lut_module(model, opts, target=tvm_target)
    options = TuneOptions(trials, threads, measure, run_timeout=timeout, rpc=rpc, progress=progress)
    return tune_tasks(tasks_of_module(mod), tvm_target, log_dir, options)
