"""CUDA schedules of the LUT kernels, checked without a GPU.

Each kernel is scheduled with the rule ``lutc.schedules`` picks for a CUDA target, built to
CUDA C and compiled by nvcc for sm_80 and sm_90; ptxas' report must show no spills, no stack
frame (no per-thread array in local memory), at most 64 registers and static shared memory
within 48 KiB. The numpy emulation at the end checks the index arithmetic of the fast-mode
``prmt`` lookup against the reference plane sums.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import tvm
from lutc.schedules import Knobs, rule_for
from lutc.schedules.cuda import LutMatmulCuda, LutPrecomputeCuda
from lutc.schedules.cuda.base import MAX_REGISTERS, SHARED_BYTES
from lutc.schedules.cuda.lookup_intrin import IDENTITY_SELECTOR, SELECT_HIGH, plane_weights
from tvm.target import Target

from lutc.backend.ptxas import KernelResources, parse_ptxas, ptxas_report
from lutc.bench.gpu_bundle import GRID_CHECKED
from lutc.kernels.matmul import lut_matmul
from lutc.kernels.precompute import FusedNorm, lut_precompute
from lutc.kernels.spec import KernelSpec
from lutc.quant import IntFormat, LutConfig, TernaryFormat, pack, precompute, quantize
from lutc.quant.lut import _plane_sums

TARGET = Target({"kind": "cuda", "arch": "sm_80"}, host="llvm")
ARCHS = ("sm_80", "sm_90")
FORMATS = {
    "w2g32": IntFormat(2, 32),
    "w4g128a": IntFormat(4, 128, symmetric=False),
    "w3g64": IntFormat(3, 64),
    "t2g64": TernaryFormat(64),
    "w8g32a": IntFormat(8, 32, symmetric=False),
}
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) not on PATH")


def _cuda_source(func: tvm.tirx.PrimFunc, rule_type: type) -> str:
    rule = rule_for(func, TARGET)
    assert isinstance(rule, rule_type)
    scheduled = rule.apply(func, TARGET).mod["main"].with_attr("global_symbol", "kernel")
    built = tvm.tirx.build(tvm.IRModule({"kernel": scheduled}), target=TARGET)
    return built.imports[0].inspect_source()


def _check_resources(source: str) -> None:
    for arch in ARCHS:
        kernels = ptxas_report(source, arch)
        for res in kernels.values():
            assert not res.spills, res
            assert res.stack_frame == 0, res
            assert res.registers <= MAX_REGISTERS, res
            assert res.shared_bytes <= SHARED_BYTES, res


@needs_nvcc
@pytest.mark.parametrize("m", [1, 16, None], ids=["m1", "m16", "mdyn"])
@pytest.mark.parametrize("mode", ["fast", "exact"])
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_matmul_compiles_spill_free(fmt, mode, m):
    source = _cuda_source(lut_matmul(KernelSpec(m, 256, 512, fmt, mode)), LutMatmulCuda)
    if mode == "fast":
        assert "__byte_perm" in source and "__dp4a" in source
    _check_resources(source)


def _ptx(source: str, tmp_path) -> str:
    path = tmp_path / "kernel.cu"
    path.write_text(source)
    subprocess.run(["nvcc", "-ptx", "-arch=sm_80", "-o", str(tmp_path / "kernel.ptx"), str(path)], check=True)
    return (tmp_path / "kernel.ptx").read_text()


@needs_nvcc
@pytest.mark.parametrize("half_tables", [False, True], ids=["full", "half"])
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_fast_lookups_reach_dp4a_as_signed_bytes(fmt, half_tables, tmp_path):
    """``__byte_perm`` returns ``unsigned``: uncast, ``__dp4a`` resolves to TVM's mixed
    ``dp4a.u32.s32`` overload and reads the int8 table entries as 0..255 (found by the CPU
    emulator, ``tests/test_cuda_emulated.py``)."""
    ptx = _ptx(_cuda_source(lut_matmul(KernelSpec(1, 256, 512, fmt, "fast", half_tables=half_tables)), LutMatmulCuda),
               tmp_path)  # fmt: skip
    assert "dp4a.s32.s32" in ptx
    assert "dp4a.u32" not in ptx and "dp4a.s32.u32" not in ptx


@needs_nvcc
@pytest.mark.parametrize(
    "spec",
    [
        KernelSpec(1, 4096, 4096, IntFormat(2, 128), "fast"),
        KernelSpec(None, 4096, 4096, IntFormat(4, 128, symmetric=False), "exact"),
        KernelSpec(1, 200, 512, IntFormat(2, 32), "fast", bias=True),  # crop of a padded tile
        KernelSpec(16, 256, 512, IntFormat(2, "channel"), "fast", half_tables=True),  # one group: no K split
        KernelSpec(None, 256, 512, IntFormat(4, 32), "exact", half_tables=True),
    ],
    ids=lambda spec: spec.tag,
)
def test_matmul_shapes_compile_spill_free(spec):
    source = _cuda_source(lut_matmul(spec), LutMatmulCuda)
    if spec.half_tables and spec.mode == "fast":
        assert "__vneg4" in source
    _check_resources(source)


@needs_nvcc
@pytest.mark.parametrize("norm", [None, FusedNorm(1e-6), FusedNorm(1e-5, skip=True)], ids=["plain", "rms", "skip"])
@pytest.mark.parametrize(
    "spec",
    [
        KernelSpec(1, 256, 512, IntFormat(2, 32), "fast"),
        KernelSpec(None, 256, 4096, IntFormat(4, 128, symmetric=False), "exact"),
        KernelSpec(16, 256, 500, IntFormat(2, "channel"), "fast", half_tables=True),  # K padded to 504
        KernelSpec(1, 256, 11008, IntFormat(2, 32), "fast"),  # 344 groups: more than a block's threads
    ],
    ids=lambda spec: spec.tag,
)
def test_precompute_is_one_spill_free_kernel(spec, norm):
    source = _cuda_source(lut_precompute(spec, norm), LutPrecomputeCuda)
    assert "threadIdx.x" in source
    assert len(set(re.findall(r"__global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(", source))) == 1
    _check_resources(source)


def test_cuda_rules_leave_cpu_targets_alone():
    func = lut_matmul(KernelSpec(1, 256, 512, IntFormat(2, 32), "fast"))
    assert not LutMatmulCuda().applies(func, Target("llvm"))
    assert LutMatmulCuda().applies(func, TARGET)
    assert not isinstance(rule_for(func, Target("llvm")), LutMatmulCuda)


PTXAS_OUTPUT = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'kernel_1' for 'sm_80'
ptxas info    : Function properties for kernel_1
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 2560 bytes smem, 400 bytes cmem[0]
ptxas info    : Compiling entry function 'kernel' for 'sm_80'
ptxas info    : Function properties for kernel
    16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 255 registers, used 0 barriers, 392 bytes cmem[0]
"""


