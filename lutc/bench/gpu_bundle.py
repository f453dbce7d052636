"""Write a GPU check bundle: lutc's CUDA kernels as CUDA C, their launches, and test arrays.

    .venv/bin/python tools/gpu_check/make_bundle.py OUT_DIR [--arch sm_90] [--quick]
    .venv/bin/python -m lutc.bench.gpu_bundle OUT_DIR [--arch sm_90] [--quick]     # the same

For every case the precompute and matmul PrimFuncs are scheduled by ``lutc.schedules`` and
built by ``tvm.tirx.build``; the device module's CUDA source goes to ``sources/``. The launch
sequence is read from TVM's own lowering: the default TIR pipeline is run and the host
function is taken right after ``tirx.SplitHostDevice``, where it is a flat list of
``tirx.call_ffi_kernel(name, *args, *extents)`` calls (:func:`lowered_launches`). Correctness
cases also store ``x``, the packed weight, the numpy reference outputs and the tolerances of
``tests/test_kernels.py`` in ``arrays/<case>.npz``. ``manifest.json`` ties it all together;
``tools/gpu_check/check.py`` runs it on a GPU with CuPy, without TVM.

Package code (tests import it); the GPU-side scripts beside ``tools/gpu_check/make_bundle.py``
(``check.py``, ``emulate.py``) stay standalone files: they run where neither lutc nor TVM is
installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import tvm
from tvm.target import Target

from lutc.kernels import KernelSpec, lut_matmul, lut_precompute
from lutc.kernels.precompute import FusedNorm
from lutc.quant import (
    IntFormat,
    LutConfig,
    TernaryFormat,
    exact_error_bound,
    fast_error_bound,
    half_scaled,
    lut_gemm,
    pack,
    precompute,
    quantize,
    random_weights,
    reference_matmul,
)
from lutc.quant.layout import to_vector_layout
from lutc.relay_passes.vector_weights import vector_spec
from lutc.schedules import Knobs, schedule
from lutc.schedules.cuda import LutMatmulCuda
from lutc.schedules.cuda.base import DEFAULT_CHUNK, DEFAULT_K_SPLIT, DEFAULT_TILES, MAX_THREADS, WARP
from lutc.targets import resolve_target

MANIFEST_VERSION = 1
SPLIT_PASS = "tirx.SplitHostDevice"
"""After this pass the host function calls the device kernels with their launch extents."""
THREAD_TAGS = ("blockIdx.x", "blockIdx.y", "blockIdx.z", "threadIdx.x", "threadIdx.y", "threadIdx.z")
DYN_SHARED_TAG = "tirx.use_dyn_shared_memory"
"""Launch tag whose value (the last launch argument) is the dynamic shared memory in bytes."""
ROLES = {"x": "input", "skip": "input", "weight": "weight", "data": "weight", "scales": "weight",
         "offsets": "weight", "bias": "weight", "y": "output"}  # fmt: skip
"""Roles of the kernels' parameters by name; the others (tables, lut_scale, ...) are ``table``."""
NVRTC_OPTIONS = (
    "--device-int128", "-default-device", "--use_fast_math",
    "-D__NV_SILENCE_DEPRECATION_BEGIN=", "-D__NV_SILENCE_DEPRECATION_END=",
    "-D__NV_SILENCE_HOST_DEPRECATION_BEGIN=", "-D__NV_SILENCE_HOST_DEPRECATION_END=",
    "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
)  # fmt: skip
"""What ``tvm.support.nvcc._compile_cuda_nvrtc`` passes (0.27), less its arch and ptxas flags."""
NVCC_OPTIONS = ("-O3", "--use_fast_math", "--expt-relaxed-constexpr", "-U__CUDA_NO_HALF_OPERATORS__")
"""The matching subset of TVM's nvcc command line."""

