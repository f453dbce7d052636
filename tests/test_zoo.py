"""The synthetic models of ``lutc.zoo``: valid ONNX, run by ONNX Runtime, quantized and dequantized correctly.

lutc.build is not exercised here (its own tests compile zoo models).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from lutc import zoo

EPS32 = float(np.finfo(np.float32).eps)
HIDDEN, HEADS, INTER = 64, 4, 128
FP32_REL = 1e-5
"""Tolerance (relative to the output norm) between two fp32 evaluations of the same model.

ORT's ``MatMulNBits`` without ``accuracy_level`` dequantizes to exactly ``fl32(s * (q - z))``, lutc's
``dequantize`` (tests/test_onnx_convert.py), then runs an fp32 GEMM, as ``MatMul`` on the float
reference does; outputs are observed bit-identical. What may differ is GEMM accumulation order: per
dot product at most ``K * eps/2 * sum|x w|`` (``K <= 128`` here: 8e-6 of ``sum|x w|``), typically
``sqrt(K) * eps/2`` (7e-7). 1e-5 of the output norm covers the typical case with a 10x margin.
"""
NO_QDQ_FUSION_INT8 = {"session.qdq_matmulnbits_accuracy_level": "0"}
"""ORT fuses DequantizeLinear -> MatMul into MatMulNBits with accuracy_level 4 (int8 activations,
~1e-2 error) by default; level 0 keeps fp32 activations, comparable with the float reference."""


def _run(model: onnx.ModelProto, feeds: dict, config: dict | None = None) -> np.ndarray:
    opts = ort.SessionOptions()
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, value)
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def decoder() -> onnx.ModelProto:
    return zoo.float_decoder_block(HIDDEN, HEADS, INTER)


@pytest.fixture(scope="module")
def mlp() -> onnx.ModelProto:
    return zoo.float_mlp(HIDDEN, INTER, layers=3)


def _weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of MatMul nodes whose B is a 2-D float32 initializer."""
    floats = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in floats]


# ---------------------------------------------------------------------------- builders


@pytest.mark.parametrize(
    "build",
    [
        lambda: zoo.float_mlp(HIDDEN, INTER),
        lambda: zoo.float_mlp(HIDDEN, INTER, layers=1),
        lambda: zoo.float_decoder_block(HIDDEN, HEADS, INTER),
        lambda: zoo.float_decoder_block(HIDDEN, HEADS, INTER, rotary=False, causal=False),
        lambda: zoo.single_matmul_nbits(128, 96, 2, 32),
        lambda: zoo.single_matmul_nbits(128, 96, 4, 64, symmetric=False, bias=True),
        lambda: zoo.single_matmul_nbits(128, 96, 8, 32, bias=True),
    ],
    ids=["mlp", "mlp1", "decoder", "decoder-plain", "nbits2", "nbits4-asym-bias", "nbits8"],
)
def test_builders_are_valid_deterministic_and_run(build) -> None:
    model = build()
    onnx.checker.check_model(model, full_check=True)
    assert all(node.name for node in model.graph.node)
    assert model.SerializeToString() == build().SerializeToString()
    for batch, seq in ((1, 1), (2, 5)):
        feeds = zoo.decoder_inputs(model, batch, seq, seed=seq)
        y = _run(model, feeds)
        assert y.shape[:2] == (batch, seq) and np.isfinite(y).all()
        assert 0.1 < np.sqrt(np.mean(y**2)) < 10  # O(1) outputs


def test_seed_changes_weights() -> None:
    a, b = zoo.float_mlp(HIDDEN, INTER, seed=0), zoo.float_mlp(HIDDEN, INTER, seed=1)
    assert a.SerializeToString() != b.SerializeToString()


