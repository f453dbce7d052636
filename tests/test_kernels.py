"""Compiled LUT kernels against the numpy reference, on x86 (AVX-512, AVX2) and the portable target."""

from __future__ import annotations

import numpy as np
import pytest
import tvm.testing
from conftest import random_weights

from lutc.gemm import LutGemm, build_lut_gemm
from lutc.kernels import KernelSpec
from lutc.quant import (
    IntFormat,
    LutConfig,
    TernaryFormat,
    exact_error_bound,
    fast_error_bound,
    lut_gemm,
    pack,
    precompute,
    quantize,
    reference_matmul,
)
from lutc.targets import missing_on_host, resolve_target

AVX512_MISSING = missing_on_host(resolve_target("x86-avx512"))
needs_avx512 = pytest.mark.skipif(bool(AVX512_MISSING), reason=f"this CPU lacks {', '.join(AVX512_MISSING)}")
X86_TARGETS = ["x86-avx2", pytest.param("x86-avx512", marks=needs_avx512)]
"""Both x86 micro-kernels are tested wherever the CPU runs them (``x86`` picks just one)."""

FORMATS = [
    IntFormat(1, 32, symmetric=False, zero_dtype="float"),
    IntFormat(2, 128),
    IntFormat(2, 32, symmetric=False),
    IntFormat(3, 64, symmetric=False),
    IntFormat(4, 128, symmetric=False, zero_dtype="float", scale_dtype="float16"),
    IntFormat(4, "channel"),
    IntFormat(5, 32, symmetric=False),
    IntFormat(8, 32),
    IntFormat(8, 128, symmetric=False),
    TernaryFormat("tensor"),
    TernaryFormat(64),
]


def _run(spec: KernelSpec, target: str = "x86", seed: int = 0):
    rng = np.random.default_rng(seed)
    qw = quantize(random_weights(rng, spec.n, spec.k), spec.fmt)
    pw = pack(qw)
    x = rng.standard_normal((spec.m, spec.k)).astype(np.float32)
    bias = rng.standard_normal(spec.n).astype(np.float32) if spec.bias else None
    gemm = build_lut_gemm(spec, target)
    return gemm, gemm(x, gemm.prepare(pw, bias)), x, qw, pw, bias


def _check(spec: KernelSpec, y, x, qw, pw, bias) -> None:
    """Both modes: within the documented bound of the real product. Then, tighter: the kernel
    equals the numpy reference of its own mode up to float32 rounding of the epilogue (the
    fast mode's integer sums are exact, so only the float steps can differ)."""
    config = LutConfig(mode=spec.mode, half_tables=spec.half_tables)
    rounding = exact_error_bound(x, pw) + (0 if bias is None else np.abs(bias) * np.finfo(np.float32).eps)
    assert y.shape == (spec.m, spec.n) and y.dtype == np.float32
    tvm.testing.assert_allclose(y, lut_gemm(x, pw, config, bias), rtol=0, atol=float(rounding.max()))
    allowed = rounding
    if spec.mode == "fast":
        allowed = allowed + fast_error_bound(precompute(x, pw.group_len, config, pw.k_pad), pw)
    assert np.all(np.abs(y - reference_matmul(x, qw, bias)) <= allowed)


@pytest.mark.parametrize("target", X86_TARGETS)
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_every_format_and_mode_matches_the_reference(fmt, mode, target):
    spec = KernelSpec(3, 72, 256, fmt, mode=mode, bias=True)
    _, y, *rest = _run(spec, target)
    _check(spec, y, *rest)


@pytest.mark.parametrize("target", X86_TARGETS)
@pytest.mark.parametrize("half_tables", [False, True])
@pytest.mark.parametrize("mode", ["fast", "exact"])
@pytest.mark.parametrize("m", [1, 3, 16])
def test_symmetrization_and_batch_sizes(half_tables, mode, m, target):
    spec = KernelSpec(m, 40, 512, IntFormat(2, 64, symmetric=False), mode=mode, half_tables=half_tables)
    _, y, *rest = _run(spec, target, seed=m)
    _check(spec, y, *rest)


@pytest.mark.parametrize("target", X86_TARGETS)
@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_llama_mlp_shape_k11008(mode, target):
    """K = 11008 (a Llama-7B down projection), N not a multiple of 32, M = 3."""
    spec = KernelSpec(3, 45, 11008, IntFormat(4, 128), mode=mode)
    _, y, *rest = _run(spec, target)
    _check(spec, y, *rest)


