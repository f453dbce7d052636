"""lutc's compiled LUT GEMM kernels (``lutc.gemm``), fast or exact mode."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import partial
from types import ModuleType
from typing import Literal

import numpy as np

from ...quant.layout import half_scaled
from ...runtime import set_threads
from ..cases import Case, Inputs, Weights, cold_copies
from .base import FP32_TOL, LastBuild, Prepared

FAST_TOL = 2e-2
"""Fast mode rounds each table to int8 with one scale per weight group (``lutc.quant.lut``):
measured 0.7-1.5 % relative norm error on the default grid, highest for w2g128 (as for ORT's
LUT GEMM, 1.53 %); 2 % bounds it while a wrong index or scale layout gives far more."""


def load_kernels() -> ModuleType:
    """``lutc.gemm`` (``KernelSpec``, ``build_lut_gemm``), with a clear message when it cannot be imported."""
    try:
        return importlib.import_module("lutc.gemm")
    except ImportError as err:
        raise RuntimeError(
            f"lutc.gemm cannot be imported ({err}); run the baselines alone with --lutc-modes (no value)"
        ) from err


def _bind(gemm: object, x: np.ndarray) -> tuple[partial, partial]:
    """``(run(weight), read_output())`` on preallocated buffers holding ``x``."""
    if hasattr(gemm, "workspace"):  # run(workspace, weight)
        ws = gemm.workspace(x.shape[0])
        ws.x.copyfrom(x)
        return partial(gemm.run, ws), partial(ws.y.numpy)
    x_dev, out = gemm.input(x), gemm.output()  # run(x_dev, weight, out_dev)
    return partial(gemm.run, x_dev), partial(out.numpy)


@dataclass
class LutcKernels:
    """``build_lut_gemm(KernelSpec(m, n, k, fmt, mode), target, threads)``; bytes = ``pw.nbytes``."""

    mode: Literal["fast", "exact"]
    target: str = "x86"
    tuning_logs: str | None = None
    """A ``lutc.tune`` log directory: schedules from its records (``lutc-fast-tuned``)."""
    comparison: bool = False
    """Built for a comparison target: named ``lutc-<mode>@<target>``."""
    any_rows: bool = False
    """Built for any row count (``m=None``, what a model's prompt runs), timed at the case's M:
    ``lutc-<mode>-any-m``."""
    half_scales: bool = False
    """Float16 scales and offsets (``KernelSpec.half_scales``, what ``lutc.build``'s fast mode
    runs where float16 converts in hardware): ``lutc-<mode>-half-scales``, its own bytes."""
    _built: LastBuild = field(default_factory=LastBuild, repr=False)

    @property
    def name(self) -> str:
        name = f"lutc-{self.mode}" + ("-tuned" if self.tuning_logs is not None else "") + "-any-m" * self.any_rows
        name += "-half-scales" * self.half_scales
        return f"{name}@{self.target}" if self.comparison else name

    @property
    def tolerance(self) -> float:
        return FAST_TOL if self.mode == "fast" else FP32_TOL

    def unsupported(self, case: Case) -> str | None:
        return None

    def prepare(self, case: Case, weights: Weights, inputs: Inputs, cold_bytes: int) -> Prepared:
        kernels = load_kernels()
        rows = None if self.any_rows else case.m
        spec = kernels.KernelSpec(rows, case.n, case.k, case.fmt, self.mode, half_scales=self.half_scales)
        build = partial(
            kernels.build_lut_gemm, spec, target=self.target, threads=case.threads, tuning_logs=self.tuning_logs
        )
        gemm = self._built.get((spec, case.threads), build)
        set_threads(case.threads)  # the build sets it only when it compiles
        packed = half_scaled(weights.packed) if self.half_scales else weights.packed
        copies = [gemm.prepare(packed) for _ in range(cold_copies(packed.nbytes, cold_bytes))]
        run, output = _bind(gemm, inputs.x)
        note = f"target {self.target}"
        if self.tuning_logs is not None:
            note += ", tuned" if gemm.tuned else ", NO tuning record: default schedule"
        return Prepared(tuple(partial(run, wt) for wt in copies), output, packed.nbytes, note)