CORRECTNESS_FORMATS = (
    IntFormat(2, 32),
    IntFormat(2, 128, symmetric=False),
    IntFormat(3, 64, symmetric=False),
    IntFormat(4, 32),
    IntFormat(4, 128, symmetric=False),
    IntFormat(8, 32, symmetric=False),
    TernaryFormat(64),
)
TABLE_VARIANTS = (("fast", False), ("exact", True), ("exact", False), ("fast", True))
"""(mode, symmetrized tables): ``lutc.build``'s defaults per mode first, then full exact tables
and half int8 tables (``symmetrize="on"``: ``__vneg4``)."""
NORM_EPS = 1e-6
NORM_VARIANTS = (FusedNorm(NORM_EPS), FusedNorm(NORM_EPS, skip=True))
"""Precomputes with an RMSNorm folded in (``LutcFuseNormPrecompute``), w4g32 in both modes."""
CORRECTNESS_ROWS = (1, 16)
CORRECTNESS_NK = (256, 512)
DYNAMIC_ROWS = (1, 3, 16)
TIMING_FORMATS = (IntFormat(2, 32), IntFormat(4, 32))
TIMING_SHAPES = ((4096, 4096), (11008, 4096), (4096, 11008))
TIMING_ROWS = (1, 16)
TIMING_EXTRA = (
    *(KernelSpec(m, 4096, 4096, fmt, mode="fast") for fmt in TIMING_FORMATS for m in (4, 32)),
    *(KernelSpec(1, 4096, 4096, IntFormat(bits, 128), mode="fast") for bits in (2, 4)),
)
"""Also timed at 4096 x 4096: rows that share weight loads at M = 4 and 32, and 128-element groups
(16-byte vector slots per plane) at M = 1."""
SWEEP_SPECS = (
    KernelSpec(1, 4096, 4096, IntFormat(2, 32), mode="fast"),
    KernelSpec(1, 4096, 4096, IntFormat(4, 32), mode="fast"),
    KernelSpec(16, 4096, 4096, IntFormat(2, 32), mode="fast"),
)
"""Timed again with other ``lut_matmul`` knobs (:func:`sweep_knobs`): the defaults are unmeasured."""
SWEEP_CHECKED = (
    KernelSpec(1, 256, 512, IntFormat(2, 32), mode="fast"),
    KernelSpec(16, 256, 512, IntFormat(4, 128, symmetric=False), mode="exact", half_tables=True),
)
"""Checked with the same knob sets, so that what is timed has also been checked."""
GRID_CHECKED = (
    (KernelSpec(1, 256, 512, IntFormat(2, 32), mode="fast"), (("k_blocks", 8), ("k_split", 1))),
    (KernelSpec(1, 250, 512, IntFormat(4, 32), mode="exact"), (("k_blocks", 4), ("k_split", 2))),
    (KernelSpec(2, 256, 512, IntFormat(4, 32), mode="fast"), (("rows", 2),)),
    (KernelSpec(6, 250, 512, TernaryFormat(64), mode="fast"), (("rows", 2),)),
    (KernelSpec(16, 256, 512, IntFormat(2, 32), mode="fast"), (("k_blocks", 2), ("rows", 8))),
    (KernelSpec(16, 256, 512, IntFormat(3, 64, symmetric=False), mode="fast", half_tables=True), (("rows", 8),)),
    (KernelSpec(16, 256, 512, IntFormat(8, 32, symmetric=False), mode="exact"), (("chunk", 2), ("rows", 2))),
    (KernelSpec(32, 256, 512, IntFormat(4, 32), mode="fast"), (("rows", 8),)),
)
"""The grid's other cases: K blocks (with a cropped N), several rows a block (M = 2, 6, 16, 32,
half tables, 3- and 8-bit codes, exact mode's two rows); the defaults (K blocks at M = 1, four
rows at M = 16 in fast mode) are in every correctness case already."""
HALF_CHECKED = (
    KernelSpec(1, 256, 512, IntFormat(4, 32, symmetric=False), mode="fast", half_scales=True),
    KernelSpec(16, 256, 512, IntFormat(2, 32), mode="fast", half_scales=True),
    KernelSpec(1, 250, 512, IntFormat(4, 128, symmetric=False, zero_dtype="float"), mode="fast", half_scales=True),
    KernelSpec(16, 256, 512, TernaryFormat(64), mode="fast", half_scales=True),
)
"""Half scales (float16 scales and offsets, ``half_scales="on"``): symmetric, integer and float
zero points, ternary, M = 1 and 16, a cropped N."""


@dataclass(frozen=True)
class BufferInfo:
    """A buffer the kernels read or write: shape, dtype and what the runner puts in it."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    role: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class KernelArg:
    """One kernel parameter: a buffer's pointer, or a scalar of ``dtype``."""

    buffer: str | None = None
    value: int | float | None = None
    dtype: str = "handle"