@pytest.mark.parametrize("target", X86_TARGETS)
@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_bias_when_n_is_whole_tiles(mode, target):
    """N = 96 (no crop block): the bias was once dropped here (TVM 0.27 loses ``te.sum``'s init)."""
    spec = KernelSpec(2, 96, 128, IntFormat(2, 32), mode=mode, bias=True)
    _, y, *rest = _run(spec, target)
    _check(spec, y, *rest)


@pytest.mark.parametrize("target", X86_TARGETS)
def test_per_channel_with_k_not_a_multiple_of_eight(target):
    spec = KernelSpec(2, 33, 250, IntFormat(3, "channel", symmetric=False), mode="fast")
    _, y, *rest = _run(spec, target)
    _check(spec, y, *rest)


@needs_avx512
@pytest.mark.parametrize("fmt", [*FORMATS, IntFormat(3, 16), IntFormat(4, 16), IntFormat(1, 16)], ids=lambda f: f.name)
@pytest.mark.parametrize("half_tables", [False, True])
@pytest.mark.parametrize("m", [1, 5])
def test_avx512_fast_sums_equal_avx2_bit_for_bit(fmt, half_tables, m):
    """Same integer sums, same float epilogue: the outputs are equal, not just close. Small
    groups (16 elements) leave odd plane counts no AVX-512 chunk; they fall back to AVX2."""
    spec = KernelSpec(m, 72, 256, fmt, mode="fast", half_tables=half_tables)
    _, avx512, *_ = _run(spec, "x86-avx512", seed=m)
    _, avx2, *_ = _run(spec, "x86-avx2", seed=m)
    np.testing.assert_array_equal(avx512, avx2)


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_precompute_tables_equal_the_reference_bit_for_bit(mode):
    spec = KernelSpec(2, 32, 256, IntFormat(2, 64), mode=mode, half_tables=mode == "exact")
    gemm, _, x, _, pw, _ = _run(spec)
    ws = gemm.workspace()
    ws.x.copyfrom(x)
    gemm.precompute(ws)
    reference = precompute(x, pw.group_len, LutConfig(mode=mode, half_tables=spec.half_tables))
    np.testing.assert_array_equal(ws.tables.numpy(), reference.values)
    np.testing.assert_array_equal(ws.lut_scale.numpy(), reference.lut_scale)
    np.testing.assert_array_equal(ws.row_scale.numpy(), reference.row_scale)


@pytest.mark.parametrize(
    ("mode", "instructions"),
    [("fast", (("vpshufb",), ("vpmaddubsw",))), ("exact", (("vpermps", "vpermd"), ("vblendvps",)))],
)
def test_x86_kernels_use_avx2_lookups(mode, instructions):
    """The whole module's assembly: the parallel body is compiled into its own function.

    LLVM may emit ``vpermd`` for ``vpermps``: the same lane permutation.
    """
    gemm, *_ = _run(KernelSpec(1, 64, 256, IntFormat(2, 128), mode=mode), "x86-avx2")
    assembly = gemm.module.inspect_source("asm")
    for alternatives in instructions:
        assert any(instruction in assembly for instruction in alternatives), alternatives


TWO_REGISTER_BYTES = ("vpermt2b", "vpermi2b")


@pytest.mark.parametrize(
    ("fmt", "mode", "instructions", "absent"),
    [
        (IntFormat(2, 128), "fast", [("vpermb",), ("vpdpbusd",), TWO_REGISTER_BYTES], ("vpshufb", "vpmaddubsw")),
        (IntFormat(3, 128), "fast", [("vpdpbusd",), TWO_REGISTER_BYTES], ("vpermb", "vpshufb", "vpmaddubsw")),
        (IntFormat(2, 128), "exact", [("vpermps", "vpermd")], ("vblendvps",)),
    ],
)
def test_avx512_kernels_use_vbmi_and_vnni(fmt, mode, instructions, absent):
    """Compiling for AVX-512 needs no AVX-512 CPU: the instructions are checked everywhere.

    Even plane counts look up with one-register ``vpermb``, odd ones with a register pair;
    ``vpermt2b`` / ``vpermi2b`` are the same permutation (LLVM picks by which operand it
    overwrites), as ``vpermd`` is ``vpermps``'s.
    """
    gemm = build_lut_gemm(KernelSpec(1, 64, 256, fmt, mode=mode), "x86-avx512")
    lines = gemm.module.inspect_source("asm").splitlines()
    used = {line.split()[0] for line in lines if line.startswith("\tv")}
    for alternatives in instructions:
        assert used & set(alternatives), alternatives
    assert not used & set(absent)
    assert "zmm" in "\n".join(lines)


