"""lutc.build end to end: ONNX models in, outputs checked against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import random_weights
from onnx import TensorProto, helper, numpy_helper

import lutc
from lutc import zoo
from lutc.errors import InputError, LutcError, ModelError
from lutc.quant import IntFormat, quantize
from lutc.quant.onnx_convert import to_matmul_nbits

K, N = 256, 72


def _nbits_model(bits: int, block: int, symmetric: bool = True, bias: bool = False, seed: int = 0):
    """One MatMulNBits node, A[batch, seq, K] -> Y, and its float32 [N, K] weight."""
    rng = np.random.default_rng(seed)
    w = random_weights(rng, N, K)
    qw = quantize(w, IntFormat(bits, block, symmetric=symmetric))
    arrays = to_matmul_nbits(qw)
    dequantized = lutc.quant.dequantize(qw)
    inits = [numpy_helper.from_array(arrays["b"], "B"), numpy_helper.from_array(arrays["scales"], "scales")]
    inputs = ["A", "B", "scales"]
    if arrays["zero_points"] is not None:
        inits.append(numpy_helper.from_array(arrays["zero_points"], "zp"))
        inputs.append("zp")
    if bias:
        inputs += [""] * (5 - len(inputs)) + ["bias"]
        inits.append(numpy_helper.from_array(rng.standard_normal(N).astype(np.float32), "bias"))
    node = helper.make_node(
        "MatMulNBits", inputs, ["Y"], name="proj", domain="com.microsoft", K=K, N=N, bits=bits, block_size=block
    )
    a = helper.make_tensor_value_info("A", TensorProto.FLOAT, ["batch", "seq", K])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", "seq", N])
    graph = helper.make_graph([node], "g", [a], [y], initializer=inits)
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets), dequantized


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _relative_error(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(y - ref) / np.linalg.norm(ref))


# Fast mode: int8 tables, ~1 % relative error (lutc.quant.lut docstring, measured 0.7-1.3 %).
# Exact mode: float32 rounding over K = 256 products, well under 1e-5 relative.
TOLERANCE = {"fast": 2e-2, "exact": 1e-5}


@pytest.mark.parametrize("mode", ["fast", "exact"])
@pytest.mark.parametrize(
    ("bits", "block", "symmetric"),
    [(2, 32, True), (2, 128, False), (4, 32, False), (4, 128, True), (8, 32, True), (8, 128, False)],
)
def test_matmul_nbits_runs_as_lut_kernel_and_matches_ort(bits, block, symmetric, mode):
    model, _ = _nbits_model(bits, block, symmetric, bias=True)
    compiled = lutc.build(model, "x86", mode=mode)
    if bits > 4 and mode == "exact":  # a float matmul: relay_passes.rewrite_quantized_matmul.EXACT_MAX_BITS
        assert compiled.decisions["proj"].startswith("dequantize path: exact mode")
    else:
        assert compiled.decisions["proj"].startswith(f"lut {mode}")
    x = np.random.default_rng(1).standard_normal((2, 5, K)).astype(np.float32)
    (ref,) = _ort(model, {"A": x})
    y = compiled(A=x)
    assert y.shape == (2, 5, N)
    assert _relative_error(y, ref) < TOLERANCE[mode]


def test_dynamic_sequence_length_and_positional_inputs():
    model, dequantized = _nbits_model(2, 64)
    compiled = lutc.build(model, "x86", mode="exact")
    for batch, seq in ((1, 1), (1, 7), (3, 2)):
        x = np.random.default_rng(seq).standard_normal((batch, seq, K)).astype(np.float32)
        ref = x @ dequantized.T
        assert _relative_error(compiled(x), ref) < TOLERANCE["exact"]


def test_export_and_load_give_identical_outputs(tmp_path):
    model, _ = _nbits_model(4, 32, symmetric=False)
    compiled = lutc.build(model, "x86")
    x = np.random.default_rng(2).standard_normal((1, 4, K)).astype(np.float32)
    path = compiled.export_library(tmp_path / "model.so")
    loaded = lutc.load(path)
    np.testing.assert_array_equal(loaded(A=x), compiled(A=x))
    assert loaded.decisions == compiled.decisions and loaded.inputs == compiled.inputs


def test_keep_dequantize_option():
    model, _ = _nbits_model(2, 32)
    compiled = lutc.build(model, "x86", keep_dequantize=("proj",))
    assert compiled.decisions == {"proj": "dequantize path: kept by request"}


def test_build_time_quantization_of_a_float_model():
    rng = np.random.default_rng(3)
    w = random_weights(rng, N, K)
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N])],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(w.T), "w")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    compiled = lutc.build(model, "x86", quantize="w4g64", mode="exact")
    assert compiled.decisions["fc"] == "lut exact w4g64 symmetrized"
    x = rng.standard_normal((1, K)).astype(np.float32)
    expected = x @ lutc.quant.dequantize(quantize(w, IntFormat(4, 64))).T
    assert _relative_error(compiled(x=x), expected) < TOLERANCE["exact"]


def test_build_time_quantization_takes_a_tied_lm_head():
    """``MatMul(x, Transpose(embedding))``, as GPT-2 and tied-embedding LLMs export their lm_head."""
    rng = np.random.default_rng(4)
    emb = random_weights(rng, N, K)  # [vocab, hidden]: the lm_head weight in lutc's [N, K] orientation
    nodes = [
        helper.make_node("Transpose", ["emb"], ["emb_t"], name="tie", perm=[1, 0]),
        helper.make_node("MatMul", ["x", "emb_t"], ["y"], name="lm_head"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N])],
        initializer=[numpy_helper.from_array(emb, "emb")],
    )  # fmt: skip
    compiled = lutc.build(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), "x86",
                          quantize="w4g64", mode="exact")  # fmt: skip
    assert compiled.decisions == {"lm_head": "lut exact w4g64 symmetrized"}
    x = rng.standard_normal((1, K)).astype(np.float32)
    expected = x @ lutc.quant.dequantize(quantize(emb, IntFormat(4, 64))).T
    assert _relative_error(compiled(x=x), expected) < TOLERANCE["exact"]


# ---- bad input ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_model():
    model, _ = _nbits_model(2, 32)
    return lutc.build(model, "x86")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m(np.zeros((1, 2, K + 1), np.float32)), r"input 'A' has shape \(1, 2, 257\)"),
        (lambda m: m(np.zeros((1, 2, K), np.float64)), "input 'A' has dtype float64"),
        (lambda m: m(B=np.zeros((1, 2, K), np.float32)), r"unknown input names \['B'\]"),
        (lambda m: m(), r"missing inputs \['A'\]"),
        (lambda m: m([[0.0]]), "must be a numpy array"),
    ],
)
def test_wrong_inputs_are_named(small_model, call, message):
    with pytest.raises(InputError, match=message):
        call(small_model)


def test_unwritable_export_path(small_model, tmp_path):
    with pytest.raises(LutcError, match="not a writable directory"):
        small_model.export_library(tmp_path / "missing" / "model.so")


def test_corrupt_and_truncated_files(tmp_path):
    model, _ = _nbits_model(2, 32)
    data = model.SerializeToString()
    (tmp_path / "truncated.onnx").write_bytes(data[: len(data) // 3])
    (tmp_path / "garbage.onnx").write_bytes(b"\x00\xff not an onnx model" * 10)
    for name in ("truncated.onnx", "garbage.onnx"):
        with pytest.raises(ModelError, match=name):
            lutc.build(tmp_path / name)
    with pytest.raises(ModelError, match="no ONNX model at"):
        lutc.build(tmp_path / "absent.onnx")


def test_old_opset_names_the_fix():
    model, _ = _nbits_model(2, 32)
    model.opset_import[0].version = 9
    with pytest.raises(ModelError, match=r"opset 9.*version_converter"):
        lutc.build(model)


def test_unsupported_ops_are_listed_with_node_names():
    model, _ = _nbits_model(2, 32)
    model.graph.node.append(helper.make_node("FancyOp", ["Y"], ["Z"], name="mystery", domain="com.example"))
    model.graph.node.append(helper.make_node("PagedAttention", ["Y"], ["W"], name="paged", domain="com.microsoft"))
    expected = r"FancyOp \(mystery: custom domain 'com\.example'\).*PagedAttention \(paged: ONNX Runtime contrib"
    with pytest.raises(ModelError, match=expected):
        lutc.build(model)


def test_model_without_quantized_matmul_compiles_with_a_note():
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )  # fmt: skip
    compiled = lutc.build(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]))
    assert "no quantized matmul" in compiled.summary()
    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    np.testing.assert_array_equal(compiled(x), np.maximum(x, 0))


# ---- whole models from the zoo -------------------------------------------------------------

HIDDEN, HEADS, INTERMEDIATE = 256, 4, 512


@pytest.fixture(scope="module")
def decoder():
    from lutc import zoo

    return zoo.float_decoder_block(HIDDEN, HEADS, INTERMEDIATE, rotary=True, seed=0)


def _check_model(quantized: onnx.ModelProto, mode: str, seqs=((1, 1), (2, 5))) -> lutc.CompiledModel:
    """lutc on the quantized model vs ORT on the same model with dequantized float weights."""
    from lutc import zoo

    compiled = lutc.build(quantized, "x86", mode=mode)
    reference = zoo.dequantized_reference(quantized)
    for batch, seq in seqs:
        feeds = zoo.decoder_inputs(quantized, batch, seq, seed=seq)
        ref = _ort(reference, feeds)[0]
        assert _relative_error(compiled(**feeds), ref) < TOLERANCE[mode], (batch, seq)
    return compiled


@pytest.mark.parametrize(
    ("bits", "block", "symmetric", "mode"),
    [(2, 32, True, "fast"), (2, 128, False, "exact"), (4, 32, False, "fast"), (4, 128, True, "exact")],
)
def test_llama_decoder_block_matmul_nbits(decoder, bits, block, symmetric, mode):
    from lutc import zoo

    quantized = zoo.quantize_matmuls(decoder, bits, block, symmetric=symmetric, form="nbits")
    compiled = _check_model(quantized, mode)
    assert sum(d.startswith("lut") for d in compiled.decisions.values()) == 7


@pytest.mark.parametrize(("bits", "block"), [(2, 64), (4, 128)])
def test_llama_decoder_block_qdq_form(decoder, bits, block):
    from lutc import zoo

    quantized = zoo.quantize_matmuls(decoder, bits, block, symmetric=False, form="qdq")
    compiled = _check_model(quantized, "fast")
    assert sum(d.startswith("lut") for d in compiled.decisions.values()) == 7


def test_mlp_quantized_by_onnxruntime():
    pytest.importorskip("onnx_ir", reason="onnxruntime's MatMulNBitsQuantizer needs onnx-ir")
    from lutc import zoo

    quantized = zoo.quantize_with_ort(zoo.float_mlp(HIDDEN, INTERMEDIATE, layers=2), 4, 32)
    compiled = lutc.build(quantized, "x86", mode="exact")
    assert sum(d.startswith("lut") for d in compiled.decisions.values()) == 2
    feeds = zoo.decoder_inputs(quantized, 2, 3)
    ref = _ort(quantized, feeds)[0]
    assert _relative_error(compiled(**feeds), ref) < 1e-5


def test_mixed_precision_model_compiles_whole(decoder):
    """8-bit projections run as LUT kernels of eight planes, like the 1-4 bit ones."""
    from lutc import zoo

    quantized = zoo.quantize_matmuls(decoder, 8, 32)
    compiled = _check_model(quantized, "fast", seqs=((1, 3),))
    assert all(d == "lut fast w8g32 float16 scales" for d in compiled.decisions.values()), compiled.decisions


@pytest.mark.parametrize("target", ["llvm", "x86-avx2", {"kind": "llvm", "mcpu": "x86-64-v3"}])
def test_other_cpu_targets(target):
    model, dequantized = _nbits_model(2, 32)
    compiled = lutc.build(model, target, mode="exact")
    x = np.random.default_rng(4).standard_normal((1, 2, K)).astype(np.float32)
    assert _relative_error(compiled(x), x @ dequantized.T) < TOLERANCE["exact"]


def test_tvm_compile_failure_is_a_lutc_error(monkeypatch):
    import tvm

    def fail(*_args, **_kwargs):
        raise tvm.error.InternalError("Check failed: (VarRemapGet(source) == nullptr) is false:\nStack trace: ...")

    monkeypatch.setattr(tvm, "compile", fail)
    model, _ = _nbits_model(2, 32)
    with pytest.raises(lutc.errors.CompileError, match=r"InternalError: Check failed: \(VarRemapGet") as info:
        lutc.build(model)
    assert "Stack trace" not in str(info.value)


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [("proj", ValueError, "tuple of node names"), (("porj",), ModelError, r"names \['porj'\], which are not")],
)
def test_keep_dequantize_names_are_checked(value, error, message):
    model, _ = _nbits_model(2, 32)
    with pytest.raises(error, match=message):
        lutc.build(model, keep_dequantize=value)


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_subnormal_and_near_overflow_activations_match_ort(mode):
    """Rows whose largest |x| is 1e-42, 1e-38, 1, 1e30 and (sparse, so the product stays finite)
    3e38 are as accurate as a normal row; subnormal results add their own rounding (one
    subnormal step per weight group and output)."""
    model = zoo.single_matmul_nbits(K, 64, bits=4, block_size=32, symmetric=False)
    compiled = lutc.build(model, "x86", mode=mode)
    v = np.random.default_rng(2).standard_normal(K)
    v /= np.abs(v).max()
    sparse = np.zeros(K)
    sparse[:2] = v[:2] / np.abs(v[:2]).max()
    rows = np.array([v * 1e-42, v * 1e-38, v, v * 1e30, sparse * 3e38]).astype(np.float32)
    x = rows[None]
    (ref,) = _ort(model, {"A": x})
    y = compiled(A=x)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(ref))
    subnormal = np.sqrt(64) * (K // 32 + 1) * 2.0**-149
    for row in range(5):
        error = np.linalg.norm(y[0, row] - ref[0, row])
        assert error <= TOLERANCE[mode] * np.linalg.norm(ref[0, row]) + subnormal, row
