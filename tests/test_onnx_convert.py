"""ONNX <-> QuantizedWeight converters, checked against ONNX Runtime's CPU kernels."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from lutc.quant.formats import IntFormat, TernaryFormat
from lutc.quant.onnx_convert import (
    dequantize_linear_from_node,
    from_dequantize_linear,
    from_matmul_nbits,
    matmul_nbits_from_node,
    pack_matmul_nbits_codes,
    to_dequantize_linear,
    to_matmul_nbits,
    unpack_matmul_nbits_codes,
)
from lutc.quant.weights import QuantizedWeight, dequantize, expand_groups, quantize, reference_matmul

EPS32 = float(np.finfo(np.float32).eps)
ZERO_KINDS = {"sym": {}, "int": {"symmetric": False}, "float": {"symmetric": False, "zero_dtype": "float"}}


# ----------------------------------------------------------------------------- helpers


def _session(nodes: list, inits: list, inputs: list, outputs: list, opsets: dict) -> ort.InferenceSession:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _nbits_node(d: dict, bias: np.ndarray | None = None, name: str = "mm") -> tuple[onnx.NodeProto, dict]:
    """A MatMulNBits node and its initializers (as numpy arrays) from ``to_matmul_nbits`` output."""
    inits = {"B": d["b"], "scales": d["scales"]}
    inputs = ["A", "B", "scales", ""]
    if d["zero_points"] is not None:
        inits["zp"], inputs[3] = d["zero_points"], "zp"
    if bias is not None:
        inits["bias"] = bias
        inputs += ["", "bias"]  # g_idx omitted, bias is input 5
    attrs = {a: d[a] for a in ("K", "N", "bits", "block_size")}
    node = helper.make_node("MatMulNBits", inputs, ["Y"], name=name, domain="com.microsoft", accuracy_level=0, **attrs)
    return node, inits


def _run_nbits(d: dict, x: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    node, inits = _nbits_node(d, bias)
    elem = helper.np_dtype_to_tensor_dtype(x.dtype)
    sess = _session(
        [node],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
        [helper.make_tensor_value_info("A", elem, [None, d["K"]])],
        [helper.make_tensor_value_info("Y", elem, [None, d["N"]])],
        {"": 21, "com.microsoft": 1},
    )
    return sess.run(None, {"A": x})[0]


def _weights(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Random weights with a per-row offset so asymmetric zero points are not all mid-range."""
    return (rng.standard_normal((n, k)) + rng.uniform(-1, 1, (n, 1))).astype(np.float32)


def _round_trip(d: dict) -> QuantizedWeight:
    return from_matmul_nbits(
        d["b"], d["scales"], d["zero_points"], k=d["K"], n=d["N"], bits=d["bits"], block_size=d["block_size"]
    )


def _assert_same(a: QuantizedWeight, b: QuantizedWeight) -> None:
    assert a.fmt == b.fmt
    np.testing.assert_array_equal(a.codes, b.codes)
    assert a.scales.dtype == b.scales.dtype
    np.testing.assert_array_equal(a.scales, b.scales)
    assert (a.zeros is None) == (b.zeros is None)
    if a.zeros is not None:
        assert a.zeros.dtype == b.zeros.dtype
        np.testing.assert_array_equal(a.zeros, b.zeros)


def _sz_terms(qw: QuantizedWeight) -> tuple[np.ndarray, np.ndarray]:
    """``fl32(s*q)`` and ``fl32(s*z)`` per element, the two products ORT's float-zero path rounds."""
    k = qw.shape[1]
    s = expand_groups(qw.scales.astype(np.float32), k)
    return s * qw.codes.astype(np.float32), s * expand_groups(qw.zero_points(), k)


# ------------------------------------------------------------------- MatMulNBits vs ORT