@dataclass(frozen=True)
class Launch:
    """One ``__global__`` kernel launch, as the host function makes it."""

    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int
    args: tuple[KernelArg, ...]


@dataclass(frozen=True)
class LoweredModule:
    """A PrimFunc's parameters, the scratch buffers its host code allocates, its launches."""

    params: tuple[BufferInfo, ...]
    scratch: tuple[BufferInfo, ...]
    launches: tuple[Launch, ...]


@dataclass(frozen=True)
class Case:
    """One kernel pair to check (``correctness``) or time (``timing``)."""

    kind: Literal["correctness", "timing"]
    spec: KernelSpec
    norm: FusedNorm | None = None
    """The precompute's fused RMSNorm: its inputs are ``x`` (and ``skip``) and ``weight``."""
    knobs: tuple[tuple[str, int], ...] = ()
    """``lut_matmul``'s pinned structural choices (``tiles``, ``k_split``, ``chunk``, ``k_blocks``,
    ``rows``); the rule's defaults for those not named."""
    rows: int | None = None
    """For a dynamic-M spec (what ``lutc.build`` compiles without ``shapes=``): the M it runs at."""

    def __post_init__(self) -> None:
        if (self.spec.m is None) != (self.rows is not None):
            raise ValueError(f"rows={self.rows} goes with a dynamic-M spec and only with one; spec m={self.spec.m}")

    @property
    def name(self) -> str:
        knobs = "".join(f"_{name}{value}" for name, value in self.knobs)
        rows = f"_at{self.rows}" if self.rows is not None else ""
        return f"{self.kind}_" + (f"{self.norm.tag}_" if self.norm else "") + self.spec.tag + rows + knobs


# ---- launches from TVM's lowering ---------------------------------------------------------


def split_host_device(func: tvm.tirx.PrimFunc, target: Target) -> tvm.IRModule:
    """The module right after ``SplitHostDevice`` in the pipeline ``tvm.tirx.build`` runs."""
    mod = tvm.tirx.transform.BindTarget(target)(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}))
    snapshot: dict[str, tvm.IRModule] = {}

    @tvm.instrument.pass_instrument
    class _Snapshot:
        def run_after_pass(self, mod: tvm.IRModule, info) -> None:
            if info.name == SPLIT_PASS:
                snapshot["mod"] = mod

    pipeline, _, _ = tvm.tirx.get_default_tir_pipeline(target)
    with target, tvm.transform.PassContext(instruments=[_Snapshot()]):
        pipeline(mod)
    if "mod" not in snapshot:
        raise RuntimeError(f"TVM's default TIR pipeline ran no {SPLIT_PASS}")
    return snapshot["mod"]


def _flat_statements(stmt: tvm.tirx.Stmt) -> list[tvm.tirx.Stmt]:
    if isinstance(stmt, tvm.tirx.SeqStmt):
        return [s for part in stmt.seq for s in _flat_statements(part)]
    return [stmt]


class _Values:
    """Shape variables bound to numbers (a dynamic-M kernel's ``m``): extents, shapes and
    scalar arguments become constants for one launch size."""

    def __init__(self, params: list, bound: dict[str, int]) -> None:
        self.analyzer = tvm.sym.Analyzer()
        dims = {d for p in params if hasattr(p, "shape") for d in p.shape if isinstance(d, tvm.tirx.Var)}
        self.bound = [d for d in dims if d.name in bound]
        for var in self.bound:
            self.analyzer.bind(var, tvm.tirx.const(bound[var.name], str(var.ty.dtype)))

    def bind(self, var, expr) -> None:
        value = self.value(expr)
        if not isinstance(value, tvm.tirx.IntImm):
            raise NotImplementedError(f"host binding {var} = {expr} is not a constant for the bound shapes")
        self.analyzer.bind(var, value)
        self.bound.append(var)

    def value(self, expr):
        return self.analyzer.simplify(expr) if self.bound and isinstance(expr, tvm.ir.Expr) else expr

    def int(self, expr, what: str) -> int:
        expr = self.value(expr)
        if not isinstance(expr, tvm.tirx.IntImm):
            raise NotImplementedError(f"{what} is {expr}, not a constant: only static shapes can be bundled")
        return int(expr.value)


