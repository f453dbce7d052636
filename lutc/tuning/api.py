"""``lutc.tune``: tune a model's LUT kernels (or a list of kernel specs) into a tuning log."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tvm.target import Target

from ..backend import backend_of, level
from ..builder import BuildOptions, lut_module
from ..frontend.weights import ModelSource
from ..kernels.spec import KernelSpec
from ..targets import resolve_target
from .measure import RpcTracker
from .tasks import tasks_of_module, tasks_of_specs
from .tuner import TaskResult, TuneOptions, tune_tasks


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
    other_ops: bool = False,
    **build_options,
) -> list[TaskResult]:
    """Tune each distinct LUT kernel of ``model`` for up to ``trials`` trials into ``log_dir/<target-tag>/``.

    Tuning again resumes: a kernel with ``trials`` trials in the log is skipped. ``rpc`` times
    candidates on a device behind a TVM RPC tracker; ``timeout`` bounds one candidate's run
    (seconds); ``threads`` is the thread count while timing (default: the target's cores);
    ``measure`` is ``"cold"`` (caches flushed before each run, as for a model's streamed
    weights) or ``"hot"``. ``build_options`` are :func:`lutc.build`'s (``mode``, ``shapes``...):
    tune with the options you build with, or the kernels will not match the log.
    ``other_ops=True`` (tuning TVM's other kernels too) is not implemented yet.
    """
    if other_ops:
        raise NotImplementedError(
            "tuning the model's other kernels (norms, attention, elementwise) is not implemented yet; "
            "lutc.tune tunes the LUT matmuls and the rest keeps dlight's default schedules"
        )
    opts = BuildOptions(**build_options)
    tvm_target = resolve_target(target, threads or opts.threads)
    _check_tunable(tvm_target)
    mod, _ = lut_module(model, opts)
    options = TuneOptions(trials, threads, measure, run_timeout=timeout, rpc=rpc, progress=progress)
    return tune_tasks(tasks_of_module(mod), tvm_target, log_dir, options)


def _check_tunable(target: Target) -> None:
    if not backend_of(target).CAN_TUNE:
        raise NotImplementedError(
            f"tuning for {level(target)} is not implemented yet (lutc's tuner builds and times candidates on "
            "CPUs only); builds for it use the rules' default schedules"
        )


def tune_kernels(
    specs: Iterable[KernelSpec],
    target: str | dict | Target = "x86",
    *,
    log_dir: str | Path = "tuning_logs",
    options: TuneOptions | None = None,
) -> list[TaskResult]:
    """Tune ``lut_matmul`` for kernel specs, as :func:`lutc.kernels.build_lut_gemm` compiles them."""
    options = options or TuneOptions()
    tvm_target = resolve_target(target, options.threads)
    _check_tunable(tvm_target)
    return tune_tasks(tasks_of_specs(specs), tvm_target, log_dir, options)