@pytest.mark.parametrize("bits", [3, 8])
@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_portable_target_is_correct_without_avx2(mode, bits):
    spec = KernelSpec(3, 40, 256, IntFormat(bits, 32, symmetric=False), mode=mode, half_tables=True)
    gemm, y, *rest = _run(spec, target="llvm")
    _check(spec, y, *rest)
    assert "vpshufb" not in gemm.module.inspect_source("asm")


def test_threads_do_not_change_results():
    spec = KernelSpec(1, 96, 256, IntFormat(2, 32))
    rng = np.random.default_rng(0)
    pw = pack(quantize(random_weights(rng, 96, 256), spec.fmt))
    x = rng.standard_normal((1, 256)).astype(np.float32)
    one = build_lut_gemm(spec, threads=1)
    y1 = one(x, one.prepare(pw))
    two = build_lut_gemm(spec, threads=2)
    np.testing.assert_array_equal(two(x, two.prepare(pw)), y1)


# ---- bad input ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_gemm():
    spec = KernelSpec(2, 40, 64, IntFormat(2, 32), bias=True)
    pw = pack(quantize(random_weights(np.random.default_rng(0), 40, 64), spec.fmt))
    gemm = build_lut_gemm(spec)
    return gemm, pw


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((2, 65), np.float32), r"x has shape \(2, 65\) dtype float32; the kernel takes \(2, 64\)"),
        (np.zeros((2, 64), np.float64), "x has shape .* dtype float64"),
        ([[0.0] * 64] * 2, "x must be a numpy array"),
    ],
)
def test_wrong_input_is_named(small_gemm, x, message):
    gemm, pw = small_gemm
    weight = gemm.prepare(pw, np.zeros(40, np.float32))
    with pytest.raises(ValueError, match=message):
        gemm(x, weight)


def test_wrong_weight_or_bias_is_named(small_gemm):
    gemm, pw = small_gemm
    other = pack(quantize(random_weights(np.random.default_rng(1), 40, 64), IntFormat(4, 32)))
    with pytest.raises(ValueError, match="weight is N=40 K=64 w4g32"):
        gemm.prepare(other, np.zeros(40, np.float32))
    with pytest.raises(ValueError, match="bias must be a numpy array"):
        gemm.prepare(pw)
    with pytest.raises(ValueError, match=r"bias has shape \(39,\)"):
        gemm.prepare(pw, np.zeros(39, np.float32))


def test_unsupported_group_width_raises_not_implemented():
    with pytest.raises(NotImplementedError, match="g=2"):
        KernelSpec(1, 32, 64, IntFormat(2, 32), g=2)


def test_target_without_a_rule_names_format_and_target():
    spec = KernelSpec(1, 32, 64, IntFormat(2, 32))
    with pytest.raises(NotImplementedError, match=r"w2g32.*opencl"):
        build_lut_gemm(spec, {"kind": "opencl"})


def test_cuda_kernels_build_here_and_refuse_to_run_without_a_gpu():
    import tvm

    from lutc.backend import cuda
    from lutc.errors import TargetError

    gemm = build_lut_gemm(KernelSpec(1, 32, 64, IntFormat(2, 32)), "cuda-sm90")
    assert gemm.device.dlpack_device_type() == tvm.cuda().dlpack_device_type()
    if cuda.missing_on_host(gemm.target):
        with pytest.raises(TargetError, match="NVIDIA GPU"):
            gemm._kernels()


