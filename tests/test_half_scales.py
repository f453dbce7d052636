"""Half scales: fast-mode kernels that read float16 scales and offsets (``lutc.quant.layout``,
"Half scales"), from the packed layout through the kernels to a model build.

Tolerances. Against the numpy reference on the same half-scaled weight, a kernel differs only by
the float32 rounding of its epilogue (``exact_error_bound``), as every fast kernel. Against the
float32 weight, each scale and offset moves by at most ``2**-11`` of itself (float16's rounding)
or ``2**-25`` below float16's normal range, and an output by at most the sum of those moves times
the group terms they multiply.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import tvm.testing
from conftest import random_weights
from onnx import TensorProto, helper

import lutc
from lutc.errors import ModelError
from lutc.gemm import build_lut_gemm
from lutc.kernels import KernelSpec
from lutc.quant import IntFormat, LutConfig, TernaryFormat, exact_error_bound, half_scaled, lut_gemm, pack, quantize
from lutc.quant.layout import HALF_MAX, unpack
from lutc.quant.onnx_convert import matmul_nbits_node
from lutc.targets import converts_half, missing_on_host, resolve_target
from lutc.zoo import nbits_arrays

AVX512_MISSING = missing_on_host(resolve_target("x86-avx512"))
TARGETS = [
    "x86-avx2",
    pytest.param("x86-avx512", marks=pytest.mark.skipif(bool(AVX512_MISSING), reason="this CPU lacks AVX-512")),
    "llvm",
]
FORMATS = [
    IntFormat(4, 32),
    IntFormat(4, 32, symmetric=False, zero_dtype="float"),
    IntFormat(2, 64, symmetric=False),
    IntFormat(8, 32),
    TernaryFormat(64),
]
HALF_ULP, HALF_TINY = 2.0**-11, 2.0**-25


def _moved_by_at_most_a_half_rounding(half: np.ndarray, full: np.ndarray) -> bool:
    full = full.astype(np.float64)
    return bool(np.all(np.abs(half.astype(np.float64) - full) <= np.maximum(HALF_ULP * np.abs(full), HALF_TINY)))


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_half_scaled_rounds_scales_and_offsets_to_float16(fmt):
    pw = pack(quantize(random_weights(np.random.default_rng(1), 70, 128), fmt))
    half = half_scaled(pw)
    assert half.half_scales and not pw.half_scales and half_scaled(half) is half
    assert half.scales.dtype == np.float16 and _moved_by_at_most_a_half_rounding(half.scales, pw.scales)
    if pw.offsets is None:
        assert half.offsets is None
    else:
        assert half.offsets.dtype == np.float16 and _moved_by_at_most_a_half_rounding(half.offsets, pw.offsets)
    np.testing.assert_array_equal(half.data, pw.data)
    restored = unpack(half)  # the codes are untouched, the scales widen back to the format's dtype
    assert restored.scales.dtype == np.dtype(fmt.scale_dtype)
    np.testing.assert_array_equal(restored.codes, unpack(pw).codes)
    assert half.nbytes < pw.nbytes


def test_half_scaled_refuses_values_beyond_float16():
    qw = quantize(random_weights(np.random.default_rng(2), 32, 64), IntFormat(4, 32))
    huge = pack(qw)
    huge.scales[0, 0, 0] = 1e5
    with pytest.raises(ValueError, match=r"scales: values up to 100000 exceed float16's largest, 65504; .*'off'"):
        half_scaled(huge)
    assert HALF_MAX == 65504.0


def test_a_mixed_packed_weight_is_refused():
    pw = pack(quantize(random_weights(np.random.default_rng(3), 32, 64), IntFormat(4, 32, symmetric=False)))
    with pytest.raises(ValueError, match="packed scales must be"):
        type(pw)(pw.fmt, pw.n, pw.k, pw.g, pw.data, pw.scales, pw.offsets.astype(np.float16))


def test_the_spec_names_half_scales_only_when_set():
    plain = KernelSpec(1, 64, 128, IntFormat(4, 32, symmetric=False))
    half = KernelSpec(1, 64, 128, IntFormat(4, 32, symmetric=False), half_scales=True)
    assert "half_scales" not in plain.as_attr() and half.as_attr()["half_scales"] == 1
    assert KernelSpec.from_attr(half.as_attr()) == half and KernelSpec.from_attr(plain.as_attr()) == plain
    assert half.tag == plain.tag + "_hs"
    assert {p: d for p, (_, d) in half.weight_types().items()} == {"data": "uint8", "scales": "float16",
                                                                   "offsets": "float16"}  # fmt: skip


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("m", [1, 3, 16, None], ids=lambda m: f"m{m or 'dyn'}")
def test_half_scale_kernels_equal_the_reference_on_their_weight(target, fmt, m):
    """Bit-for-bit integer sums; the float epilogue within its float32 rounding of the reference
    computed on the half-scaled weight; the float32 weight's result within the scales' rounding."""
    rng = np.random.default_rng(4)
    pw = pack(quantize(random_weights(rng, 72, 256), fmt))
    gemm = build_lut_gemm(KernelSpec(m, 72, 256, fmt, mode="fast", half_scales=True), target)
    x = rng.standard_normal((m or 5, 256)).astype(np.float32)
    y = gemm(x, gemm.prepare(pw))
    half = half_scaled(pw)
    config = LutConfig(mode="fast")
    tvm.testing.assert_allclose(y, lut_gemm(x, half, config), rtol=0, atol=float(exact_error_bound(x, half).max()))
    full = lut_gemm(x, pw, config)
    moved = np.abs(full - lut_gemm(x, half, config)).max()
    assert 0 < moved <= 4 * HALF_ULP * np.abs(full).max() * 8  # a few float16 ulps of the largest term


@pytest.mark.parametrize(("target", "instruction"), [("x86-avx2", "vcvtph2ps"), ("x86-avx512", "vcvtph2ps")])
def test_x86_kernels_convert_half_scales_in_vector_registers(target, instruction):
    """The assembly only: it is read on any x86 machine, AVX-512 or not."""
    fmt = IntFormat(4, 32, symmetric=False, zero_dtype="float")
    gemm = build_lut_gemm(KernelSpec(1, 64, 256, fmt, half_scales=True), target)
    assert instruction in gemm.module.inspect_source("asm")


def test_which_targets_convert_half_in_hardware():
    assert all(converts_half(resolve_target(name)) for name in ("x86-avx2", "arm", "cuda-sm90"))
    assert not converts_half(resolve_target("llvm"))


# ---- builds --------------------------------------------------------------------------------------


def _nbits_model(scale: float = 1.0) -> tuple[onnx.ModelProto, np.ndarray]:
    weight = (np.random.default_rng(5).standard_normal((96, 128)) / np.sqrt(128)).astype(np.float32)
    arrays = nbits_arrays(weight, 4, 32)
    arrays["scales"] = (arrays["scales"] * scale).astype(np.float32)
    node, inits = matmul_nbits_node("proj", "x", "y", arrays, bias=None)
    graph = helper.make_graph(
        [node], "half", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 96])], inits,
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    x = np.random.default_rng(6).standard_normal((2, 128)).astype(np.float32)
    return helper.make_model(graph, opset_imports=opsets), x


def _scale_dtypes(compiled: lutc.CompiledModel) -> set[str]:
    return {str(w.dtype) for key, w in compiled.weights.items() if key.startswith("packed.scales")}


def test_fast_builds_for_this_cpu_read_half_scales_and_match_the_float32_build():
    model, x = _nbits_model()
    half, full = (lutc.build(model, "x86", half_scales=choice) for choice in ("auto", "off"))
    assert half.decisions == {"proj": "lut fast w4g32 float16 scales"} and _scale_dtypes(half) == {"float16"}
    assert full.decisions == {"proj": "lut fast w4g32"} and _scale_dtypes(full) == {"float32"}
    got, want = half(x=x), full(x=x)
    assert 0 < np.abs(got - want).max() <= 1e-3 * np.abs(want).max()


BUILDS = [("x86", "exact", False), ("llvm", "fast", False), ("cuda-sm90", "exact", False), ("cuda-sm90", "fast", True)]


@pytest.mark.parametrize(("target", "mode", "half"), BUILDS)
def test_half_scales_by_default_in_fast_mode_where_float16_converts_in_hardware(target, mode, half):
    model, _ = _nbits_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = lutc.build(model, target, mode=mode)
    assert ("float16 scales" in compiled.decisions["proj"]) == half
    assert _scale_dtypes(compiled) == {"float16" if half else "float32"}


def test_half_scales_on_in_exact_mode_is_refused():
    with pytest.raises(ValueError, match="half_scales='on' needs mode='fast'"):
        lutc.BuildOptions(mode="exact", half_scales="on")
    with pytest.raises(ValueError, match="half_scales must be 'auto', 'on' or 'off'"):
        lutc.BuildOptions(half_scales=True)


def test_scales_beyond_float16_name_the_weight_and_the_way_out():
    model, x = _nbits_model(scale=1e8)
    with pytest.raises(ModelError, match=r"packed\.scales:proj: values up to .* exceed float16's largest.*'off'"):
        lutc.build(model, "x86")
    assert np.isfinite(lutc.build(model, "x86", half_scales="off")(x=x)).all()
