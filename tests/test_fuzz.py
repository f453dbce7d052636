"""Fuzzing ``MatMulNBits`` attributes, tensors and call inputs against ONNX Runtime.

Each drawn model is either refused by lutc with a :class:`lutc.errors.LutcError` that names
the node, or built and matching ONNX Runtime; lutc never accepts a model that ORT refuses, and
never fails with anything but its own errors. Call inputs are either refused with an
``InputError`` naming the input, or give ORT's result.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import lutc
from lutc.errors import InputError, LutcError
from lutc.quant import IntFormat, quantize
from lutc.quant.onnx_convert import to_matmul_nbits

NODE = "fuzzed_proj"
ort.set_default_logger_severity(4)  # refusals are expected here; keep ORT's log quiet


@st.composite
def nbits_models(draw) -> onnx.ModelProto:
    """A MatMulNBits model, mostly valid, with one or two attributes or tensors perturbed."""
    bits = draw(st.sampled_from([1, 2, 3, 4]))
    block = draw(st.sampled_from([16, 32, 64]))
    k = block * draw(st.integers(1, 3))
    n = draw(st.sampled_from([8, 32, 40]))
    symmetric = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    arrays = to_matmul_nbits(
        quantize(rng.standard_normal((n, k)).astype(np.float32), IntFormat(bits, block, symmetric))
    )
    attrs = {"K": k, "N": n, "bits": bits, "block_size": block}
    for name, change in draw(
        st.dictionaries(st.sampled_from(sorted(attrs)), st.sampled_from([-1, 1, 2, 0]), max_size=2)
    ).items():
        attrs[name] = attrs[name] * change if change in (0, 2) else attrs[name] + change
    tensors = {"B": arrays["b"], "scales": arrays["scales"], "zero_points": arrays["zero_points"]}
    broken = draw(st.sampled_from([None, "B", "scales", "zero_points", "bias", "scales dtype", "zero_points dtype"]))
    if broken in ("B", "scales") or (broken == "zero_points" and tensors["zero_points"] is not None):
        tensors[broken] = tensors[broken].reshape(-1)[:-1].copy()
    elif broken == "scales dtype":
        tensors["scales"] = tensors["scales"].astype(np.float64)
    elif broken == "zero_points dtype" and tensors["zero_points"] is not None:
        tensors["zero_points"] = tensors["zero_points"].astype(np.int32)
    bias = rng.standard_normal(n + (1 if broken == "bias" else 0)).astype(np.float32) if draw(st.booleans()) else None
    return _model(attrs, tensors, bias, k)


def _model(attrs: dict, tensors: dict, bias: np.ndarray | None, k: int) -> onnx.ModelProto:
    inits, inputs = [], ["A"]
    for name in ("B", "scales", "zero_points"):
        if tensors[name] is not None:
            inits.append(numpy_helper.from_array(tensors[name], name))
            inputs.append(name)
        else:
            inputs.append("")
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "bias"))
        inputs += ["", "bias"]
    while inputs[-1] == "":
        inputs.pop()
    node = helper.make_node("MatMulNBits", inputs, ["Y"], name=NODE, domain="com.microsoft", **attrs)
    a = helper.make_tensor_value_info("A", TensorProto.FLOAT, ["seq", k])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)
    graph = helper.make_graph([node], "fuzz", [a], [y], initializer=inits)
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def _reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray | None:
    """``x @ W.T (+ bias)`` decoded from the node's tensors by the MatMulNBits spec, in float64,
    or ``None`` when the tensors do not fit the attributes. Independent of lutc's converter;
    checked against ORT where ORT runs (its CPU kernel takes bits 2, 4 and 8 only)."""
    node, inits = model.graph.node[0], {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    attrs = {a.name: a.i for a in node.attribute}
    k, n, bits, block = attrs["K"], attrs["N"], attrs["bits"], attrs["block_size"]
    blocks = -(-k // block) if block > 0 else 0
    b, scales = inits.get("B"), inits.get("scales")
    if block < 16 or block & (block - 1) or not 1 <= bits <= 8:  # the spec: a power of two >= 16
        return None
    if (
        min(k, n, bits, block) <= 0
        or k != x.shape[-1]
        or b is None
        or b.dtype != np.uint8
        or b.shape != (n, blocks, block * bits // 8)
    ):
        return None
    if scales is None or scales.dtype != np.float32 or scales.size != n * blocks:
        return None
    codes_bits = np.unpackbits(b, axis=-1, bitorder="little").reshape(n, blocks, block, bits)
    codes = (codes_bits.astype(np.int64) << np.arange(bits)).sum(-1).reshape(n, blocks * block)[:, :k]
    zeros = np.full((n, blocks), 2.0 ** (bits - 1))
    if "zero_points" in inits:
        zp = inits["zero_points"]
        per_row = -(-blocks * bits // 8)
        if zp.dtype != np.uint8 or zp.size != n * per_row:
            return None
        zp_bits = np.unpackbits(zp.reshape(n, per_row), axis=-1, bitorder="little")[:, : blocks * bits]
        zeros = (zp_bits.reshape(n, blocks, bits).astype(np.int64) << np.arange(bits)).sum(-1).astype(np.float64)
    w = (codes - np.repeat(zeros, block, 1)[:, :k]) * np.repeat(scales.reshape(n, blocks).astype(np.float64), block, 1)[
        :, :k
    ]
    y = x.astype(np.float64) @ w.T
    bias = inits.get("bias")
    if bias is not None:
        if bias.shape != (n,):
            return None
        y = y + bias
    return y


def _ort_result(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray | None:
    """ORT's output, or ``None`` when ORT refuses the model or the call."""
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"A": x})[0]
    except Exception:  # ORT's refusals come as several exception types
        return None