def test_unknown_target_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="x86-avx2"):
        build_lut_gemm(KernelSpec(1, 32, 64, IntFormat(2, 32)), "x87")


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_sampled_schedules_are_correct(seed):
    """Tuning samples every decision at random; each sample must still compute the same thing."""
    import tvm
    from lutc.schedules import RULES, Knobs
    from tvm import s_tir

    from lutc.kernels import lut_matmul, lut_precompute
    from lutc.targets import resolve_target

    spec = KernelSpec(3, 96, 256, IntFormat(2, 64, symmetric=False), mode="fast")
    target = resolve_target("x86")
    funcs = {"lut_precompute": lut_precompute(spec), "lut_matmul": lut_matmul(spec)}
    scheduled = {}
    for name, func in funcs.items():
        sch = s_tir.Schedule(func, seed=seed)
        rule = next(r for r in RULES if r.kernel == name and r.is_target_available(target))
        rule.schedule(sch, func, target, Knobs(tunable=True))
        scheduled[name] = sch.mod["main"].with_attr("global_symbol", name)
    gemm = LutGemm(spec, target, tvm.tirx.build(tvm.IRModule(scheduled), target=target))
    rng = np.random.default_rng(seed)
    pw = pack(quantize(random_weights(rng, spec.n, spec.k), spec.fmt))
    x = rng.standard_normal((spec.m, spec.k)).astype(np.float32)
    expected = lut_gemm(x, pw, LutConfig(mode="fast"))
    tvm.testing.assert_allclose(gemm(x, gemm.prepare(pw)), expected, rtol=0, atol=float(exact_error_bound(x, pw).max()))


def test_dynamic_row_count_kernels():
    spec = KernelSpec(None, 40, 256, IntFormat(2, 64, symmetric=False))
    gemm = build_lut_gemm(spec)
    rng = np.random.default_rng(5)
    pw = pack(quantize(random_weights(rng, spec.n, spec.k), spec.fmt))
    weight = gemm.prepare(pw)
    for rows in (1, 3, 17):
        x = rng.standard_normal((rows, spec.k)).astype(np.float32)
        tvm.testing.assert_allclose(
            gemm(x, weight), lut_gemm(x, pw, LutConfig(mode="fast")), rtol=0, atol=float(exact_error_bound(x, pw).max())
        )


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_rows_inside_groups_match_the_reference_for_every_row_count(fmt, mode):
    """The AVX2 loop order of every M but 1 (rows inside groups): a dynamic M run with 1, 2 and 33
    rows and a static M = 33, every format and mode, within the float32 rounding of the reference."""
    rng = np.random.default_rng(33)
    pw = pack(quantize(random_weights(rng, 72, 256), fmt))
    dynamic, static = (build_lut_gemm(KernelSpec(m, 72, 256, fmt, mode=mode), "x86-avx2") for m in (None, 33))
    config = LutConfig(mode=mode)
    for gemm, rows in [(dynamic, 1), (dynamic, 2), (dynamic, 33), (static, 33)]:
        x = rng.standard_normal((rows, 256)).astype(np.float32)
        bound = float(exact_error_bound(x, pw).max())
        tvm.testing.assert_allclose(gemm(x, gemm.prepare(pw)), lut_gemm(x, pw, config), rtol=0, atol=bound)


def _extreme_rows(rng: np.random.Generator, k: int) -> np.ndarray:
    """One row ``v`` (max ``|v|`` = 1) scaled to 1e-42, 1e-38, 1 and 1e30; then ``v`` with one
    group at 1e-40, and a sparse row at 3e38 (two entries, so ``x @ W.T`` stays finite, as
    ONNX Runtime's result does)."""
    v = rng.standard_normal(k)
    v /= np.abs(v).max()
    mixed, sparse = v.copy(), np.zeros(k)
    mixed[64:128] *= 1e-40
    sparse[:2] = v[:2] / np.abs(v[:2]).max()
    rows = [v * 1e-42, v * 1e-38, v, v * 1e30, mixed, sparse * 3e38]
    return np.array(rows).astype(np.float32)


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_subnormal_and_near_overflow_rows_stay_accurate(mode):
    """Every row is within the documented bounds of the float64 product (plus the rounding
    of a subnormal result, one subnormal step per group), and the scaled copies of ``v`` are
    as accurate as ``v`` itself: the same relative error, up to that output rounding (which
    is what limits the 1e-42 row: its outputs are a few hundred subnormal steps)."""
    spec = KernelSpec(6, 64, 256, IntFormat(4, 64, symmetric=False), mode=mode)
    rng = np.random.default_rng(3)
    qw = quantize(random_weights(rng, spec.n, spec.k) * np.float32(1e-2), spec.fmt)
    pw, x = pack(qw), _extreme_rows(rng, spec.k)
    gemm = build_lut_gemm(spec, "x86")
    y = gemm(x, gemm.prepare(pw))
    config = LutConfig(mode=mode)
    tables = precompute(x, pw.group_len, config, pw.k_pad)
    subnormal_rounding = (spec.n_groups + 1) * 2.0**-149
    allowed = exact_error_bound(x, pw) + subnormal_rounding
    if mode == "fast":
        allowed = allowed + fast_error_bound(tables, pw)
    reference = reference_matmul(x, qw)
    assert np.all(np.isfinite(y))
    assert np.all(np.abs(y - reference) <= allowed)
    error, largest = np.abs(y - reference).max(axis=1), np.abs(reference).max(axis=1)
    relative = max(1.1 * error[2] / largest[2], 1e-5)  # 1e-5: float32 rounding of x itself differs per copy
    for row in (0, 1, 3):
        assert error[row] <= relative * largest[row] + subnormal_rounding, (row, error[row] / largest[row], relative)
    np.testing.assert_array_equal(tables.row_scale, np.float32([2.0**-100, 2.0**-100, 1, 2.0**64, 1, 2.0**64]))