def _buffer_info(var, role: str, values: _Values, name: str | None = None) -> BufferInfo:
    shape = tuple(values.int(d, f"a dim of buffer {var.name}") for d in var.shape)
    return BufferInfo(name or str(var.name), shape, str(var.dtype), role)


class _Roots:
    """Resolves the ``buffer_data`` arguments of kernel calls to parameters and allocations."""

    def __init__(self, params: list) -> None:
        self.names: list[tuple[object, str]] = [(p, str(p.name)) for p in params]
        self.views: list[tuple[object, object]] = []

    def add_alloc(self, var, name: str) -> None:
        self.names.append((var, name))

    def add_view(self, decl: tvm.tirx.DeclBuffer) -> None:
        offset = decl.buffer.elem_offset
        if offset is not None and not (isinstance(offset, tvm.tirx.IntImm) and offset.value == 0):
            raise NotImplementedError(f"view {decl.buffer.name} has element offset {offset}")
        self.views.append((decl.buffer, decl.data))

    def name_of(self, expr) -> str:
        if isinstance(expr, tvm.ir.Call) and expr.op.name == "tirx.buffer_data":
            return self.name_of(expr.args[0])
        for var, name in self.names:
            if var.same_as(expr):
                return name
        for var, data in self.views:
            if var.same_as(expr):
                return self.name_of(data)
        raise NotImplementedError(f"kernel argument {expr} is neither a parameter nor a host allocation")


def _launch(call: tvm.tirx.Call, device_params: dict[str, list], roots: _Roots, values: _Values) -> Launch:
    name = str(call.args[0].value)
    tags = [str(t) for t in call.attrs.launch_params]
    params = device_params[name]
    args, extents = list(call.args[1 : 1 + len(params)]), list(call.args[1 + len(params) :])
    if len(extents) != len(tags):
        raise NotImplementedError(f"{name}: launch tags {tags} but {len(extents)} launch values")
    dims = {tag: 1 for tag in THREAD_TAGS}
    shared = 0
    for tag, value in zip(tags, extents, strict=True):
        if tag == DYN_SHARED_TAG:
            shared = values.int(value, f"{name}'s dynamic shared memory")
        elif tag in dims:
            dims[tag] = values.int(value, f"{name}'s {tag} extent")
        else:
            raise NotImplementedError(f"{name}: launch tag {tag} (cooperative/PDL/cluster launches) is not supported")
    kernel_args = tuple(_kernel_arg(arg, param, roots, values) for arg, param in zip(args, params, strict=True))
    grid = tuple(dims[f"blockIdx.{a}"] for a in "xyz")
    block = tuple(dims[f"threadIdx.{a}"] for a in "xyz")
    return Launch(name, grid, block, shared, kernel_args)


def _kernel_arg(arg, param, roots: _Roots, values: _Values) -> KernelArg:
    if isinstance(param.ty, tvm.ir.PointerType):
        return KernelArg(buffer=roots.name_of(arg))
    arg = values.value(arg)
    if isinstance(arg, tvm.tirx.IntImm | tvm.tirx.FloatImm):
        return KernelArg(value=arg.value, dtype=str(param.ty.dtype))
    raise NotImplementedError(f"scalar kernel argument {arg} is not a constant")


def lowered_launches(
    func: tvm.tirx.PrimFunc, target: Target, prefix: str = "", rows: int | None = None
) -> LoweredModule:
    """The launch sequence of ``func`` (scheduled, unbuilt) as TVM's host code makes it.

    Scratch buffers (host-level allocations such as a row maximum) are named ``prefix + name``.
    ``rows``: the value of a dynamic-M kernel's ``m`` for these launches.
    """
    mod = split_host_device(func, target)
    host = mod["main"]
    values = _Values(list(host.params), {} if rows is None else {"m": rows})
    device_params = {gv.name_hint: list(f.params) for gv, f in mod.functions.items() if gv.name_hint != "main"}
    params = tuple(_buffer_info(p, ROLES.get(str(p.name), "table"), values) for p in host.params)
    roots, scratch, launches = _Roots(list(host.params)), [], []
    for stmt in _flat_statements(host.body):
        if isinstance(stmt, tvm.tirx.AllocBuffer):
            scratch.append(_buffer_info(stmt.buffer, "scratch", values, prefix + str(stmt.buffer.name)))
            roots.add_alloc(stmt.buffer, scratch[-1].name)
        elif isinstance(stmt, tvm.tirx.DeclBuffer):
            roots.add_view(stmt)
        elif isinstance(stmt, tvm.tirx.Bind):  # a shape expression of a dynamic kernel (``m * 16``)
            values.bind(stmt.var, stmt.value)
        elif isinstance(stmt, tvm.tirx.Evaluate) and getattr(stmt.value, "op", None) is not None:
            if stmt.value.op.name != "tirx.call_ffi_kernel":
                raise NotImplementedError(f"host statement {stmt.value.op.name} is not a kernel launch")
            launches.append(_launch(stmt.value, device_params, roots, values))
        else:
            raise NotImplementedError(f"host statement {type(stmt).__name__} (control flow around launches)")
    return LoweredModule(params, tuple(scratch), tuple(launches))


