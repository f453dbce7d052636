"""Tune a list of kernel specs into a tuning log (a model's kernels: :func:`lutc.tune`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tvm.target import Target

from ..backend import backend_of, level
from ..kernels.spec import KernelSpec
from ..targets import resolve_target
from .tasks import tasks_of_specs
from .tuner import TaskResult, TuneOptions, tune_tasks


def check_tunable(target: Target) -> None:
    """``NotImplementedError`` for a target lutc cannot tune (its backend's ``CAN_TUNE``)."""
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
    """Tune ``lut_matmul`` for kernel specs, as :func:`lutc.gemm.build_lut_gemm` compiles them."""
    options = options or TuneOptions()
    tvm_target = resolve_target(target, options.threads)
    check_tunable(tvm_target)
    return tune_tasks(tasks_of_specs(specs), tvm_target, log_dir, options)
