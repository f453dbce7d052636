"""The float32 matmul schedule rule (``lutc.schedules.cpu.FloatMatmul``): applies, and matches ORT.

Tolerance: two float32 sums of the same K terms in different orders differ by about
``sqrt(K) * eps * |terms|`` typically and ``K * eps * sum |terms|`` at worst (eps = 2**-24). With
standard-normal inputs the outputs are ~sqrt(K) in size; ``rtol = atol = 4 * K * eps`` (6e-5 at
K = 256) covers the typical difference with margin, while one wrong element, a wrong layout or a
lost bias is an O(1) error.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
import tvm.testing
from lutc.schedules.cpu import FloatMatmul
from lutc.schedules.cpu.float_matmul import MARK, choose_tile
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import lutc
from lutc.backend import cpu as pipeline
from lutc.builder import BuildOptions, lut_module
from lutc.targets import resolve_target

EPS = float(np.finfo(np.float32).eps) / 2


def float_model(k: int, n: int, m: int | None = None, gemm: bool = False) -> onnx.ModelProto:
    """``Y = A @ W`` (MatMul, W[K, N]) or ``Y = A @ W^T + C`` (Gemm transB=1, W[N, K], bias C)."""
    rng = np.random.default_rng(k * n)
    w = rng.standard_normal((n, k) if gemm else (k, n)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W")]
    if gemm:
        inits.append(numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "C"))
        node = helper.make_node("Gemm", ["A", "W", "C"], ["Y"], transB=1)
    else:
        node = helper.make_node("MatMul", ["A", "W"], ["Y"])
    rows = m if m is not None else "batch"
    graph = helper.make_graph(
        [node],
        "float_matmul",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [rows, k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [rows, n])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def lm_head_model(k: int, n: int, seq: int | str = "seq") -> onnx.ModelProto:
    """``Y = Relu([1, seq, K] @ Transpose(W[N, K]))``: a tied LM head's layout, with a fused epilogue."""
    w = np.random.default_rng(n).standard_normal((n, k)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["W"], ["Wt"], perm=[1, 0]),
        helper.make_node("MatMul", ["A", "Wt"], ["H"]),
        helper.make_node("Relu", ["H"], ["Y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "lm_head",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, seq, k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, seq, n])],
        [numpy_helper.from_array(w, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def ort_reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"A": x})[0]


def scheduled_kernels(model: onnx.ModelProto) -> tuple[list[tvm.tirx.PrimFunc], str]:
    """The PrimFuncs ``main`` calls after lutc's default-schedule and weight phases on ``x86``, and
    ``main``'s text (a weight's repack, lifted out of ``main``, runs once in ``main_transform_params``)."""
    mod, _ = lut_module(model, BuildOptions())
    target = resolve_target("x86")
    with target:
        passes = [*pipeline.lift_passes(), *pipeline.legalize_passes(target), *pipeline.default_schedule_passes(target)]
        passes += pipeline.weight_passes()
        mod = tvm.transform.Sequential([*passes, relax.transform.DeadCodeElimination()])(mod)
    called = [mod[gvar] for gvar in relax.analysis.all_global_vars(mod["main"])]
    return [f for f in called if isinstance(f, tvm.tirx.PrimFunc)], mod["main"].script()


@pytest.mark.parametrize(
    ("k", "n", "m", "gemm"),
    [(256, 768, None, False), (256, 768, 16, True), (128, 512, 7, True), (512, 256, 1, False), (96, 40, 3, False)],
)
def test_build_matches_ort(k: int, n: int, m: int | None, gemm: bool) -> None:
    """Static and dynamic M (ragged M padded), MatMul and Gemm with transB and bias, vs ORT."""
    model = float_model(k, n, m, gemm)
    compiled = lutc.build(model, target="x86", threads=1)
    for rows in [m] if m is not None else [1, 5, 16]:
        x = np.random.default_rng(rows).standard_normal((rows, k)).astype(np.float32)
        tol = 4 * k * EPS
        tvm.testing.assert_allclose(compiled(A=x), ort_reference(model, x), rtol=tol, atol=tol)


@pytest.mark.parametrize("seq", ["seq", 7])
def test_transposed_constant_weight_with_epilogue(seq: int | str) -> None:
    """``MatMul(x, Transpose(W))`` + Relu on a [1, seq, K] input: one packed kernel, matching ORT."""
    model = lm_head_model(128, 256, seq)
    (kernel,), main = scheduled_kernels(model)
    assert main.count("R.call_tir") == 1 and MARK in kernel.script()
    compiled = lutc.build(model, target="x86", threads=1)
    x = np.random.default_rng(0).standard_normal((1, 7, 128)).astype(np.float32)
    tol = 4 * 128 * EPS
    tvm.testing.assert_allclose(compiled(A=x), ort_reference(model, x), rtol=tol, atol=tol)


@pytest.mark.parametrize(("m", "gemm"), [(None, False), (16, True), (1, False)])
def test_rule_applies_and_packs_the_constant_weight(m: int | None, gemm: bool) -> None:
    """The matmul kernel carries the rule's mark, reads a [N / cols, K, cols] weight, and no repack runs per call."""
    (kernel,), main = scheduled_kernels(float_model(256, 768, m, gemm))
    assert main.count("R.call_tir") == 1  # the weight repack runs once, out of main
    text = kernel.script()
    assert MARK in text and "packed" in text
    assert "T.vectorized" in text and "T.parallel" in text


def test_rule_declines_what_it_does_not_take() -> None:
    """N not a whole number of vectors: the rule returns None (the kernel keeps its old path)."""
    mod, _ = lut_module(float_model(64, 20, 4), BuildOptions())
    target = resolve_target("x86")
    with target:
        mod = tvm.transform.Sequential(pipeline.legalize_passes(target))(mod)
    funcs = [f for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert funcs and all(FloatMatmul().apply(f, target, False) is None for f in funcs)


def test_tile_follows_the_target_vector_width() -> None:
    """AVX2 (x86-64-v3): 8 lanes, 4 x 24 tiles; AVX-512: 16 lanes, 8-row tiles; one row for dynamic M."""
    from lutc.schedules.hw import float_lanes, vector_registers

    avx2, avx512 = resolve_target("x86-avx2"), resolve_target("x86-avx512")
    assert (float_lanes(avx2), vector_registers(avx2)) == (8, 16)
    assert (float_lanes(avx512), vector_registers(avx512)) == (16, 32)
    tile = choose_tile(16, 768, 8, 16)
    assert (tile.rows, tile.cols, tile.pad) == (4, 24, False)
    assert choose_tile(16, 768, 16, 32).rows == 8
    dynamic = choose_tile(tvm.tirx.Var("m", "int64"), 768, 8, 16)
    assert (dynamic.rows, dynamic.panel) == (1, 24) and dynamic.cols % dynamic.panel == 0


def test_float_benchmark_smoke(tmp_path) -> None:
    """``python -m lutc.bench float`` on one tiny shape: checks pass, every call timed, table written."""
    import json

    from lutc.bench import main
    from lutc.bench.float_matmul import CALLS

    out = tmp_path / "out"
    argv = ["float", "--shapes", "64x64", "--m", "1", "3", "--static", "--repeat", "3", "--min-time", "0.01"]
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads((out / "float.json").read_text())
    assert report["machine"]["cpu_model"] and len(report["rows"]) == 4
    for row in report["rows"]:
        assert row["passed"] and set(row["times"]) == set(CALLS)
        assert all(0 < t["min_us"] <= t["median_us"] for t in row["times"].values())
    assert "| 64 x 64 | 3 | static | ok" in (out / "float.md").read_text()
