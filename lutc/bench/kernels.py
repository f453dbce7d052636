"""The kernel benchmark: every library on every case of the grid, checked, then timed."""

from __future__ import annotations

import gc
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

import numpy as np
from threadpoolctl import threadpool_limits

from ..runtime import set_threads
from .cases import MIB, Case, Inputs, Weights
from .libs.base import Library, Prepared
from .machine import machine_info
from .roofline import Bandwidth, measure_bandwidth
from .timing import Timing, TimingPolicy, time_calls

Status = Literal["ok", "fail", "n/a", "error"]
FLOOR_SIZE = 256
"""K = N of the tiny case whose latency bounds each library's per-call overhead."""


@dataclass(frozen=True)
class Check:
    """Relative norm error ``||y - ref|| / ||ref||`` against ``reference_matmul`` (float64)."""

    rel_err: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.rel_err)) and self.rel_err <= self.tolerance


@dataclass(frozen=True)
class Measurement:
    """One library on one case in one mode; ``timing`` is None unless ``status == "ok"``."""

    library: str
    mode: str
    status: Status
    weight_bytes: int = 0
    copies: int = 0
    check: Check | None = None
    timing: Timing | None = None
    note: str = ""

    @property
    def gbps(self) -> float | None:
        """Weight bytes of the library's own format per second (min latency), GB/s."""
        return self.weight_bytes / self.timing.min_us / 1e3 if self.timing else None


@dataclass(frozen=True)
class CaseResult:
    """Every library's measurements of one case, in both modes."""

    case: Case
    lutc_bytes: int
    """``PackedWeight.nbytes``: the bytes the roofline is computed for."""
    measurements: tuple[Measurement, ...]

    def libraries(self) -> list[str]:
        """The libraries measured, in run order."""
        return list(dict.fromkeys(m.library for m in self.measurements))

    def get(self, library: str, mode: str) -> Measurement | None:
        return next((m for m in self.measurements if m.library == library and m.mode == mode), None)


@dataclass(frozen=True)
class GridConfig:
    """The grid and how each case is run."""

    ms: tuple[int, ...]
    shapes: tuple[tuple[int, int], ...]
    bits: tuple[int, ...]
    blocks: tuple[int, ...]
    threads: tuple[int, ...]
    modes: tuple[str, ...]
    policy: TimingPolicy = field(default_factory=TimingPolicy)
    cold_mib: float = 64.0
    seed: int = 0

    @property
    def cold_bytes(self) -> int:
        return int(self.cold_mib * MIB)

    def size(self) -> int:
        return len(self.ms) * len(self.shapes) * len(self.bits) * len(self.blocks) * len(self.threads)

    def rng(self, *key: int) -> np.random.Generator:
        """A generator seeded by ``seed`` and ``key``: every case's data is the same in any grid."""
        return np.random.default_rng([self.seed, *key])


def iter_cases(config: GridConfig) -> Iterator[tuple[Case, Weights, Inputs]]:
    """The grid, one weight per (shape, bits, block) and one input per M, made as they are reached."""
    for (k, n), bits, block in itertools.product(config.shapes, config.bits, config.blocks):
        weights = Weights.random(k, n, bits, block, config.rng(k, n, bits, block))
        for m in config.ms:
            inputs = Inputs.random(m, weights, config.rng(k, n, bits, block, m))
            for threads in config.threads:
                yield Case(m, k, n, bits, block, threads), weights, inputs


def check_output(prepared: Prepared, inputs: Inputs, tolerance: float) -> Check:
    """Run copy 0 once and compare with the float64 reference."""
    prepared.calls[0]()
    y, ref = np.asarray(prepared.output(), np.float64), inputs.reference
    if y.shape != ref.shape:
        return Check(np.inf, tolerance)
    return Check(float(np.linalg.norm(y - ref) / max(np.linalg.norm(ref), np.finfo(np.float64).tiny)), tolerance)