def cuda_source(func: tvm.tirx.PrimFunc, target: Target) -> str:
    """CUDA C of the device module ``tvm.tirx.build`` makes for ``func``."""
    built = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)
    (device,) = [m for m in built.imports if m.kind == "cuda"]
    return device.inspect_source()


# ---- cases and arrays ---------------------------------------------------------------------


def correctness_cases() -> list[Case]:
    n, k = CORRECTNESS_NK
    return [
        Case("correctness", KernelSpec(m, n, k, fmt, mode=mode, half_tables=half_tables))
        for fmt in CORRECTNESS_FORMATS
        for mode, half_tables in TABLE_VARIANTS
        for m in CORRECTNESS_ROWS
    ] + [
        Case("correctness", KernelSpec(m, n, k, IntFormat(4, 32), mode=mode, half_tables=mode == "exact"), norm)
        for norm in NORM_VARIANTS
        for mode in ("fast", "exact")
        for m in CORRECTNESS_ROWS
    ]


def timing_cases() -> list[Case]:
    main = [
        KernelSpec(m, n, k, fmt, mode="fast") for fmt in TIMING_FORMATS for n, k in TIMING_SHAPES for m in TIMING_ROWS
    ]
    return [Case("timing", spec) for spec in (*main, *TIMING_EXTRA)]


def sweep_knobs(spec: KernelSpec, target: Target) -> list[tuple[tuple[str, int], ...]]:
    """Every (tiles, k_split) that fits a block at the default chunk, the other chunks at the default
    (tiles, k_split), and at the default (tiles, k_split, chunk) every K block count and every row
    count: the choices :class:`LutMatmulCuda` offers, less the knob sets that schedule its default
    grid. Knobs not named take their defaults (K blocks and rows are recomputed for each set)."""
    rule, func = LutMatmulCuda(), lut_matmul(vector_spec(spec))
    choices = rule.structural_choices(func, target)
    pairs = [(t, k) for t in choices["tiles"] for k in choices["k_split"] if t * k * WARP <= MAX_THREADS]
    base = (("chunk", DEFAULT_CHUNK), ("k_split", DEFAULT_K_SPLIT), ("tiles", DEFAULT_TILES))
    knobs = [(("chunk", DEFAULT_CHUNK), ("k_split", k), ("tiles", t)) for t, k in pairs]
    knobs += [(("chunk", c), ("k_split", DEFAULT_K_SPLIT), ("tiles", DEFAULT_TILES)) for c in choices["chunk"]]
    knobs += [tuple(sorted((*base, ("k_blocks", b)))) for b in choices["k_blocks"]]
    knobs += [tuple(sorted((*base, ("rows", r)))) for r in choices["rows"]]
    default = rule.grid(func, target, Knobs())
    return [k for k in dict.fromkeys(knobs) if rule.grid(func, target, Knobs(pinned=k)) != default]


def dynamic_cases() -> list[Case]:
    """Dynamic-M kernels, the ones models built without ``shapes=`` run, at several M."""
    n, k = CORRECTNESS_NK
    specs = [KernelSpec(None, n, k, IntFormat(2, 32), mode="fast"),
             KernelSpec(None, n, k, IntFormat(4, 128, symmetric=False), mode="exact", half_tables=True),
             KernelSpec(None, n, k, TernaryFormat(64), mode="fast")]  # fmt: skip
    cases = [Case("correctness", spec, rows=rows) for spec in specs for rows in DYNAMIC_ROWS]
    norm_spec = KernelSpec(None, n, k, IntFormat(4, 32), mode="fast")
    return cases + [Case("correctness", norm_spec, NORM_VARIANTS[1], rows=rows) for rows in DYNAMIC_ROWS]