def test_precompute_of_extreme_rows_equals_the_reference_bit_for_bit():
    spec = KernelSpec(6, 32, 256, IntFormat(2, 64), mode="fast")
    x = _extreme_rows(np.random.default_rng(4), spec.k)
    gemm = build_lut_gemm(spec, "x86")
    ws = gemm.workspace()
    ws.x.copyfrom(x)
    gemm.precompute(ws)
    reference = precompute(x, spec.group_len, LutConfig(mode="fast"))
    for name in ("tables", "lut_scale", "row_scale"):
        expected = reference.values if name == "tables" else getattr(reference, name)
        np.testing.assert_array_equal(getattr(ws, name).numpy(), expected, err_msg=name)
    scaled = np.abs(x.astype(np.float64) / reference.row_scale[:, None]).reshape(6, -1, spec.group_len)
    summation_order = 64 * np.finfo(np.float32).eps * scaled.sum(-1)  # the kernel sums in another order
    assert np.all(np.abs(ws.xsum.numpy() - reference.xsum) <= summation_order)


def _pinned_gemm(spec: KernelSpec, target_name: str, pinned: tuple[tuple[str, int], ...]) -> LutGemm:
    """The kernel pair with the matmul's structural choices pinned (as a tuning design space)."""
    import tvm
    from lutc.schedules import Knobs, rule_for, schedule

    from lutc.kernels import lut_matmul, lut_precompute

    target = resolve_target(target_name)
    matmul = lut_matmul(spec)
    mods = {
        "lut_precompute": schedule(lut_precompute(spec), target),
        "lut_matmul": rule_for(matmul, target).apply(matmul, target, Knobs(pinned=pinned)),
    }
    funcs = {name: sch.mod["main"].with_attr("global_symbol", name) for name, sch in mods.items()}
    return LutGemm(spec, target, tvm.tirx.build(tvm.IRModule(funcs), target=target))


@needs_avx512
@pytest.mark.parametrize(
    "fmt",
    [IntFormat(2, 128), IntFormat(3, 64, symmetric=False), IntFormat(4, 32), TernaryFormat(64)],
    ids=lambda f: f.name,
)
@pytest.mark.parametrize(("m", "rows"), [(2, 2), (4, 4), (8, 2), (16, 4)])
@pytest.mark.parametrize("m_inner", [0, 1])
def test_avx512_kernels_of_several_rows_equal_one_row_kernels(fmt, m, rows, m_inner):
    """A static M takes 2 or 4 rows per micro-kernel call (one weight load for all): the same
    integer sums, so the same outputs as the one-row kernel, bit for bit, in either loop order."""
    spec = KernelSpec(m, 72, 256, fmt, mode="fast", half_tables=m_inner == 1)
    rng = np.random.default_rng(m)
    pw = pack(quantize(random_weights(rng, spec.n, spec.k), spec.fmt))
    x = rng.standard_normal((m, spec.k)).astype(np.float32)
    several = _pinned_gemm(spec, "x86-avx512", (("rows", rows), ("m_inner", m_inner)))
    one = _pinned_gemm(spec, "x86-avx512", (("rows", 1), ("m_inner", m_inner)))
    np.testing.assert_array_equal(several(x, several.prepare(pw)), one(x, one.prepare(pw)))
    tvm.testing.assert_allclose(
        several(x, several.prepare(pw)),
        lut_gemm(x, pw, LutConfig(mode="fast", half_tables=spec.half_tables)),
        rtol=0,
        atol=float(exact_error_bound(x, pw).max()),
    )