def measure(lib: Library, case: Case, weights: Weights, inputs: Inputs, mode: str, config: GridConfig) -> Measurement:
    """Prepare ``lib`` for one mode, check its output once, then time it; problems become rows."""
    try:
        prepared = lib.prepare(case, weights, inputs, config.cold_bytes if mode == "cold" else 0)
        with prepared.context():
            check = check_output(prepared, inputs, lib.tolerance)
            done = dict(weight_bytes=prepared.weight_bytes, copies=len(prepared.calls), check=check, note=prepared.note)
            if not check.passed:
                return Measurement(lib.name, mode, "fail", **done)
            return Measurement(lib.name, mode, "ok", timing=time_calls(prepared.calls, config.policy), **done)
    except Exception as err:  # a broken library must not lose the rest of a 40-minute grid
        return Measurement(lib.name, mode, "error", note=f"{type(err).__name__}: {err}")


def run_library(lib: Library, case: Case, weights: Weights, inputs: Inputs, config: GridConfig) -> list[Measurement]:
    """Each mode prepared on its own (hot: one weight copy; cold: enough copies to leave the L3)."""
    reason = lib.unsupported(case)
    if reason:
        return [Measurement(lib.name, mode, "n/a", note=reason) for mode in config.modes]
    results = []
    for mode in config.modes:
        results.append(measure(lib, case, weights, inputs, mode, config))
        gc.collect()  # free the weight copies and sessions (and their thread pools) before going on
    return results


def run_case(libraries: list[Library], case: Case, weights: Weights, inputs: Inputs, config: GridConfig) -> CaseResult:
    measurements = [m for lib in libraries for m in run_library(lib, case, weights, inputs, config)]
    return CaseResult(case, weights.packed.nbytes, tuple(measurements))


def floor_config(config: GridConfig) -> GridConfig:
    """A tiny hot case (M=1, K=N=256, 1 thread) whose latency bounds per-call overhead."""
    bits = 2 if 2 in config.bits else config.bits[0]
    block = min((b for b in config.blocks if FLOOR_SIZE % b == 0), default=32)
    return replace(
        config, ms=(1,), shapes=((FLOOR_SIZE, FLOOR_SIZE),), bits=(bits,), blocks=(block,), threads=(1,), modes=("hot",)
    )


@dataclass(frozen=True)
class KernelsReport:
    """Everything one ``python -m lutc.bench kernels`` run measured."""

    config: GridConfig
    libraries: tuple[str, ...]
    lutc_target: str
    machine: dict
    bandwidth: tuple[Bandwidth, ...]
    floors: CaseResult | None
    cases: tuple[CaseResult, ...]
    seconds: float


class Progress(Protocol):
    """Where the run reports what it is doing."""

    def status(self, text: str) -> None: ...

    def case_done(self, result: CaseResult) -> None: ...


@dataclass(frozen=True)
class RunOptions:
    """What to run besides the grid: libraries, bandwidth buffer sizes, overhead floors."""

    libraries: tuple[Library, ...]
    lutc_target: str = "x86"
    bandwidth_mib: tuple[float, float] = (256.0, 4.0)
    floors: bool = True


def _bandwidth(config: GridConfig, options: RunOptions) -> list[Bandwidth]:
    return measure_bandwidth(list(config.threads), *options.bandwidth_mib, config.policy)


def run_kernels(config: GridConfig, options: RunOptions, progress: Progress) -> KernelsReport:
    """Bandwidth, overhead floors, the grid, bandwidth again; BLAS gets 1 thread outside numpy's timing."""
    began = time.perf_counter()
    set_threads(max(config.threads))  # raises TVM_NUM_THREADS before TVM's pool starts
    libraries = list(options.libraries)
    with threadpool_limits(limits=1, user_api="blas"):
        progress.status("measuring read bandwidth")
        bandwidth = _bandwidth(config, options)
        floors = None
        if options.floors:
            progress.status("measuring per-call overhead floors")
            tiny = floor_config(config)
            floors = run_case(libraries, *next(iter_cases(tiny)), tiny)
        cases = []
        for case, weights, inputs in iter_cases(config):
            progress.status(f"running {case.label}")
            cases.append(run_case(libraries, case, weights, inputs, config))
            progress.case_done(cases[-1])
        progress.status("measuring read bandwidth again")
        bandwidth += _bandwidth(config, options)
    names = tuple(lib.name for lib in libraries)
    elapsed = time.perf_counter() - began
    return KernelsReport(
        config, names, options.lutc_target, machine_info(), tuple(bandwidth), floors, tuple(cases), elapsed
    )
