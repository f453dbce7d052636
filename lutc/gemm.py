"""Compile the LUT kernels of one :class:`~lutc.kernels.KernelSpec` and call them from numpy.

The kernel-level API (:func:`build_lut_gemm`, :class:`LutGemm`) beside :func:`lutc.build`'s
model-level one: it schedules ``lutc.kernels``' PrimFuncs with ``lutc.schedules`` (or a tuning
log's records), compiles them for a target and runs them on this machine or over TVM's RPC.
It sits in the build-and-run layer, above the kernels, schedules, backends and tuning it uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
from tvm.target import Target

from . import backend, schedules
from .errors import TargetError
from .kernels.matmul import lut_matmul
from .kernels.names import MATMUL_KERNEL, PRECOMPUTE_KERNEL
from .kernels.precompute import lut_precompute
from .kernels.spec import KernelSpec
from .quant.layout import PackedWeight, half_scaled
from .remote import is_local, upload
from .runtime import copy_into, huge_page_tensors, set_threads, to_numpy
from .targets import resolve_target
from .tuning.apply import TunedSchedules


@dataclass(frozen=True, eq=False)
class PreparedWeight:
    """A packed weight's arrays on the device, in kernel argument order."""

    data: tvm.runtime.Tensor
    scales: tvm.runtime.Tensor
    offsets: tvm.runtime.Tensor | None
    bias: tvm.runtime.Tensor | None


@dataclass(frozen=True, eq=False)
class Workspace:
    """Device buffers for one call: the input, the tables and the output."""

    x: tvm.runtime.Tensor
    tables: tvm.runtime.Tensor
    lut_scale: tvm.runtime.Tensor
    xsum: tvm.runtime.Tensor
    row_scale: tvm.runtime.Tensor
    y: tvm.runtime.Tensor


def scheduled_module(spec: KernelSpec, target: Target, tuned: TunedSchedules | None = None) -> tvm.IRModule:
    """The precompute and matmul PrimFuncs of ``spec``, scheduled for ``target``.

    ``tuned``: a tuning log's schedules; its record schedules the matmul.
    """
    funcs = {PRECOMPUTE_KERNEL: lut_precompute(spec), MATMUL_KERNEL: lut_matmul(spec)}
    try:
        scheduled = {name: schedules.schedule(func, target, tuned=tuned).mod["main"] for name, func in funcs.items()}
    except NotImplementedError as err:
        raise NotImplementedError(f"format {spec.fmt.name} ({spec.mode} mode) on target {target}: {err}") from None
    return tvm.IRModule({name: func.with_attr("global_symbol", name) for name, func in scheduled.items()})