@pytest.mark.parametrize("zero", ["sym", "int", "float"])
@pytest.mark.parametrize("block", [32, 128])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_matmul_nbits_runs_in_ort(bits: int, block: int, zero: str) -> None:
    if bits == 8 and zero == "float":
        pytest.skip("ORT refuses 8-bit weights with float zero points")
    rng = np.random.default_rng(bits * 1000 + block)
    m, k, n = 5, 384, 40  # K = 3 * 128 and N = 40: neither a power of two
    qw = quantize(_weights(rng, n, k), IntFormat(bits, block, **ZERO_KINDS[zero]))
    x = rng.standard_normal((m, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    y = _run_nbits(to_matmul_nbits(qw), x, bias)
    # accuracy_level=0 keeps A in fp32: ORT forms fp32 products and sums them in some order, so
    # |y - exact| <= gamma_K * |x| @ |w| + (bias add) <= (K + 2) * eps * (|x| @ |w| + |bias|).
    # With float zero points ORT's w is fl(fl(s*q) - fl(s*z)) while dequantize gives fl(s*(q - z)):
    # each is within eps * s * (q + z) of the real s*(q - z), hence the second term.
    tol = (k + 2) * EPS32 * (np.abs(x) @ np.abs(dequantize(qw)).T + np.abs(bias))
    if zero == "float":
        tol += 2 * EPS32 * (np.abs(x) @ np.abs(sum(_sz_terms(qw))).T)
    err = np.abs(y - reference_matmul(x, qw, bias))
    assert (err <= tol).all(), f"max err {err.max():.3g}, worst err/tol {(err / tol).max():.3g}"


@pytest.mark.parametrize("zero", ["sym", "int", "float"])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_ort_dequantization_semantics(bits: int, zero: str) -> None:
    if bits == 8 and zero == "float":
        pytest.skip("ORT refuses 8-bit weights with float zero points")
    """With A = I, ORT returns its dequantized weight: bit-identical to ``dequantize`` for symmetric
    and int zero points; for float zero points exactly ``fl(fl(s*q) - fl(s*z))``."""
    rng = np.random.default_rng(bits)
    qw = quantize(_weights(rng, 24, 128), IntFormat(bits, 32, **ZERO_KINDS[zero]))
    w_ort = _run_nbits(to_matmul_nbits(qw), np.eye(128, dtype=np.float32)).T
    if zero != "float":
        np.testing.assert_array_equal(w_ort, dequantize(qw))
        return
    sq, sz = _sz_terms(qw)
    np.testing.assert_array_equal(w_ort, sq - sz)
    assert np.all(np.abs(w_ort - dequantize(qw)) <= 2 * EPS32 * (sq + sz))


def test_fp16_scales_need_fp16_activations() -> None:
    rng = np.random.default_rng(7)
    qw = quantize(_weights(rng, 40, 128), IntFormat(4, 32, scale_dtype="float16"))
    d = to_matmul_nbits(qw)
    with pytest.raises(Exception, match="bound to different types"):
        _run_nbits(d, np.eye(128, dtype=np.float32))
    w_ort = _run_nbits(d, np.eye(128, dtype=np.float16)).T
    # s16 * (q - z) with |q - z| <= 8 is exact in fp32, so both sides round once to fp16.
    np.testing.assert_array_equal(w_ort, dequantize(qw).astype(np.float16))


@pytest.mark.parametrize("bits", [1, 3])
def test_ort_cpu_runs_only_2_4_8_bits(bits: int) -> None:
    qw = quantize(_weights(np.random.default_rng(0), 8, 64), IntFormat(bits, 32))
    with pytest.raises(Exception, match="Only 2b, 4b and 8b"):
        _run_nbits(to_matmul_nbits(qw), np.eye(64, dtype=np.float32))


# ------------------------------------------------------------- MatMulNBits round trips


@settings(max_examples=200, deadline=None)
@given(
    bits=st.sampled_from([1, 2, 3, 4]),
    block=st.sampled_from([16, 32, 64, 128]),
    blocks=st.integers(1, 5),
    n=st.integers(1, 9),
    zero=st.sampled_from(list(ZERO_KINDS)),
    scale_dtype=st.sampled_from(["float32", "float16"]),
    seed=st.integers(0, 2**16),
)
def test_matmul_nbits_round_trip(bits, block, blocks, n, zero, scale_dtype, seed) -> None:
    fmt = IntFormat(bits, block, scale_dtype=scale_dtype, **ZERO_KINDS[zero])
    qw = quantize(_weights(np.random.default_rng(seed), n, block * blocks), fmt)
    d = to_matmul_nbits(qw)
    assert d["b"].shape == (n, blocks, block * bits // 8) and d["b"].dtype == np.uint8
    assert d["scales"].shape == (n, blocks) and d["scales"].dtype == np.dtype(scale_dtype)
    if zero == "int":
        assert d["zero_points"].shape == (n, -(-blocks * bits // 8))
    _assert_same(_round_trip(d), qw)
    flat = dict(d, scales=d["scales"].ravel(), zero_points=None if zero == "sym" else d["zero_points"].ravel())
    _assert_same(_round_trip(flat), qw)  # legacy flat scales / zero points


@settings(max_examples=100, deadline=None)
@given(bits=st.integers(1, 8), block=st.sampled_from([16, 32, 64]), k=st.integers(1, 200), seed=st.integers(0, 99))
def test_generic_code_unpacking(bits: int, block: int, k: int, seed: int) -> None:
    codes = np.random.default_rng(seed).integers(0, 1 << bits, (3, k)).astype(np.uint8)
    b = pack_matmul_nbits_codes(codes, bits, block)
    assert b.shape == (3, -(-k // block), block * bits // 8)
    np.testing.assert_array_equal(unpack_matmul_nbits_codes(b, bits, k), codes)


def test_packing_is_lsb_first() -> None:
    d = to_matmul_nbits(QuantizedWeight(IntFormat(4, 16), np.arange(16, dtype=np.uint8)[None], np.ones((1, 1), "f4")))
    assert d["b"][0, 0].tolist() == [0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE]


def test_ternary_and_per_channel_to_matmul_nbits() -> None:
    rng = np.random.default_rng(3)
    w = _weights(rng, 16, 128)
    for fmt in (TernaryFormat(32), TernaryFormat("tensor"), IntFormat(4, "channel", symmetric=False)):
        qw = quantize(w, fmt)
        d = to_matmul_nbits(qw)
        np.testing.assert_array_equal(dequantize(_round_trip(d)), dequantize(qw))
        np.testing.assert_array_equal(_run_nbits(d, np.eye(128, dtype=np.float32)).T, dequantize(qw))


def test_fp16_float_zero_points_with_fp32_scales_are_upcast() -> None:
    qw = quantize(_weights(np.random.default_rng(4), 8, 64), IntFormat(4, 32, False, "float"))
    d = to_matmul_nbits(qw)
    zp16 = d["zero_points"].astype(np.float16)
    got = from_matmul_nbits(d["b"], d["scales"], zp16, k=64, n=8, bits=4, block_size=32)
    assert got.zeros.dtype == np.float32
    np.testing.assert_array_equal(got.zeros, zp16.astype(np.float32))


def test_matmul_nbits_from_node() -> None:
    rng = np.random.default_rng(5)
    qw = quantize(_weights(rng, 40, 96), IntFormat(2, 32, symmetric=False))
    bias = rng.standard_normal(40).astype(np.float32)
    got, got_bias = matmul_nbits_from_node(*_nbits_node(to_matmul_nbits(qw), bias))
    _assert_same(got, qw)
    np.testing.assert_array_equal(got_bias, bias)
    node, inits = _nbits_node(to_matmul_nbits(qw))
    assert matmul_nbits_from_node(node, inits)[1] is None


# --------------------------------------------------------------- MatMulNBits bad input


def _bad_node(change: str) -> tuple[onnx.NodeProto, dict]:
    qw = quantize(_weights(np.random.default_rng(6), 40, 96), IntFormat(4, 32, symmetric=False))
    d = to_matmul_nbits(qw)
    attr = {"K": {"K": 128}, "N": {"N": 48}, "bits": {"bits": 2}, "block": {"block_size": 16}}.get(change, {})
    d = d | attr
    node, inits = _nbits_node(d, np.zeros(40 if change != "bias" else 41, np.float32), name="proj")
    if change == "missing":
        del inits["scales"]
    elif change == "g_idx":
        node.input[4] = "g_idx"
    elif change == "prepacked":
        node.attribute.append(helper.make_attribute("weight_prepacked", 1))
    elif change == "no_K":
        node.attribute.remove(next(a for a in node.attribute if a.name == "K"))
    elif change == "op":
        node.domain = ""
    return node, inits


@pytest.mark.parametrize(
    "change, fragments",
    [
        ("K", [r"K=128", r"B has shape \(40, 3, 16\)", r"need uint8 \(40, 4, 16\)"]),
        ("N", [r"N=48", r"B has shape \(40, 3, 16\)"]),
        ("bits", [r"bits=2", r"B has shape \(40, 3, 16\)", r"need uint8 \(40, 3, 8\)"]),
        ("block", [r"block_size=16", r"B has shape \(40, 3, 16\)", r"need uint8 \(40, 6, 8\)"]),
        ("missing", [r"input scales 'scales' is not an initializer"]),
        ("g_idx", [r"g_idx input 'g_idx'.*not supported"]),
        ("prepacked", [r"weight_prepacked=1"]),
        ("no_K", [r"missing attributes \['K'\]"]),
        ("bias", [r"bias has shape \(41,\)", r"expected shape \(40,\)"]),
        ("op", [r"expected com.microsoft::MatMulNBits"]),
    ],
)
def test_matmul_nbits_node_errors(change: str, fragments: list[str]) -> None:
    with pytest.raises(ValueError, match=r"MatMulNBits node 'proj'") as info:
        matmul_nbits_from_node(*_bad_node(change))
    for fragment in fragments:
        assert re.search(fragment, str(info.value)), f"{fragment!r} not in {info.value}"


def _nbits_arrays() -> dict:
    qw = quantize(_weights(np.random.default_rng(8), 8, 64), IntFormat(4, 32, symmetric=False))
    d = to_matmul_nbits(qw)
    return {
        "b": d["b"],
        "scales": d["scales"],
        "zero_points": d["zero_points"],
        "k": 64,
        "n": 8,
        "bits": 4,
        "block_size": 32,
    }


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"bits": 9}, r"unsupported bit width 9"),
        ({"bits": 0}, r"unsupported bit width 0"),
        ({"block_size": 48}, r"block_size=48 is not a power of two"),
        ({"k": 80, "block_size": 16}, r"B has shape \(8, 2, 16\).*K=80"),
        ({"k": 72}, r"K=72.*multiple of block_size=32"),
        ({"scales": np.ones((8, 3), np.float32)}, r"scales has shape \(8, 3\).*need shape \(8, 2\)"),
        ({"scales": np.ones((8, 2), np.float64)}, r"scales has shape \(8, 2\) dtype float64"),
        ({"scales": np.full((8, 2), np.inf, np.float32)}, r"scales has 16 non-finite"),
        ({"zero_points": np.zeros((8, 2), np.uint8)}, r"packed zero_points has shape \(8, 2\).*\(8, 1\)"),
        ({"zero_points": np.zeros((8, 1), np.int8)}, r"zero_points has shape \(8, 1\) dtype int8"),
        ({"zero_points": np.zeros((8, 3), np.float32)}, r"float zero_points has shape \(8, 3\).*\(8, 2\)"),
        (
            {"scales": np.ones((8, 2), np.float16), "zero_points": np.full((8, 2), 0.1, np.float32)},
            r"do not convert exactly to the scales' dtype float16",
        ),
        ({"b": np.zeros((8, 2, 16), np.int8)}, r"B has shape \(8, 2, 16\) dtype int8"),
    ],
)
def test_from_matmul_nbits_errors(change: dict, pattern: str) -> None:
    args = _nbits_arrays() | change
    with pytest.raises(ValueError, match=pattern):
        from_matmul_nbits(args.pop("b"), args.pop("scales"), args.pop("zero_points"), **args)


def test_to_matmul_nbits_errors() -> None:
    qw = quantize(_weights(np.random.default_rng(9), 8, 96), IntFormat(4, "channel"))
    with pytest.raises(ValueError, match=r"w4gc with K=96 has 96 K elements.*power-of-two block_size"):
        to_matmul_nbits(qw)


# ------------------------------------------------------------- DequantizeLinear vs ORT

DQL_TYPES = {  # name: (ONNX type, signed, bits, opset)
    "int4": (TensorProto.INT4, True, 4, 21),
    "uint4": (TensorProto.UINT4, False, 4, 21),
    "int2": (TensorProto.INT2, True, 2, 25),
    "uint2": (TensorProto.UINT2, False, 2, 25),
}


def _dql_node(x, scale, zero_point, data_type, axis, block_size, name="dq") -> tuple[onnx.NodeProto, list]:
    inits = [helper.make_tensor("x", data_type, x.shape, x.ravel()), numpy_helper.from_array(scale, "scale")]
    if zero_point is not None:
        inits.append(helper.make_tensor("zp", data_type, zero_point.shape, zero_point.ravel()))
    attrs = {"axis": axis} | ({"block_size": block_size} if block_size else {})
    node = helper.make_node("DequantizeLinear", [t.name for t in inits], ["y"], name=name, **attrs)
    return node, inits


def _run_dql(type_name: str, x, scale, zero_point, axis: int, block_size: int) -> np.ndarray:
    data_type, _, _, opset = DQL_TYPES[type_name]
    node, inits = _dql_node(x, scale, zero_point, data_type, axis, block_size)
    out = helper.make_tensor_value_info("y", helper.np_dtype_to_tensor_dtype(scale.dtype), None)
    try:
        return _session([node], inits, [], [out], {"": opset}).run(None, {})[0]
    except (ort.capi.onnxruntime_pybind11_state.NotImplemented, ort.capi.onnxruntime_pybind11_state.Fail) as err:
        if opset >= 25 and "opset" in str(err).lower():
            pytest.skip(f"onnxruntime {ort.__version__} cannot run DequantizeLinear-{opset} with {type_name}: {err}")
        raise


def _dql_case(rng, type_name: str, layout: str, with_zp: bool, k: int = 96, n: int = 40) -> tuple:
    _, signed, bits, _ = DQL_TYPES[type_name]
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
    shape, axis, block = {"block": ((k // 32, n), 0, 32), "channel": ((n,), 1, 0), "tensor": ((), 1, 0)}[layout]
    x = rng.integers(lo, hi, (k, n)).astype(np.int8 if signed else np.uint8)
    scale = rng.uniform(0.01, 1, shape).astype(np.float32)
    zp = rng.integers(lo, hi, shape).astype(x.dtype) if with_zp else None
    return x, scale, zp, axis, block


@pytest.mark.parametrize("with_zp", [True, False])
@pytest.mark.parametrize("layout", ["block", "channel", "tensor"])
@pytest.mark.parametrize("type_name", list(DQL_TYPES))
def test_dequantize_linear_matches_ort(type_name: str, layout: str, with_zp: bool) -> None:
    x, scale, zp, axis, block = _dql_case(np.random.default_rng(len(type_name)), type_name, layout, with_zp)
    _, signed, bits, _ = DQL_TYPES[type_name]
    qw = from_dequantize_linear(x, scale, zp, axis=axis, block_size=block, signed=signed, bits=bits)
    assert qw.fmt.group_size == {"block": 32, "channel": "channel", "tensor": "tensor"}[layout]
    y = _run_dql(type_name, x, scale, zp, axis, block)
    # q - z is a small integer, exact in fp32 once offset; both sides then round s * (q - z) once.
    np.testing.assert_array_equal(y, dequantize(qw).T)


@pytest.mark.parametrize("type_name", list(DQL_TYPES))
def test_dequantize_linear_fp16_scales(type_name: str) -> None:
    x, scale, zp, axis, block = _dql_case(np.random.default_rng(1), type_name, "block", True)
    _, signed, bits, _ = DQL_TYPES[type_name]
    qw = from_dequantize_linear(x, scale.astype(np.float16), zp, axis=0, block_size=32, signed=signed, bits=bits)
    y = _run_dql(type_name, x, scale.astype(np.float16), zp, axis, block)
    # fp16 s times an integer |q - z| < 16 is exact in fp32: a single rounding to fp16 on both sides.
    np.testing.assert_array_equal(y, dequantize(qw).T.astype(np.float16))


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize(
    "fmt",
    [
        IntFormat(4, 32),
        IntFormat(2, 64, False),
        IntFormat(4, "channel", False),
        IntFormat(2, "tensor"),
        TernaryFormat(32),
        TernaryFormat("tensor"),
    ],
    ids=lambda f: f.name,
)
def test_to_dequantize_linear_runs_in_ort(fmt, signed: bool) -> None:
    qw = quantize(_weights(np.random.default_rng(2), 40, 128), fmt)
    d = to_dequantize_linear(qw, signed)
    type_name = f"{'' if signed else 'u'}int{fmt.bits}"
    assert d["data_type"] == DQL_TYPES[type_name][0]
    y = _run_dql(type_name, d["x"], d["scale"], d["zero_point"], d["axis"], d["block_size"])
    np.testing.assert_array_equal(y, dequantize(qw).T)
    node, inits = _dql_node(d["x"], d["scale"], d["zero_point"], d["data_type"], d["axis"], d["block_size"])
    back = dequantize_linear_from_node(node, {t.name: numpy_helper.to_array(t) for t in inits})
    np.testing.assert_array_equal(dequantize(back), dequantize(qw))
    if isinstance(fmt, IntFormat):
        _assert_same(back, qw)


def test_signed_zero_zp_is_symmetric() -> None:
    x = np.array([[-8, 7], [0, 1]], np.int8)
    qw = from_dequantize_linear(x, np.ones(2, np.float32), np.zeros(2, np.int8), axis=1, signed=True, bits=4)
    assert qw.fmt == IntFormat(4, "channel") and qw.zeros is None
    np.testing.assert_array_equal(qw.codes, [[0, 8], [15, 9]])
    unsigned = from_dequantize_linear(x.astype(np.uint8) & 3, np.ones(2, np.float32), axis=1, signed=False, bits=2)
    assert not unsigned.fmt.symmetric and not unsigned.zeros.any()


# ---------------------------------------------------------- DequantizeLinear bad input


def _dql_args(**change) -> dict:
    x, scale, zp, axis, block = _dql_case(np.random.default_rng(0), "int4", "block", True, k=64, n=8)
    args = {"x": x, "scale": scale, "zero_point": zp, "axis": axis, "block_size": block, "signed": True, "bits": 4}
    return args | change


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"axis": 1}, r"block_size=32 along axis=1 \(N\) is not supported"),
        ({"axis": 2}, r"axis=2 is out of range"),
        ({"bits": None}, r"x has dtype int8, an 8-bit type"),
        ({"bits": 8}, r"unsupported bit width 8"),
        ({"block_size": 48}, r"K=64 is not a multiple of block_size=48"),
        ({"scale": np.ones((2, 9), np.float32)}, r"scale has shape \(2, 9\).*need \(2, 8\)"),
        (
            {"scale": np.ones(64, np.float32), "zero_point": None, "axis": 0, "block_size": 0},
            r"per-axis scale along axis=0.*not supported",
        ),
        (
            {"scale": np.ones(9, np.float32), "zero_point": None, "axis": 1, "block_size": 0},
            r"scale has shape \(9,\).*needs \(8,\)",
        ),
        ({"scale": np.ones((2, 8), np.float32), "block_size": 0}, r"2-D scale needs block_size"),
        ({"zero_point": np.zeros((2, 9), np.int8)}, r"zero_point has shape \(2, 9\).*scale has shape \(2, 8\)"),
        ({"x": np.full((64, 8), 8, np.int8)}, r"x holds values in \[8, 8\], outside \[-8, 7\]"),
        ({"x": np.zeros((64, 8, 1), np.int8)}, r"x has shape \(64, 8, 1\).*2-D"),
        ({"x": np.zeros((64, 8), np.float32)}, r"x has shape \(64, 8\) dtype float32"),
        ({"scale": np.ones((2, 8), np.int32)}, r"scale has shape \(2, 8\) dtype int32"),
    ],
)
def test_from_dequantize_linear_errors(change: dict, pattern: str) -> None:
    args = _dql_args(**change)
    with pytest.raises(ValueError, match=pattern):
        from_dequantize_linear(args.pop("x"), args.pop("scale"), args.pop("zero_point"), **args)


def test_dequantize_linear_dtype_checks() -> None:
    x4 = numpy_helper.to_array(helper.make_tensor("x", TensorProto.INT4, (32, 2), np.zeros(64, np.int8)))
    with pytest.raises(ValueError, match=r"dtype int4 but signed=False"):
        from_dequantize_linear(x4, np.float32(1), axis=1, signed=False)
    node, inits = _dql_node(np.zeros((4, 2), np.int8), np.float32(1), None, TensorProto.INT8, 1, 0, name="w8")
    with pytest.raises(ValueError, match=r"DequantizeLinear node 'w8': x has shape \(4, 2\) dtype int8"):
        dequantize_linear_from_node(node, {t.name: numpy_helper.to_array(t) for t in inits})
    node, inits = _dql_node(np.zeros((48, 2), np.int8), np.ones((2, 2), "f4"), None, TensorProto.INT4, 0, 32, "w4")
    with pytest.raises(ValueError, match=r"node 'w4': K=48 is not a multiple of block_size=32"):
        dequantize_linear_from_node(node, {t.name: numpy_helper.to_array(t) for t in inits})


def test_to_dequantize_linear_errors() -> None:
    w = _weights(np.random.default_rng(1), 8, 64)
    with pytest.raises(ValueError, match=r"w4g32af has float zero points"):
        to_dequantize_linear(quantize(w, IntFormat(4, 32, False, "float")), signed=True)
    with pytest.raises(ValueError, match=r"unsupported bit width 3 for DequantizeLinear"):
        to_dequantize_linear(quantize(w, IntFormat(3, 32)), signed=False)
    qw = quantize(w, IntFormat(4, "tensor"))
    uneven = QuantizedWeight(qw.fmt, qw.codes, qw.scales * np.arange(1, 9, dtype=np.float32)[:, None])
    with pytest.raises(ValueError, match=r"per-tensor format has scales that differ between rows"):
        to_dequantize_linear(uneven, signed=True)
