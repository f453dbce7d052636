"""Tuning tasks: the distinct ``lut_matmul`` workloads of a model or of a list of kernel specs.

A workload is the unscheduled kernel as ``IRModule({"main": func})``, the form meta_schedule
stores. Kernels built for any number of rows are tuned, and looked up, at a fixed row count
(:data:`TUNING_ROWS`): meta_schedule measures concrete shapes, and the schedule's trace replays
on the dynamic kernel because it never splits the row loop. Their workload keeps their folded
epilogue (``lutc.kernels.matmul.folds_epilogue``), so it is not the static decode kernel's: a
dynamic-row kernel has a record of its own, named ``M=any``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import relax, tirx

from ..kernels.matmul import folds_epilogue, lut_matmul
from ..kernels.names import FOLDED_ATTR, MATMUL_KERNEL, SPEC_ATTR, kernel_of
from ..kernels.spec import KernelSpec
from ..relay_passes.calls import CALL_TIR

TUNING_ROWS = 1
"""Rows a dynamic-row kernel is timed at while tuning: one token, the step that dominates LLM serving."""


@dataclass(frozen=True, eq=False)
class TuneTask:
    """One distinct workload and how many kernels of the model share it."""

    name: str
    workload: tvm.IRModule
    weight: int = 1


def kernel_spec(func: tirx.PrimFunc) -> KernelSpec:
    """The spec a ``lut_matmul`` PrimFunc was built from."""
    return KernelSpec.from_attr(func.attrs[SPEC_ATTR])


def workload_of(func: tirx.PrimFunc) -> tvm.IRModule:
    """The tuning workload of a ``lut_matmul`` kernel, rebuilt unscheduled as today's lutc builds
    it; dynamic rows fixed to :data:`TUNING_ROWS` with the dynamic kernel's epilogue (a workload
    that is such a stand-in says so in ``lutc.folded_epilogue``)."""
    spec = kernel_spec(func)
    folded = folds_epilogue(spec) or bool(func.attrs.get(FOLDED_ATTR, False))
    if spec.m is None:
        spec = dataclasses.replace(spec, m=TUNING_ROWS)
    return tvm.IRModule({"main": lut_matmul(spec, folded).with_attr("global_symbol", "main")})


def is_tunable(func) -> bool:
    """``lut_matmul`` kernels carry the knobs; the precompute has none."""
    return kernel_of(func) == MATMUL_KERNEL and func.attrs is not None and SPEC_ATTR in func.attrs


def task_name(spec: KernelSpec) -> str:
    """How reports name a kernel's task: format, mode, extras, rows (``any``: dynamic), N x K."""
    rows = "any" if spec.m is None else spec.m
    extras = " half-tables" * spec.half_tables + " half-scales" * spec.half_scales + " +bias" * spec.bias
    return f"{spec.fmt.name} {spec.mode}{extras} M={rows} {spec.n}x{spec.k}"


def task_name_of(func: tirx.PrimFunc) -> str:
    """:func:`task_name` of a kernel or of its workload (a folded one-row workload stands for dynamic rows)."""
    spec = kernel_spec(func)
    stand_in = bool(func.attrs.get(FOLDED_ATTR, False)) and not folds_epilogue(spec)
    return task_name(dataclasses.replace(spec, m=None) if stand_in else spec)


def dedup_tasks(funcs: Iterable[tuple[tirx.PrimFunc, int]]) -> list[TuneTask]:
    """One task per structurally distinct workload, weighted by how often it is called."""
    tasks: list[TuneTask] = []
    for func, calls in funcs:
        workload = workload_of(func)
        same = next((i for i, t in enumerate(tasks) if tvm_ffi.structural_equal(t.workload, workload)), None)
        if same is None:
            tasks.append(TuneTask(task_name_of(func), workload, calls))
        else:
            tasks[same] = dataclasses.replace(tasks[same], weight=tasks[same].weight + calls)
    return tasks


def call_counts(mod: tvm.IRModule) -> Counter[str]:
    """How many ``call_tir`` sites each PrimFunc of ``mod`` has, by name."""
    counts: Counter[str] = Counter()

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and expr.op == CALL_TIR:
            counts[expr.args[0].name_hint] += 1

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return counts


def tasks_of_module(mod: tvm.IRModule) -> list[TuneTask]:
    """The tasks of a module after lutc's LUT passes (kernels are its tunable PrimFuncs)."""
    calls = call_counts(mod)
    return dedup_tasks((func, calls[gvar.name_hint]) for gvar, func in mod.functions_items() if is_tunable(func))


def tasks_of_specs(specs: Iterable[KernelSpec]) -> list[TuneTask]:
    """The tasks of kernel specs, as :func:`lutc.gemm.build_lut_gemm` compiles them."""
    return dedup_tasks((lut_matmul(spec), 1) for spec in specs)