@pytest.mark.parametrize(("m", "prefetches"), [(1, True), (None, True), (16, False)])
def test_avx512_kernels_prefetch_the_weight_stream_when_rows_run_outside_groups(m, prefetches):
    """Rows outside groups (M = 1, dynamic M) stream each weight byte once per row: prefetched
    1 KiB ahead. A static M > 1 runs rows inside groups, where the bytes stay in L1."""
    gemm = build_lut_gemm(KernelSpec(m, 64, 512, IntFormat(2, 128)), "x86-avx512")
    assert ("prefetcht0" in gemm.module.inspect_source("asm")) == prefetches


@pytest.mark.parametrize(("m", "rows_inside"), [(1, False), (None, True), (16, True)])
@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_avx2_kernels_run_rows_inside_groups_unless_m_is_one(m, rows_inside, mode):
    """The AVX2 loop order by M: the decode step (M = 1) streams each group once, prefetched;
    prompts (dynamic M) and static M > 1 run every row over a group while it sits in L1."""
    from lutc.schedules import rule_for

    from lutc.kernels import lut_matmul

    spec = KernelSpec(m, 64, 512, IntFormat(2, 128), mode=mode)
    target = resolve_target("x86-avx2")
    assert rule_for(lut_matmul(spec), target).default_m_inner(spec) == int(rows_inside)
    gemm = build_lut_gemm(spec, "x86-avx2")
    assert ("prefetcht0" in gemm.module.inspect_source("asm")) == (not rows_inside)


LANES_FORMATS = [
    IntFormat(2, 32, symmetric=False),
    IntFormat(4, 32),
    IntFormat(4, 64, symmetric=False, zero_dtype="float"),
    IntFormat(6, 32),
    IntFormat(8, 32, symmetric=False),
    TernaryFormat(64),
]


def _lanes_kernel_used(spec: KernelSpec, pinned: tuple[tuple[str, int], ...]) -> bool:
    """Whether the AVX2 schedule with ``pinned`` decisions tensorizes with the rows-inside kernel."""
    from lutc.schedules import Knobs, rule_for

    from lutc.kernels import lut_matmul

    target, matmul = resolve_target("x86-avx2"), lut_matmul(spec)
    return "_rows_inside" in str(rule_for(matmul, target).apply(matmul, target, Knobs(pinned=pinned)).trace)