def test_parse_ptxas():
    kernels = parse_ptxas(PTXAS_OUTPUT)
    assert kernels["kernel_1"] == KernelResources("kernel_1", "sm_80", 40, 0, 0, 0, 2560)
    assert kernels["kernel"] == KernelResources("kernel", "sm_80", 255, 8, 4, 16, 0)
    assert kernels["kernel"].spills and not kernels["kernel_1"].spills


@needs_nvcc
def test_ptxas_report_names_nvcc_error():
    with pytest.raises(RuntimeError, match="nvcc failed"):
        ptxas_report('extern "C" __global__ void broken() { undeclared_name = 1; }', "sm_80")


# numpy model of the fast-mode micro-kernel (schedules/cuda/lookup_intrin.py)


def _bytes_of(words: np.ndarray) -> np.ndarray:
    return words.astype(np.uint32)[..., None].view(np.uint8)[..., :4]


def byte_perm(x: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """CUDA ``__byte_perm``: result byte ``i`` is byte ``(s >> 4i) & 7`` of ``y:x``."""
    pool = np.concatenate([_bytes_of(x), _bytes_of(y)], axis=-1)
    picks = np.stack([(s >> (4 * i)) & 7 for i in range(4)], axis=-1).astype(np.intp)
    return np.take_along_axis(pool, picks, axis=-1).copy().view(np.uint32)[..., 0]


def dp4a(a: np.ndarray, b: int, c: np.ndarray) -> np.ndarray:
    """CUDA ``__dp4a`` (signed): ``c + sum_i int8(a_i) * int8(b_i)``."""
    weights = np.array([b], np.uint32).view(np.uint8).view(np.int8).astype(np.int32)
    return c + (_bytes_of(a).view(np.int8).astype(np.int32) * weights).sum(-1)


def _emulated_sums(tables: np.ndarray, data: np.ndarray, planes: int, half_tables: bool, group_bytes: int):
    """The micro-kernel's int32 sums ``[N_pad, n_groups]`` for one activation row."""
    tiles, k_bytes = data.shape[:2]
    acc = np.zeros((tiles, 32, k_bytes // group_bytes), np.int32)
    for kb in range(k_bytes):
        for half in (0, 1):
            table = tables[2 * kb + half].astype(np.int8)
            if half_tables:
                table = np.concatenate([table, -table])  # __vneg4 on the two words
            words = table.view(np.uint32)
            for first in range(0, planes, 4):  # one __dp4a per group of four planes
                group = range(first, min(first + 4, planes))
                nibbles = (data[:, kb, group.start : group.stop, :].astype(np.uint32) >> (4 * half)) & 15
                selector = sum(nibbles[:, i] << (4 * i) for i in range(len(group)))
                low = byte_perm(np.full_like(selector, words[0]), np.full_like(selector, words[1]), selector)
                high = byte_perm(np.full_like(selector, words[2]), np.full_like(selector, words[3]), selector)
                looked_up = byte_perm(low, high, IDENTITY_SELECTOR | ((selector & SELECT_HIGH) >> 1))
                acc[:, :, kb // group_bytes] += dp4a(looked_up, plane_weights(len(group)), 0) << first
    return acc.reshape(tiles * 32, -1)


@pytest.mark.parametrize("half_tables", [False, True], ids=["full", "half"])
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_prmt_lookup_matches_reference(fmt, half_tables):
    rng = np.random.default_rng(7)
    n, k = 64, 256
    pw = pack(quantize(rng.standard_normal((n, k)).astype(np.float32), fmt))
    x = rng.standard_normal((2, k)).astype(np.float32)
    tables = precompute(x, pw.group_len, LutConfig(mode="fast", half_tables=half_tables))
    group_bytes = pw.group_len // 8
    for row in range(x.shape[0]):
        emulated = _emulated_sums(tables.values[row], pw.data, fmt.bits, half_tables, group_bytes)
        np.testing.assert_array_equal(emulated, _plane_sums(tables, pw, row))  # integer sums: exact


@needs_nvcc
@pytest.mark.parametrize("spec,knobs", GRID_CHECKED, ids=[f"{s.tag}-{dict(k)}" for s, k in GRID_CHECKED])
def test_grid_knobs_compile_spill_free(spec, knobs):
    """K blocks and several rows a block: the bundle's grid cases fit ptxas' limits on sm_80 and sm_90."""
    rule = rule_for(lut_matmul(spec), TARGET)
    scheduled = rule.apply(lut_matmul(spec), TARGET, Knobs(pinned=knobs)).mod["main"]
    built = tvm.tirx.build(tvm.IRModule({"kernel": scheduled.with_attr("global_symbol", "kernel")}), target=TARGET)
    _check_resources(built.imports[0].inspect_source())
