"""The table precompute with its activation's RMSNorm folded in (``LutcFuseNormPrecompute``).

The kernel is checked against ``lutc.quant.lut.precompute`` of a float64 RMSNorm, the pass on
ONNX Runtime's norms feeding ``MatMulNBits`` against ONNX Runtime. Tolerances: the kernel's
norm is float32 (a sum of K squares, a reciprocal square root), a few ulps from the float64
one, so float tables agree to ``1e-5`` of the row's magnitude and int8 tables round to the same
value or its neighbour at a tie; end to end, exact mode stays within ``TOLERANCE["exact"]``
of ``test_build`` (float32 rounding over K products).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from conftest import random_weights
from lutc.schedules import schedule
from onnx import TensorProto, helper, numpy_helper

import lutc
from lutc.builder import BuildOptions, lut_module
from lutc.kernels import KernelSpec
from lutc.kernels.precompute import NORM_ATTR, FusedNorm, lut_precompute
from lutc.quant import IntFormat, LutConfig, precompute, quantize
from lutc.quant.onnx_convert import to_matmul_nbits
from lutc.targets import resolve_target

EPS = 1e-6


def _run_kernel(spec: KernelSpec, norm: FusedNorm, inputs: list[np.ndarray]) -> list[np.ndarray]:
    target = resolve_target("x86")
    func = schedule(lut_precompute(spec, norm), target).mod["main"].with_attr("global_symbol", "main")
    kernel = tvm.tirx.build(tvm.IRModule({"main": func}), target=target)["main"]
    m = inputs[0].shape[0]
    shapes = [((m, spec.table_groups, spec.entries), spec.table_dtype), ((m, spec.n_groups), "float32"),
              ((m, spec.n_groups), "float32"), ((m,), "float32")]  # fmt: skip
    outs = [tvm.runtime.tensor(np.zeros(shape, dtype)) for shape, dtype in shapes]
    kernel(*[tvm.runtime.tensor(a) for a in inputs], *outs)
    return [o.numpy() for o in outs]


@pytest.mark.parametrize("mode", ["fast", "exact"])
@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize(("m", "fmt"), [(1, IntFormat(2, 32)), (3, IntFormat(2, "channel"))])
def test_fused_norm_precompute_equals_the_reference_of_the_normed_rows(mode, skip, m, fmt):
    k = 256 if fmt.group_size == 32 else 250  # per-channel: K padded
    spec = KernelSpec(m, 8, k, fmt, mode=mode, half_tables=mode == "exact")
    rng = np.random.default_rng(m)
    x, other = rng.standard_normal((2, m, spec.k)).astype(np.float32) * 3
    weight = rng.standard_normal(spec.k).astype(np.float32)
    inputs = [x, other, weight] if skip else [x, weight]
    tables, lut_scale, xsum, row_scale = _run_kernel(spec, FusedNorm(EPS, skip), inputs)
    normed = FusedNorm(EPS, skip).reference(x + other if skip else x, weight)
    ref = precompute(normed, spec.group_len, LutConfig(mode=mode, half_tables=spec.half_tables), spec.k_pad)
    magnitude = np.abs(normed).sum(-1)[:, None]
    np.testing.assert_array_equal(row_scale, ref.row_scale)
    np.testing.assert_allclose(xsum, ref.xsum, rtol=0, atol=1e-5 * magnitude.max())
    if mode == "exact":
        np.testing.assert_allclose(tables, ref.values, rtol=0, atol=1e-5 * magnitude.max())
        return
    assert np.abs(tables.astype(np.int32) - ref.values).max() <= 1
    assert np.mean(tables != ref.values) < 0.01
    np.testing.assert_allclose(lut_scale, ref.lut_scale, rtol=1e-5)


K, N = 128, 48


def _norm_matmul_model(skip: bool, normed_is_output: bool = False) -> onnx.ModelProto:
    """``[Skip]SimplifiedLayerNormalization -> MatMulNBits`` (4-bit, block 32), outputs ``Y`` (and
    the residual ``sum``; the normed ``y`` too when ``normed_is_output``)."""
    rng = np.random.default_rng(0)
    arrays = to_matmul_nbits(quantize(random_weights(rng, N, K), IntFormat(4, 32, symmetric=False)))
    inits = [numpy_helper.from_array(rng.standard_normal(K).astype(np.float32), "g"),
             numpy_helper.from_array(arrays["b"], "B"), numpy_helper.from_array(arrays["scales"], "scales"),
             numpy_helper.from_array(arrays["zero_points"], "zp")]  # fmt: skip
    if skip:
        norm = helper.make_node("SkipSimplifiedLayerNormalization", ["x", "skip", "g"], ["y", "", "", "sum"],
                                name="norm", domain="com.microsoft", epsilon=EPS)  # fmt: skip
    else:
        norm = helper.make_node("SimplifiedLayerNormalization", ["x", "g"], ["y"], name="norm", axis=-1, epsilon=EPS)
    matmul = helper.make_node("MatMulNBits", ["y", "B", "scales", "zp"], ["Y"], name="proj", domain="com.microsoft",
                              K=K, N=N, bits=4, block_size=32)  # fmt: skip
    value = lambda name, dim: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", "seq", dim])  # noqa: E731
    inputs = [value("x", K)] + ([value("skip", K)] if skip else [])
    outputs = [value("Y", N)] + ([value("sum", K)] if skip else []) + ([value("y", K)] if normed_is_output else [])
    graph = helper.make_graph([norm, matmul], "g", inputs, outputs, initializer=inits)
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def _fused_norms(model: onnx.ModelProto, fuse: bool = True) -> tuple[int, int]:
    """(rms_norm calls left, precompute kernels with a fused norm) after lutc's LUT passes."""
    mod, _ = lut_module(model, BuildOptions(fuse=fuse))
    text = mod["main"].script()
    fused = sum(1 for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc) and NORM_ATTR in f.attrs)
    return text.count("R.nn.rms_norm"), fused


@pytest.mark.parametrize("skip", [False, True])
def test_fuse_false_keeps_the_norm_its_own_kernel_with_the_same_result(skip):
    model = _norm_matmul_model(skip)
    assert _fused_norms(model, fuse=False) == (1, 0)
    rng = np.random.default_rng(2)
    feeds = {name: rng.standard_normal((2, 3, K)).astype(np.float32) for name in ("x", "skip")[: 1 + skip]}
    fused, unfused = (lutc.build(model, "x86", mode="exact", fuse=fuse)(**feeds) for fuse in (True, False))
    for a, b in zip(*(r if isinstance(r, tuple) else (r,) for r in (fused, unfused)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("normed_is_output", [False, True])
def test_norm_feeding_a_quantized_matmul_is_fused_and_matches_ort(skip, normed_is_output):
    model = _norm_matmul_model(skip, normed_is_output)
    assert _fused_norms(model) == ((1, 0) if normed_is_output else (0, 1))
    compiled = lutc.build(model, "x86", mode="exact")
    rng = np.random.default_rng(1)
    for batch, seq in ((1, 1), (2, 3)):
        feeds = {"x": rng.standard_normal((batch, seq, K)).astype(np.float32)}
        if skip:
            feeds["skip"] = rng.standard_normal((batch, seq, K)).astype(np.float32)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        want = session.run(None, feeds)
        got = compiled(**feeds)
        got = got if isinstance(got, (list, tuple)) else [got]
        y, ref = got[0], want[0]
        assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 1e-5
        for name, g, w in zip([o.name for o in model.graph.output][1:], got[1:], want[1:], strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=name)
