"""Models whose activations are float16 (onnxruntime-genai's ``-e cuda`` graphs): quantized
matmuls still run as LUT kernels (the activation converted to float32 before the table
precompute, the result written back as float16), and the contrib ops compute in float32 between
float16 inputs and outputs. Each one-node model against ONNX Runtime's CPU kernels on the same
float16 graph.

Tolerance: ORT computes these ops in float16 or rounds their intermediates to it (a float16 ulp
is 2**-10 of the value's binade: up to 9.8e-4 relative), lutc in float32 and rounds once at the
output; a few float16 ulps of the largest output, 4e-3, bounds the difference (measured below
2e-3). Fast mode adds its int8 table rounding (6e-2, as the corpus bound).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import lutc
from lutc.quant.onnx_convert import matmul_nbits_node
from lutc.zoo import nbits_arrays

MS = "com.microsoft"
RNG = np.random.default_rng(0)
BOUND = {"exact": 4e-3, "fast": 6e-2}


def _model(nodes: list, inputs: dict, outputs: list[str], inits: list) -> onnx.ModelProto:
    value = lambda name, a: helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)  # noqa: E731
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT16, None) for o in outputs]
    graph = helper.make_graph(nodes, "fp16", [value(n, a) for n, a in inputs.items()], outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)])


def _check(model: onnx.ModelProto, inputs: dict, mode: str = "exact") -> lutc.CompiledModel:
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, inputs)
    compiled = lutc.build(model, target="llvm", mode=mode)
    got = compiled(**inputs)
    for g, w in zip(got if isinstance(got, tuple) else (got,), want, strict=True):
        assert g.dtype == np.float16 and g.shape == w.shape
        error = float(np.abs(g.astype(np.float32) - w.astype(np.float32)).max() / np.abs(w.astype(np.float32)).max())
        assert error <= BOUND[mode], error
    return compiled


@pytest.mark.parametrize("mode", ["exact", "fast"])
@pytest.mark.parametrize(("bits", "block"), [(4, 32), (2, 64)])
def test_matmul_nbits_on_float16_runs_as_a_lut_kernel(mode, bits, block):
    weight = (RNG.standard_normal((96, 128)) / np.sqrt(128)).astype(np.float32)
    arrays = nbits_arrays(weight, bits, block)
    arrays["scales"] = arrays["scales"].astype(np.float16)
    node, inits = matmul_nbits_node("proj", "x", "y", arrays, bias=None)
    x = RNG.standard_normal((2, 5, 128)).astype(np.float16)
    compiled = _check(_model([node], {"x": x}, ["y"], inits), {"x": x}, mode)
    assert compiled.decisions["proj"].startswith("lut")


def test_group_query_attention_on_float16():
    feeds = {n: RNG.standard_normal((1, 3, w)).astype(np.float16) for n, w in (("q", 64), ("k", 32), ("v", 32))}
    feeds |= {n: RNG.standard_normal((1, 2, 4, 16)).astype(np.float16) for n in ("pk", "pv")}
    feeds |= {"seqlens_k": np.array([6], np.int32), "total": np.array(7, np.int32)}
    angles = np.arange(16)[:, None] / 10000 ** (np.arange(8)[None, :] / 8)
    caches = [numpy_helper.from_array(np.cos(angles).astype(np.float16), "cos"),
              numpy_helper.from_array(np.sin(angles).astype(np.float16), "sin")]  # fmt: skip
    node = helper.make_node("GroupQueryAttention", ["q", "k", "v", "pk", "pv", "seqlens_k", "total", "cos", "sin"],
                            ["y", "present_key", "present_value"], name="gqa", domain=MS, num_heads=4,
                            kv_num_heads=2, do_rotary=1, local_window_size=5, softcap=4.0)  # fmt: skip
    _check(_model([node], feeds, ["y", "present_key", "present_value"], caches), feeds)


def test_skip_simplified_layer_normalization_on_float16():
    x, skip = (RNG.standard_normal((2, 3, 64)).astype(np.float16) for _ in range(2))
    gamma = numpy_helper.from_array(RNG.standard_normal(64).astype(np.float16), "g")
    node = helper.make_node("SkipSimplifiedLayerNormalization", ["x", "skip", "g"], ["y", "", "", "sum"],
                            name="norm", domain=MS, epsilon=1e-6)  # fmt: skip
    _check(_model([node], {"x": x, "skip": skip}, ["y", "sum"], [gamma]), {"x": x, "skip": skip})