def grid_cases() -> list[Case]:
    return [Case("correctness", spec, knobs=knobs) for spec, knobs in GRID_CHECKED]


def half_cases() -> list[Case]:
    return [Case("correctness", spec) for spec in HALF_CHECKED]


def sweep_cases(target: Target) -> list[Case]:
    checked = [Case("correctness", s, knobs=knobs) for s in SWEEP_CHECKED for knobs in sweep_knobs(s, target)]
    return checked + [Case("timing", s, knobs=knobs) for s in SWEEP_SPECS for knobs in sweep_knobs(s, target)]


def full_cases(target: Target) -> list[Case]:
    """The full bundle's cases, in the order the runner takes them."""
    return [*correctness_cases(), *dynamic_cases(), *grid_cases(), *half_cases(), *timing_cases(),
            *sweep_cases(target)]  # fmt: skip


def quick_cases() -> list[Case]:
    """A handful for tests: both modes, an asymmetric format, one timing shape."""
    n, k = CORRECTNESS_NK
    return [
        Case("correctness", KernelSpec(1, n, k, IntFormat(2, 32), mode="fast")),
        Case("correctness", KernelSpec(16, n, k, IntFormat(4, 128, symmetric=False), mode="exact", half_tables=True)),
        Case("timing", KernelSpec(1, 4096, 4096, IntFormat(2, 32), mode="fast")),
    ]


def correctness_arrays(spec: KernelSpec, seed: int, norm: FusedNorm | None = None) -> dict[str, np.ndarray]:
    """Inputs, the reference outputs and the per-element tolerances of ``tests/test_kernels.py``.

    ``expected`` (the LUT reference of the kernel's own mode) must match within ``atol``, the
    largest exact-mode rounding bound; ``reference`` (``x @ dequantize(W).T``) within
    ``allowed``, that bound per element plus, in fast mode, the table-quantization bound. With
    ``norm``, both are of the normalized rows (float64 RMSNorm of ``x`` or ``x + skip``). With
    half scales the weight is :func:`half_scaled`, and ``reference`` the exact-mode LUT product
    of it (within ``atol`` of ``x`` times that weight, so ``allowed`` adds ``atol`` once more).
    """
    rng = np.random.default_rng(seed)
    qw = quantize(random_weights(rng, spec.n, spec.k), spec.fmt)
    pw = half_scaled(pack(qw)) if spec.half_scales else pack(qw)
    x = rng.standard_normal((spec.m, spec.k)).astype(np.float32)
    inputs = {"x": x}
    if norm is not None:
        inputs["weight"] = rng.standard_normal(spec.k).astype(np.float32)
        if norm.skip:
            inputs["skip"] = rng.standard_normal((spec.m, spec.k)).astype(np.float32)
        x = norm.reference(x + inputs.get("skip", 0), inputs["weight"])
    config = LutConfig(mode=spec.mode, half_tables=spec.half_tables)
    rounding = exact_error_bound(x, pw)
    allowed = rounding
    if spec.mode == "fast":
        allowed = allowed + fast_error_bound(precompute(x, pw.group_len, config, pw.k_pad), pw)
    arrays = {**inputs, "data": pw.data, "scales": pw.scales, "expected": lut_gemm(x, pw, config)}
    if pw.offsets is not None:
        arrays["offsets"] = pw.offsets
    reference = reference_matmul(x, qw, None)
    if spec.half_scales:
        reference, allowed = lut_gemm(x, pw, LutConfig(mode="exact")), allowed + rounding.max()
    arrays.update(reference=reference, allowed=allowed, atol=np.float64(rounding.max()))
    return arrays


# ---- the bundle ---------------------------------------------------------------------------


def _write_source(out: Path, source: str) -> str:
    """Sources are stored once by content (cases share precompute kernels)."""
    path = Path("sources") / f"{hashlib.sha256(source.encode()).hexdigest()[:16]}.cu"
    if not (out / path).exists():
        (out / path).write_text(source)
    return str(path)