class LutGemm:
    """``y = x @ W.T (+ bias)`` for one spec, compiled for one target."""

    def __init__(self, spec: KernelSpec, target: Target, module: tvm.runtime.Module, device=None):
        self.spec, self.target, self.module = spec, target, module
        self.tuned = False
        """Whether the matmul runs a schedule from a tuning log."""
        self.device = backend.device_of(target) if device is None else device
        self._on_this_machine = device is None
        self._functions = None

    def _kernels(self):
        """The precompute and matmul functions, looked up on first call: a module built for
        another CPU cannot even be looked into here (:meth:`on` runs it on its device)."""
        if self._functions is None:
            missing = backend.missing_on_host(self.target) if self._on_this_machine else []
            if missing:
                needs = f"kernels built for {backend.level(self.target)} need {', '.join(missing)}"
                raise TargetError(f"{needs}, which this machine lacks; run them on such a device: .on(session)")
            self._functions = (self.module[PRECOMPUTE_KERNEL], self.module[MATMUL_KERNEL])
        return self._functions

    def on(self, session) -> LutGemm:
        """The same kernels on the device of a TVM RPC ``session`` (linked with the target's
        cross compiler and uploaded, :func:`lutc.remote.upload`); call it as this one."""
        gemm = LutGemm(
            self.spec,
            self.target,
            upload(session, self.module, self.target, "lutc_gemm.so"),
            backend.device_of(self.target, session),
        )
        gemm.tuned = self.tuned
        return gemm

    def prepare(self, packed: PackedWeight, bias: np.ndarray | None = None) -> PreparedWeight:
        """Copy a packed weight (and bias) to the device, checking it fits the spec.

        Weights of 2 MiB and more go on transparent huge pages (:func:`lutc.runtime.huge_page_tensors`).
        """
        _check_packed(self.spec, packed)
        packed = half_scaled(packed) if self.spec.half_scales else packed
        bias_tensor = None
        if self.spec.bias:
            bias = _checked_array("bias", bias, (self.spec.n,), np.float32)
            bias_tensor = tvm.runtime.tensor(bias, self.device)
        elif bias is not None:
            raise ValueError("bias given, but the kernel was built with bias=False")
        arrays = [a for a in (packed.data, packed.scales, packed.offsets) if a is not None]
        if is_local(self.device):
            data, scales, *offsets = huge_page_tensors(*arrays)
        else:
            data, scales, *offsets = (tvm.runtime.tensor(np.ascontiguousarray(a), self.device) for a in arrays)
        return PreparedWeight(data, scales, offsets[0] if offsets else None, bias_tensor)

    def workspace(self, rows: int | None = None) -> Workspace:
        """Device buffers for ``rows`` rows (the spec's ``m`` unless it is dynamic)."""
        spec, dev = self.spec, self.device
        m = spec.m if spec.m is not None else rows
        if m is None or (spec.m is not None and rows not in (None, spec.m)):
            raise ValueError(f"workspace rows={rows} do not fit the kernel's m={spec.m}")
        empty = lambda shape, dtype: tvm.runtime.empty(shape, dtype, dev)  # noqa: E731
        return Workspace(
            empty((m, spec.k), "float32"),
            empty((m, spec.table_groups, spec.entries), spec.table_dtype),
            empty((m, spec.n_groups), "float32"),
            empty((m, spec.n_groups), "float32"),
            empty((m,), "float32"),
            empty((m, spec.n), "float32"),
        )

    def precompute(self, ws: Workspace) -> None:
        """Tables, table scales, group sums and row scales of ``ws.x``, into ``ws``."""
        self._kernels()[0](ws.x, ws.tables, ws.lut_scale, ws.xsum, ws.row_scale)

    def run(self, ws: Workspace, weight: PreparedWeight) -> None:
        """Precompute then matmul on device buffers, allocating nothing."""
        self.precompute(ws)
        matmul = self._kernels()[1]
        optional = tuple(t for t in (weight.offsets, weight.bias) if t is not None)
        matmul(ws.tables, ws.lut_scale, ws.xsum, ws.row_scale, weight.data, weight.scales, *optional, ws.y)

    def __call__(self, x: np.ndarray, weight: PreparedWeight) -> np.ndarray:
        """``x`` float32 ``[M, K]`` in, float32 ``[M, N]`` out."""
        rows = self.spec.m if self.spec.m is not None else (x.shape[0] if isinstance(x, np.ndarray) else 0)
        x = _checked_array("x", x, (rows, self.spec.k), np.float32)
        ws = self.workspace(rows)
        copy_into(ws.x, x)
        self.run(ws, weight)
        return to_numpy(ws.y)


def _checked_array(name: str, arr: object, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{name} must be a numpy array of shape {shape} and dtype {np.dtype(dtype)}")
    if arr.shape != shape or arr.dtype != dtype:
        raise ValueError(f"{name} has shape {arr.shape} dtype {arr.dtype}; the kernel takes {shape} {np.dtype(dtype)}")
    return np.ascontiguousarray(arr)


def _check_packed(spec: KernelSpec, packed: PackedWeight) -> None:
    if not isinstance(packed, PackedWeight):
        raise ValueError(f"weight must be a lutc.quant.PackedWeight; got {type(packed).__name__}")
    got = (packed.n, packed.k, packed.fmt, packed.g)
    if got != (spec.n, spec.k, spec.fmt, spec.g):
        raise ValueError(
            f"weight is N={packed.n} K={packed.k} {packed.fmt.name} g={packed.g}; "
            f"the kernel takes N={spec.n} K={spec.k} {spec.fmt.name} g={spec.g}"
        )
    types = spec.weight_types()
    for part, array in (("scales", packed.scales), ("offsets", packed.offsets)):
        if array is not None and not spec.half_scales and array.dtype != np.dtype(types[part][1]):
            raise ValueError(f"weight has {array.dtype} {part} (half_scaled); the kernel was built with "
                             f"half_scales=False and takes {types[part][1]}")  # fmt: skip


def build_lut_gemm(
    spec: KernelSpec,
    target: str | dict | Target = "x86",
    threads: int | None = None,
    tuning_logs: str | Path | None = None,
) -> LutGemm:
    """Schedule and compile the kernels of ``spec`` (a few seconds); ``threads`` sets TVM's pool.

    ``tuning_logs``: a :func:`lutc.tune` directory; without a record for ``spec`` the default
    schedule is used, with a warning. ``LutGemm.tuned`` says which one was.
    """
    tvm_target = resolve_target(target, threads)
    if threads is not None:
        set_threads(threads)
    tuned = None
    if tuning_logs is not None:
        tuned = TunedSchedules(Path(tuning_logs), tvm_target)
    module = tvm.tirx.build(scheduled_module(spec, tvm_target, tuned), target=tvm_target)
    gemm = LutGemm(spec, tvm_target, module)
    if tuned is not None:
        tuned.warn_fallbacks()
        gemm.tuned = bool(tuned.applied)
    return gemm