@pytest.mark.parametrize("fmt", LANES_FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("half_tables", [False, True], ids=["full", "half"])
@pytest.mark.parametrize("m", [2, 3, 16, 33, None])
def test_avx2_rows_inside_kernel_equals_the_one_row_kernel(fmt, half_tables, m):
    """Rows inside groups with a chunk of one group take the lanes micro-kernel (both nibbles'
    tables in one register, plane pairs summed by one ``vpmaddubsw``): the same integer sums as
    the one-row kernel (2-byte chunks), so the same outputs bit for bit, for static M of 2, 3, 16
    and 33 and a dynamic M run with 1, 2 and 33 rows, and within the reference's bound."""
    spec = KernelSpec(m, 72, 256, fmt, mode="fast", half_tables=half_tables)
    lanes_choice = (("chunk", spec.group_bytes), ("m_inner", 1))
    one_row_choice = (("chunk", 2), ("m_inner", 1))
    assert _lanes_kernel_used(spec, lanes_choice) and not _lanes_kernel_used(spec, one_row_choice)
    lanes, one_row = (_pinned_gemm(spec, "x86-avx2", choice) for choice in (lanes_choice, one_row_choice))
    rng = np.random.default_rng(len(fmt.name) + (m or 0))
    pw = pack(quantize(random_weights(rng, spec.n, spec.k), fmt))
    config = LutConfig(mode="fast", half_tables=half_tables)
    for rows in [m] if m else [1, 2, 33]:
        x = rng.standard_normal((rows, spec.k)).astype(np.float32)
        y = lanes(x, lanes.prepare(pw))
        np.testing.assert_array_equal(y, one_row(x, one_row.prepare(pw)))
        bound = float(exact_error_bound(x, pw).max())
        tvm.testing.assert_allclose(y, lut_gemm(x, pw, config), rtol=0, atol=bound)


@pytest.mark.parametrize(
    ("m", "fmt", "lanes"),
    [
        (None, IntFormat(4, 32), True),
        (16, IntFormat(2, 32), True),
        (1, IntFormat(4, 32), False),  # the decode step: rows outside groups
        (None, IntFormat(3, 32), False),  # an odd plane count does not pair
        (None, IntFormat(4, 128), False),  # a group of 16 bytes is more than one chunk
    ],
    ids=lambda v: getattr(v, "name", str(v)),
)
def test_avx2_default_schedule_picks_the_rows_inside_kernel_where_it_fits(m, fmt, lanes):
    """Untuned, the rows-inside kernel serves M other than 1 where plane pairs and one chunk per
    group fit; its hot loop (over rows) has no ``vpunpck``: every ``vpshufb`` feeds one
    ``vpmaddubsw``, where the one-row kernel interleaves the two nibbles' lookups first."""
    from collections import Counter

    from lutc.bench import mca
    from lutc.gemm import scheduled_module

    spec = KernelSpec(m, 4096, 4096, fmt, mode="fast")
    target = resolve_target("x86-avx2")
    asm = tvm.tirx.build(scheduled_module(spec, target), target=target).inspect_source("asm")
    hot = mca.hot_loop(mca.instructions(mca.matmul_asm(asm), "x86_64"), "x86_64", mca.LOOKUP_LANES["x86_64", "fast"])
    ops = Counter(line.split()[0] for line in hot)
    assert ops["vpshufb"] > 0 and ops["vpshufb"] == ops["vpmaddubsw"]
    assert (ops["vpunpcklbw"] + ops["vpunpckhbw"] == 0) == lanes


@pytest.mark.parametrize("bits", [1, 2])
def test_lookup_loops_are_named_and_ordered_as_schedules_unpack_them(bits):
    """Schedules unpack the lookup block's loops in ``LOOKUP_LOOPS``' order (no plane loop at 1 bit)."""
    from tvm import s_tir

    from lutc.kernels import lut_matmul
    from lutc.kernels.names import LOOKUP_BLOCK, LOOKUP_LOOPS, PLANE_LOOP

    sch = s_tir.Schedule(lut_matmul(KernelSpec(None, 64, 256, IntFormat(bits, 64))))
    names = [sch.get(loop).loop_var.name for loop in sch.get_loops(sch.get_sblock(LOOKUP_BLOCK))]
    assert names == [name for name in LOOKUP_LOOPS if bits > 1 or name != PLANE_LOOP]


@pytest.mark.parametrize(
    ("m", "mode", "folded"),
    [(1, "fast", False), (2, "fast", True), (16, "fast", True), (None, "fast", True), (None, "exact", False)],
)
def test_prompt_kernels_fold_their_epilogue_and_decode_steps_do_not(m, mode, folded):
    """Fast kernels for more than one row (or any number) fold the epilogue's (row, group) scalars
    and scale each row's group sum once, in a ``y_pad`` block before ``y``, and say so in an
    attribute (a tuner's one-row stand-in for a dynamic kernel keeps the form); a static M = 1 (the
    decode step) and exact mode keep one epilogue block (N a multiple of 32, no bias). Both forms
    are checked against the reference by the tests above."""
    from lutc.schedules.base import block_names
    from tvm import s_tir

    from lutc.kernels.matmul import folds_epilogue, lut_matmul
    from lutc.kernels.names import FOLDED_ATTR, PADDED_OUTPUT_BLOCK

    spec = KernelSpec(m, 64, 256, IntFormat(4, 32), mode=mode)
    func = lut_matmul(spec)
    assert folds_epilogue(spec) is folded
    assert (PADDED_OUTPUT_BLOCK in block_names(s_tir.Schedule(func))) is folded
    assert bool(func.attrs.get(FOLDED_ATTR, False)) is folded