def _build(model: onnx.ModelProto) -> lutc.CompiledModel | LutcError:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return lutc.build(model, target="x86", mode="exact")
        except LutcError as err:
            return err


@settings(max_examples=25)
@given(model=nbits_models(), rows=st.integers(1, 3))
def test_fuzzed_matmul_nbits_is_refused_by_name_or_matches_ort(model, rows):
    k = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    x = np.random.default_rng(rows).standard_normal((rows, k)).astype(np.float32)
    from_ort, decoded = _ort_result(model, x), _reference(model, x)
    if from_ort is not None and decoded is not None:  # the test's own decoder agrees with ORT
        np.testing.assert_allclose(decoded, from_ort, rtol=0, atol=1e-4 * (np.abs(from_ort).max() + 1e-6))
    built = _build(model)
    if isinstance(built, LutcError):
        assert NODE in str(built), str(built)
        return
    bits = next(a.i for a in model.graph.node[0].attribute if a.name == "bits")
    expected = from_ort if bits in (2, 4) else decoded  # ORT's CPU kernel refuses 1 and 3 bits
    assert expected is not None, "lutc built a model that ONNX Runtime (or the MatMulNBits spec) refuses"
    y = built(A=x)
    assert y.shape == expected.shape
    scale = np.abs(expected).max() + 1e-6
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-4 * scale)


@pytest.fixture(scope="module")
def valid_model():
    k, n = 64, 32
    arrays = to_matmul_nbits(
        quantize(np.random.default_rng(0).standard_normal((n, k)).astype(np.float32), IntFormat(2, 32))
    )
    model = _model(
        {"K": k, "N": n, "bits": 2, "block_size": 32},
        {"B": arrays["b"], "scales": arrays["scales"], "zero_points": None},
        None,
        k,
    )
    return model, lutc.build(model, target="x86", mode="exact")


@settings(max_examples=30)
@given(
    shape=st.tuples(st.integers(0, 3), st.sampled_from([64, 63, 65, 0])),
    dtype=st.sampled_from(["float32", "float64", "float16", "int64"]),
    rank=st.sampled_from([1, 2, 3]),
)
def test_fuzzed_call_inputs_are_refused_by_name_or_match_ort(valid_model, shape, dtype, rank):
    model, compiled = valid_model
    full = (*([1] * (rank - 2)), *shape) if rank >= 2 else shape[1:]
    x = np.random.default_rng(0).standard_normal(full).astype(dtype)
    expected = _ort_result(model, x)
    try:
        y = compiled(A=x)
    except InputError as err:
        assert "A" in str(err)
        return
    assert expected is not None, f"lutc ran an input ONNX Runtime refuses: {x.shape} {x.dtype}"
    scale = np.abs(expected).max(initial=0.0)  # zero rows (seq = 0) are a valid, empty call
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-4 * (scale + 1e-6))


@pytest.mark.parametrize("block_size", [0, 24])
def test_wide_matmul_nbits_with_a_bad_block_size_is_refused_by_name(block_size):
    """Found by the fuzz test: a 6-bit node with block_size 0 raised ZeroDivisionError."""
    from lutc import zoo

    model = zoo.single_matmul_nbits(64, 32, 8, 32)
    attributes = {a.name: a for a in model.graph.node[0].attribute}
    attributes["bits"].i, attributes["block_size"].i = 6, block_size
    with pytest.raises(LutcError, match=rf"matmul.*block_size={block_size} is not a power of two"):
        lutc.build(model, target="x86")