def _module_entry(
    name: str, func: tvm.tirx.PrimFunc, target: Target, out: Path, rows: int | None
) -> tuple[dict, LoweredModule]:
    lowered = lowered_launches(func, target, prefix=f"{name}.", rows=rows)
    entry = {"name": name, "source": _write_source(out, cuda_source(func, target)),
             "launches": [asdict(launch) for launch in lowered.launches]}  # fmt: skip
    return entry, lowered


def _buffers(lowered: list[LoweredModule]) -> dict[str, dict]:
    buffers: dict[str, dict] = {}
    for mod in lowered:
        for info in (*mod.params, *mod.scratch):
            entry = {"shape": list(info.shape), "dtype": info.dtype, "role": info.role}
            if buffers.setdefault(info.name, entry) != entry:
                raise ValueError(f"buffer {info.name} differs between the kernels: {buffers[info.name]} / {entry}")
    return buffers


def case_entry(case: Case, target: Target, out: Path, seed: int) -> dict:
    """Build one case's kernels into ``out``; its manifest entry."""
    spec = case.spec
    funcs = {"precompute": lut_precompute(spec, case.norm), "matmul": lut_matmul(vector_spec(spec))}
    knobs = {"precompute": Knobs(), "matmul": Knobs(pinned=case.knobs)}
    modules, lowered = [], []
    for name, func in funcs.items():
        entry, low = _module_entry(name, schedule(func, target, knobs[name]).mod["main"], target, out, case.rows)
        modules.append(entry)
        lowered.append(low)
    buffers = _buffers(lowered)
    weight_bytes = sum(BufferInfo(n, tuple(b["shape"]), b["dtype"], b["role"]).nbytes
                       for n, b in buffers.items() if b["role"] == "weight" and n != "bias")  # fmt: skip
    entry = {"name": case.name, "kind": case.kind, "spec": spec.as_attr(), "format": spec.fmt.name,
             "m": case.rows or spec.m, "dynamic_m": spec.m is None, "n": spec.n, "k": spec.k, "mode": spec.mode,
             "half_tables": spec.half_tables,
             "norm": case.norm.tag if case.norm else None, "knobs": dict(case.knobs),
             "weight_bytes": int(weight_bytes), "buffers": buffers, "modules": modules}  # fmt: skip
    if case.kind == "correctness":
        arrays = correctness_arrays(replace(spec, m=case.rows or spec.m), seed, case.norm)
        arrays["data"] = to_vector_layout(arrays["data"], vector_spec(spec).vector)
        _check_arrays(case.name, arrays, buffers)
        path = Path("arrays") / f"{case.name}.npz"
        np.savez_compressed(out / path, **arrays)
        entry["arrays"] = str(path)
    return entry


def _check_arrays(name: str, arrays: dict[str, np.ndarray], buffers: dict[str, dict]) -> None:
    for key, arr in arrays.items():
        if key in buffers and (list(arr.shape) != buffers[key]["shape"] or str(arr.dtype) != buffers[key]["dtype"]):
            raise ValueError(f"{name}: array {key} is {arr.shape} {arr.dtype}; the kernel takes {buffers[key]}")


def make_bundle(out: Path, arch: str = "sm_90", quick: bool = False, seed: int = 0) -> dict:
    """Write the bundle for ``arch`` into ``out``; the manifest."""
    target = resolve_target(f"cuda-{arch.replace('_', '')}")
    for sub in ("sources", "arrays"):  # a previous bundle's files would travel with this one
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True)
    cases = quick_cases() if quick else full_cases(target)
    entries = []
    for i, case in enumerate(cases):
        start = time.perf_counter()
        entries.append(case_entry(case, target, out, seed + i))
        print(f"[{i + 1}/{len(cases)}] {case.name} ({time.perf_counter() - start:.1f} s)", flush=True)
    manifest = {"version": MANIFEST_VERSION, "arch": arch, "target": str(target), "tvm": tvm.__version__,
                "nvrtc_options": list(NVRTC_OPTIONS), "nvcc_options": list(NVCC_OPTIONS),
                "cases": entries}  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--arch", default="sm_90", help="CUDA architecture, e.g. sm_80 or sm_90")
    parser.add_argument("--quick", action="store_true", help="a handful of cases (tests)")
    args = parser.parse_args(argv)
    manifest = make_bundle(args.out, args.arch, args.quick)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{len(manifest['cases'])} cases, {size / 2**20:.1f} MiB in {args.out}")


if __name__ == "__main__":
    main()