def _numpy_decoder(model: onnx.ModelProto, x: np.ndarray, rotary: bool, causal: bool) -> np.ndarray:
    """The decoder block in float64 numpy, from the model's own initializers."""
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    batch, seq, hidden = x.shape
    hd = hidden // HEADS

    def rms(h: np.ndarray, prefix: str) -> np.ndarray:
        return h / np.sqrt((h * h).mean(-1, keepdims=True) + 1e-5) * w[f"{prefix}.weight"]

    def rotate(t: np.ndarray) -> np.ndarray:
        angles = np.outer(np.arange(seq), 10000.0 ** (-np.arange(0, hd, 2) / hd))
        angles = np.concatenate([angles, angles], 1)
        return t * np.cos(angles) + np.concatenate([-t[..., hd // 2 :], t[..., : hd // 2]], -1) * np.sin(angles)

    n = rms(x, "attn_norm")
    q, k, v = ((n @ w[f"{p}_proj.weight"]).reshape(batch, seq, HEADS, hd).transpose(0, 2, 1, 3) for p in "qkv")
    q, k = (rotate(q), rotate(k)) if rotary else (q, k)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
    if causal:
        scores = np.where(np.tril(np.ones((seq, seq), bool)), scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    ctx = (p / p.sum(-1, keepdims=True) @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
    h = x + ctx @ w["o_proj.weight"]
    n2 = rms(h, "mlp_norm")
    gate, up = n2 @ w["gate_proj.weight"], n2 @ w["up_proj.weight"]
    return h + (gate / (1 + np.exp(-gate)) * up) @ w["down_proj.weight"]


@pytest.mark.parametrize("rotary,causal", [(True, True), (False, False), (True, False)])
def test_decoder_block_computes_llama_block(rotary: bool, causal: bool) -> None:
    """ORT on the ONNX graph = a float64 numpy Llama block: rotary, causal mask and heads are wired right.

    Tolerance: fp32 through 7 matmuls (K <= 128), 2 norms and a softmax on O(1) values, ~1e-6
    relative; 1e-4 absolute leaves room without hiding a wiring error (those are O(1)).
    """
    model = zoo.float_decoder_block(HIDDEN, HEADS, INTER, rotary=rotary, causal=causal)
    x = zoo.decoder_inputs(model, 2, 9, seed=3)["x"]
    np.testing.assert_allclose(_run(model, {"x": x}), _numpy_decoder(model, x.astype(np.float64), rotary, causal),
                               rtol=0, atol=1e-4)  # fmt: skip


def test_decoder_rejects_bad_heads() -> None:
    with pytest.raises(ValueError, match="heads"):
        zoo.float_decoder_block(64, 5, 128)


# ---------------------------------------------------------------------------- quantize_matmuls


@pytest.mark.parametrize("form,bits", [("nbits", 1), ("nbits", 2), ("nbits", 3), ("nbits", 4), ("nbits", 8),
                                       ("qdq", 2), ("qdq", 4)])  # fmt: skip
def test_quantize_matmuls_replaces_every_weight_matmul(decoder: onnx.ModelProto, form: str, bits: int) -> None:
    eligible = _weight_matmuls(decoder)
    assert len(eligible) == 7
    q = zoo.quantize_matmuls(decoder, bits, 32, form=form)
    onnx.checker.check_model(q, full_check=True)
    assert _weight_matmuls(q) == []
    if form == "nbits":
        nbits = {n.name: n for n in q.graph.node if n.op_type == "MatMulNBits"}
        assert sorted(nbits) == sorted(eligible)
        assert {a.i for n in nbits.values() for a in n.attribute if a.name == "bits"} == {bits}
    else:
        dq = [n.name for n in q.graph.node if n.op_type == "DequantizeLinear"]
        assert sorted(dq) == sorted(f"{name}_dq" for name in eligible)
        assert q.opset_import[0].version == zoo.QDQ_OPSET[bits]
    # activation-by-activation MatMuls (QK^T, attention x V) stay; float weights are gone
    assert {n.name for n in q.graph.node if n.op_type == "MatMul"} >= {"qk", "attn_ctx"}
    assert not any(t.name.endswith("_proj.weight") for t in q.graph.initializer)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_dequantized_reference_matches_nbits_in_ort(decoder, mlp, bits: int, symmetric: bool) -> None:
    for model in (decoder, mlp):
        q = zoo.quantize_matmuls(model, bits, 32, symmetric=symmetric)
        ref = zoo.dequantized_reference(q)
        assert not [n for n in ref.graph.node if n.domain == zoo.MS_DOMAIN]
        assert [o.domain for o in ref.opset_import] == [""]
        feeds = zoo.decoder_inputs(model, 2, 5, seed=bits)
        assert _rel(_run(q, feeds), _run(ref, feeds)) <= FP32_REL


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("symmetric", [True, False])
def test_dequantized_reference_matches_qdq_in_ort(decoder, bits: int, symmetric: bool) -> None:
    q = zoo.quantize_matmuls(decoder, bits, 32, symmetric=symmetric, form="qdq")
    ref = zoo.dequantized_reference(q)
    assert not [n for n in ref.graph.node if n.op_type == "DequantizeLinear"]
    feeds = zoo.decoder_inputs(decoder, 2, 5, seed=bits)
    assert _rel(_run(q, feeds, NO_QDQ_FUSION_INT8), _run(ref, feeds)) <= FP32_REL


def test_dequantized_reference_keeps_bias() -> None:
    """Single MatMulNBits with a bias: the reference is MatMul + Add, exact to the rigorous fp32 bound.

    Both sides compute ``x @ W`` with the same fp32 ``W``; two fp32 dot products of length K
    differ by at most ``2 * gamma_K * sum|x w|`` whatever the order; the bias Add is exact on both.
    """
    k = 128
    model = zoo.single_matmul_nbits(k, 64, 4, 32, symmetric=False, bias=True)
    ref = zoo.dequantized_reference(model)
    assert [n.op_type for n in ref.graph.node] == ["MatMul", "Add"]
    feeds = zoo.decoder_inputs(model, 3, 4, seed=1)
    w = numpy_helper.to_array(next(t for t in ref.graph.initializer if t.name.endswith(".dequantized")))
    gamma = k * EPS32 / 2 / (1 - k * EPS32 / 2)
    bound = 2 * gamma * (np.abs(feeds["A"]) @ np.abs(w)) + EPS32 * np.abs(_run(ref, feeds))
    assert np.all(np.abs(_run(model, feeds) - _run(ref, feeds)) <= bound)


def test_quantization_error_shrinks_with_bits(decoder) -> None:
    feeds = zoo.decoder_inputs(decoder, 1, 8)
    y = _run(decoder, feeds)
    delta = y - feeds["x"]  # the block's contribution, without the residual
    errors = [_rel(_run(zoo.quantize_matmuls(decoder, b, 32), feeds) - feeds["x"], delta) for b in (2, 4, 8)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.05


def test_quantize_matmuls_errors(decoder) -> None:
    with pytest.raises(ValueError, match="2- and 4-bit"):
        zoo.quantize_matmuls(decoder, 3, 32, form="qdq")
    with pytest.raises(ValueError, match="form"):
        zoo.quantize_matmuls(decoder, 4, 32, form="gptq")
    with pytest.raises(ValueError, match="multiple of block_size"):
        zoo.quantize_matmuls(zoo.float_mlp(48, 64), 4, 32)


# ---------------------------------------------------------------------------- ORT's quantizer


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantize_with_ort_matches_its_reference(decoder, bits: int) -> None:
    pytest.importorskip("onnx_ir", reason="ORT's MatMulNBitsQuantizer imports onnx_ir")
    q = zoo.quantize_with_ort(decoder, bits, 32, symmetric=True)
    assert len([n for n in q.graph.node if n.op_type == "MatMulNBits"]) == 7
    assert _weight_matmuls(q) == []
    feeds = zoo.decoder_inputs(decoder, 2, 5)
    assert _rel(_run(q, feeds), _run(zoo.dequantized_reference(q), feeds)) <= FP32_REL


def test_decoder_inputs_shapes(decoder) -> None:
    feeds = zoo.decoder_inputs(decoder, 3, 4, seed=7)
    assert list(feeds) == ["x"] and feeds["x"].shape == (3, 4, HIDDEN) and feeds["x"].dtype == np.float32
    np.testing.assert_array_equal(feeds["x"], zoo.decoder_inputs(decoder, 3, 4, seed=7)["x"])
