"""LutcFastMath: float32 exp, tanh, erf, sigmoid, softmax and GELU compile to polynomials that
vectorize (squares and cubes to products), and stay within a few ulp of float64 (the bounds in
``relay_passes/fast_math.py``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto, helper

import lutc
from lutc.backend import generated_source

EPS32 = float(np.finfo(np.float32).eps)


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf)(x)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


CASES = {
    # op: (node attributes, float64 reference, allowed error in float32 eps of |reference|)
    "Exp": ({}, np.exp, 8),
    "Tanh": ({}, np.tanh, 8),
    "Erf": ({}, _erf, 8),
    "Sigmoid": ({}, lambda x: 1 / (1 + np.exp(-x)), 8),
    "Softmax": ({"axis": -1}, _softmax, 16),
    "Gelu": ({}, lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))), 8),
    "Gelu_tanh": ({"approximate": "tanh"}, _gelu_tanh, 8),
}
GELUS = ("Gelu", "Gelu_tanh")
"""``0.5 x (1 + erf(..))`` cancels for negative ``x`` in any float32 evaluation (ORT's too): their
error is bounded by eps of ``|x|``, not of the result."""


def _one_op_model(op: str, attrs: dict, shape: tuple[int, ...]):
    node = helper.make_node(op.split("_")[0], ["x"], ["y"], name="op", **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


@pytest.mark.parametrize("op", CASES)
def test_fast_forms_stay_within_float_rounding(op):
    attrs, reference, ulps = CASES[op]
    shape = (4, 256)
    model = lutc.build(_one_op_model(op, attrs, shape), "x86")
    x = np.random.default_rng(0).uniform(-12, 12, shape).astype(np.float32)
    x[0, :8] = [0.0, 1e-30, -1e-7, 3e-4, -90.0, 90.0, 9.5, -9.5]  # zero, tiny, the clamps
    y = model(x=x).astype(np.float64)
    expected = reference(x.astype(np.float64)).astype(np.float32).astype(np.float64)  # exp(90): inf
    scale = np.abs(expected) + (np.abs(x) if op in GELUS else 0.0)
    error = np.where(y == expected, 0.0, np.abs(y - expected))  # inf == inf
    assert np.all(error <= ulps * EPS32 * scale + 1e-38)  # exp clamps below -88.38 (4e-39)


def test_no_libm_exp_is_called():
    """The vectorized loop calls no scalar ``expf`` (TVM's plain lowering calls it once per lane)."""
    model = lutc.build(_one_op_model("Sigmoid", {}, (4, 256)), "x86")
    ir = generated_source(model._executable.mod, "llvm")
    assert "define" in ir
    assert "expf" not in ir and "llvm.exp." not in ir


@pytest.mark.parametrize("exponent", [2.0, 3.0])
def test_square_and_cube_are_products(exponent):
    """``Pow(x, 2)`` (RMSNorm; LLVM makes that one a product by itself) and ``Pow(x, 3)`` (GPT-2's
    gelu_new) call no ``powf``; ``x * x (* x)`` rounds once per product, as ONNX Runtime's: within
    2 float32 eps of the float64 power."""
    shape = (4, 256)
    graph = helper.make_graph(
        [helper.make_node("Pow", ["x", "e"], ["y"], name="op")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [helper.make_tensor("e", TensorProto.FLOAT, [], [exponent])],
    )  # fmt: skip
    model = lutc.build(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), "x86")
    ir = generated_source(model._executable.mod, "llvm")
    assert "define" in ir and "powf" not in ir and "llvm.pow." not in ir
    x = np.random.default_rng(0).uniform(-12, 12, shape).astype(np.float32)
    expected = x.astype(np.float64) ** exponent
    np.testing.assert_allclose(model(x=x), expected, rtol=2 * EPS32, atol=0)
