"""One-node models of the ONNX Runtime ops onnxruntime-genai's builder and ORT's transformer
optimizer emit, through lutc against ONNX Runtime's CPU kernels.

Float32 throughout: lutc and ORT compute the same sums in a different order, so outputs agree to
a few float32 ulps of their magnitude (``rtol=atol=1e-5``: norms over 64 values, rotations of 2).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import lutc
from lutc.errors import ModelError

MS = "com.microsoft"


def _model(node: onnx.NodeProto, inputs: dict[str, np.ndarray], inits: dict[str, np.ndarray], outputs: list[str]):
    value = lambda name, a: helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)  # noqa: E731
    graph = helper.make_graph(
        [node], "one", [value(n, a) for n, a in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def _check(node, inputs: dict, inits: dict, outputs: list[str]) -> None:
    model = _model(node, inputs, inits, outputs)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(outputs, inputs)
    got = lutc.build(model, target="llvm")(**inputs)
    got = got if isinstance(got, (list, tuple)) else [got]
    for name, g, w in zip(outputs, got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=name)


RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3, 64)).astype(np.float32)
SKIP = RNG.standard_normal((2, 3, 64)).astype(np.float32)
GAMMA = RNG.standard_normal(64).astype(np.float32)
BETA = RNG.standard_normal(64).astype(np.float32)
BIAS = RNG.standard_normal(64).astype(np.float32)


def test_simplified_layer_normalization():
    node = helper.make_node("SimplifiedLayerNormalization", ["x", "g"], ["y"], name="norm", axis=-1, epsilon=1e-6)
    _check(node, {"x": X}, {"g": GAMMA}, ["y"])


@pytest.mark.parametrize("with_bias", [False, True])
def test_skip_simplified_layer_normalization_and_its_sum(with_bias):
    ins = ["x", "skip", "g"] + (["b"] if with_bias else [])
    node = helper.make_node("SkipSimplifiedLayerNormalization", ins, ["y", "", "", "sum"], name="norm",
                            domain=MS, epsilon=1e-6)  # fmt: skip
    inits = {"g": GAMMA, **({"b": BIAS} if with_bias else {})}
    _check(node, {"x": X, "skip": SKIP}, inits, ["y", "sum"])


@pytest.mark.parametrize("with_beta_and_bias", [False, True])
def test_skip_layer_normalization_and_its_sum(with_beta_and_bias):
    ins = ["x", "skip", "g"] + (["beta", "b"] if with_beta_and_bias else [])
    node = helper.make_node("SkipLayerNormalization", ins, ["y", "", "", "sum"], name="norm", domain=MS, epsilon=1e-5)
    inits = {"g": GAMMA, **({"beta": BETA, "b": BIAS} if with_beta_and_bias else {})}
    _check(node, {"x": X, "skip": SKIP}, inits, ["y", "sum"])


def _caches(max_seq: int, half: int) -> dict[str, np.ndarray]:
    angles = np.arange(max_seq)[:, None] / 10000 ** (np.arange(half)[None, :] / half)
    return {"cos": np.cos(angles).astype(np.float32), "sin": np.sin(angles).astype(np.float32)}


@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("layout", ["BSD", "BNSH"])
@pytest.mark.parametrize("positions", ["offset", "ids"])
def test_rotary_embedding(interleaved, layout, positions):
    heads, head_size, seq = 4, 16, 3
    x = RNG.standard_normal((2, seq, heads * head_size) if layout == "BSD" else (2, heads, seq, head_size))
    pos = np.array([5], np.int64) if positions == "offset" else np.array([[0, 1, 2], [7, 8, 9]], np.int64)
    node = helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], name="rope", domain=MS,
                            interleaved=interleaved, **({"num_heads": heads} if layout == "BSD" else {}))  # fmt: skip
    _check(node, {"x": x.astype(np.float32), "pos": pos}, _caches(16, head_size // 2), ["y"])


def test_rotary_embedding_of_part_of_each_head():
    x = RNG.standard_normal((1, 2, 4 * 16)).astype(np.float32)
    node = helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], name="rope", domain=MS,
                            num_heads=4, rotary_embedding_dim=8)  # fmt: skip
    _check(node, {"x": x, "pos": np.array([0], np.int64)}, _caches(8, 4), ["y"])


def test_unsupported_rotary_attribute_names_the_node_and_attribute():
    node = helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], name="rope", domain=MS,
                            num_heads=4, is_packed_batching=1)  # fmt: skip
    model = _model(node, {"x": X, "pos": np.array([0], np.int64)}, _caches(8, 8), ["y"])
    with pytest.raises(ModelError, match=r"RotaryEmbedding node 'rope': .*is_packed_batching=1"):
        lutc.build(model, target="llvm")


def _gqa_feeds(batch: int, seq: int, past: int, packed: bool, heads=4, kv_heads=2, head_size=16) -> dict:
    width = (heads + 2 * kv_heads) * head_size
    qkv = RNG.standard_normal((batch, seq, width)).astype(np.float32)
    split = np.split(qkv, [heads * head_size, (heads + kv_heads) * head_size], axis=2)
    feeds = {"query": qkv} if packed else dict(zip(("query", "key", "value"), split, strict=True))
    if past:
        feeds |= {n: RNG.standard_normal((batch, kv_heads, past, head_size)).astype(np.float32) for n in ("pk", "pv")}
    feeds["seqlens_k"] = np.full(batch, past + seq - 1, np.int32)
    feeds["total"] = np.array(past + seq, np.int32)
    return feeds


def _gqa_node(feeds: dict, rotary: bool, **attrs) -> onnx.NodeProto:
    names = [n if n in feeds else "" for n in ("query", "key", "value", "pk", "pv")] + ["seqlens_k", "total"]
    names += ["cos", "sin"] if rotary else []
    names += [n for n in ("position_ids", "bias") if n in feeds]
    return helper.make_node("GroupQueryAttention", names, ["y", "present_key", "present_value"], name="gqa",
                            domain=MS, num_heads=4, kv_num_heads=2, do_rotary=int(rotary), **attrs)  # fmt: skip


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("rotary", ["none", "half", "interleaved"])
@pytest.mark.parametrize(("batch", "seq", "past"), [(2, 4, 0), (2, 1, 5), (1, 3, 4)])
def test_group_query_attention(packed, rotary, batch, seq, past):
    """Prompt, decode and a continued prompt (batch 1, as ORT requires) with a concatenated cache."""
    feeds = _gqa_feeds(batch, seq, past, packed)
    node = _gqa_node(feeds, rotary != "none", rotary_interleaved=int(rotary == "interleaved"))
    caches = _caches(16, 8) if rotary != "none" else {}
    _check(node, feeds, caches, ["y", "present_key", "present_value"])


def test_group_query_attention_with_scale_bias_and_position_ids():
    feeds = _gqa_feeds(1, 2, 3, packed=False)
    feeds["position_ids"] = np.array([[3, 4]], np.int64)
    feeds["bias"] = RNG.standard_normal((1, 4, 2, 5)).astype(np.float32)
    _check(_gqa_node(feeds, True, scale=0.3), feeds, _caches(16, 8), ["y", "present_key", "present_value"])


@pytest.mark.parametrize(("window", "softcap"), [(-1, 2.0), (1, 0.0), (3, 2.0), (6, 0.0)])
@pytest.mark.parametrize(("batch", "seq", "past"), [(2, 6, 0), (2, 1, 5), (1, 3, 4), (1, 1, 9)])
def test_group_query_attention_local_window_and_softcap(window, softcap, batch, seq, past):
    """Gemma-2/Phi-3 options on the concatenated cache: prompts and steps shorter and longer than
    the window (each query sees its last ``window`` keys), with and without a logit softcap
    small enough to bend the scores (2.0), rotary on and an attention bias added after the cap."""
    feeds = _gqa_feeds(batch, seq, past, packed=False)
    feeds["position_ids"] = np.broadcast_to(past + np.arange(seq), (batch, seq)).astype(np.int64)
    feeds["bias"] = RNG.standard_normal((batch, 4, seq, past + seq)).astype(np.float32)
    node = _gqa_node(feeds, True, local_window_size=window, softcap=softcap)
    _check(node, feeds, _caches(16, 8), ["y", "present_key", "present_value"])


@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize(("batch", "seq", "past"), [(2, 4, 0), (2, 1, 5)])
def test_group_query_attention_with_partial_rotary(interleaved, batch, seq, past):
    """Phi-4-mini's partial rotary: cos/sin caches narrower than half a head (16 of 32 dims rotate)."""
    feeds = _gqa_feeds(batch, seq, past, packed=True, head_size=32)
    node = _gqa_node(feeds, True, rotary_interleaved=interleaved)
    _check(node, feeds, _caches(16, 8), ["y", "present_key", "present_value"])


@pytest.mark.parametrize("window", [-1, 3])
@pytest.mark.parametrize(("batch", "seq", "past", "packed"), [(2, 4, 0, True), (2, 1, 5, False), (1, 3, 4, False)])
def test_group_query_attention_with_head_sinks(window, batch, seq, past, packed):
    """gpt-oss's attention sinks: one more logit per head in the softmax's denominator."""
    feeds = _gqa_feeds(batch, seq, past, packed)
    feeds["sink"] = 2 * RNG.standard_normal(4).astype(np.float32)
    names = [n if n in feeds else "" for n in ("query", "key", "value", "pk", "pv")] + ["seqlens_k", "total"]
    node = helper.make_node("GroupQueryAttention", [*names, "", "", "", "", "sink"], ["y", "present_key",
                            "present_value"], name="gqa", domain=MS, num_heads=4, kv_num_heads=2,
                            local_window_size=window)  # fmt: skip
    _check(node, feeds, {}, ["y", "present_key", "present_value"])


def _windowed_model(window: int, rotary: bool, capacity: int, extra: dict) -> onnx.ModelProto:
    """One GroupQueryAttention over a window-sized cache of ``capacity`` rows, the step length dynamic."""
    names = ["query", "key", "value", "pk", "pv", "seqlens_k", "total", *(["cos", "sin"] if rotary else [])]
    names += ["", "", "sink"] if "sink" in extra else []
    node = helper.make_node("GroupQueryAttention", names, ["y", "present_key", "present_value"], name="gqa", domain=MS,
                            num_heads=4, kv_num_heads=2, local_window_size=window, sliding_window_cache=1,
                            do_rotary=int(rotary), softcap=extra.get("softcap", 0.0))  # fmt: skip
    step = dict.fromkeys(("query", "key", "value"), None)
    inputs = {n: np.zeros((1, 1, w), np.float32) for n, w in (("query", 64), ("key", 32), ("value", 32))}
    inputs |= {n: np.zeros((1, 2, capacity, 16), np.float32) for n in ("pk", "pv")}
    inputs |= {"seqlens_k": np.zeros(1, np.int32), "total": np.array(1, np.int32)}
    inputs |= {"sink": extra["sink"]} if "sink" in extra else {}
    model = _model(node, inputs, _caches(64, 8) if rotary else {}, ["y", "present_key", "present_value"])
    for value in model.graph.input:
        if value.name in step or value.name in ("pk", "pv", "seqlens_k"):
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
        if value.name in step:
            value.type.tensor_type.shape.dim[1].dim_param = "seq"
    return model


def _resident(seen: int, capacity: int, window: int) -> int:
    """ORT's rows of a windowed cache that hold positions after ``seen`` of them."""
    reclaim = capacity - window + 1
    return seen if seen <= capacity else seen - reclaim * -(-(seen - capacity) // reclaim)


@pytest.mark.parametrize(("window", "capacity"), [(4, 4), (4, 6), (3, 8)])
@pytest.mark.parametrize("rotary", [False, True])
@pytest.mark.parametrize("batch", [1, 2])
def test_group_query_attention_windowed_cache_over_many_steps(window, capacity, rotary, batch):
    """Gemma-2's local layers: a window-sized cache that the op evicts itself. A prompt, single
    tokens and chunks (one longer than the cache) cross the eviction points; every step's output
    and the present's resident rows match ORT's (the rest of the buffer is unspecified)."""
    extra = {"softcap": 3.0, "sink": RNG.standard_normal(4).astype(np.float32)} if rotary else {}
    model = _windowed_model(window, rotary, capacity, extra)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    compiled = lutc.build(model, target="llvm")
    past = {n: np.zeros((batch, 2, capacity, 16), np.float32) for n in ("pk", "pv")}
    mine, seen = dict(past), 0
    chunks = (3, 1, 1, 1, 2, 1, 5, 1, 11, 1, 1) if batch == 1 else (5, *[1] * 12)  # ORT: chunks need batch 1
    for steps in chunks:
        seen += steps
        feeds = {n: RNG.standard_normal((batch, steps, w)).astype(np.float32) for n, w in
                 (("query", 64), ("key", 32), ("value", 32))}  # fmt: skip
        feeds |= {"seqlens_k": np.full(batch, seen - 1, np.int32), "total": np.array(seen, np.int32)}
        feeds |= {"sink": extra["sink"]} if "sink" in extra else {}
        want = session.run(None, feeds | past)
        got = compiled(**feeds, **mine)
        held = _resident(seen, capacity, window)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5, err_msg=f"y after {seen}")
        for g, w in zip(got[1:], want[1:], strict=True):
            np.testing.assert_allclose(g[:, :, :held], w[:, :, :held], rtol=1e-5, atol=1e-5, err_msg=f"after {seen}")
        past, mine = dict(zip(("pk", "pv"), want[1:], strict=True)), dict(zip(("pk", "pv"), got[1:], strict=True))


def test_windowed_cache_smaller_than_the_window_is_a_model_error():
    with pytest.raises(ModelError, match="at least local_window_size=4 rows; the past holds 3"):
        lutc.build(_windowed_model(4, False, 3, {}), target="llvm")


@pytest.mark.parametrize(
    ("attribute", "value"),
    [("local_window_size", 0), ("softcap", -1.0), ("smooth_softmax", 1), ("sliding_window_cache", 2)],
)
def test_unsupported_group_query_attention_attribute_names_the_node(attribute, value):
    feeds = _gqa_feeds(1, 1, 2, packed=True)
    model = _model(_gqa_node(feeds, False, **{attribute: value}), feeds, {}, ["y"])
    with pytest.raises(ModelError, match=rf"GroupQueryAttention node 'gqa': .*{attribute}="):
        lutc.build(model, target="llvm")


def _mha_feeds(batch: int, seq: int, keys: int, past: int) -> dict:
    feeds = {"query": RNG.standard_normal((batch, seq, 64)).astype(np.float32)}
    feeds |= {n: RNG.standard_normal((batch, keys, 64)).astype(np.float32) for n in ("key", "value")}
    if past:
        feeds |= {n: RNG.standard_normal((batch, 4, past, 16)).astype(np.float32) for n in ("pk", "pv")}
    return feeds


@pytest.mark.parametrize("unidirectional", [0, 1])
@pytest.mark.parametrize(("seq", "past"), [(3, 0), (1, 4), (2, 3)])
@pytest.mark.parametrize("masked", [False, True])
def test_multi_head_attention_with_past(unidirectional, seq, past, masked):
    feeds = _mha_feeds(2, seq, seq, past)
    inits = {"bias": RNG.standard_normal(192).astype(np.float32)}
    if masked:
        feeds["mask"] = np.ones((2, past + seq), np.int32)
        feeds["mask"][1, 0] = 0
    names = ["query", "key", "value", "bias", "mask" if masked else "", "", *(["pk", "pv"] if past else [])]
    node = helper.make_node("MultiHeadAttention", names, ["y", "present_key", "present_value"], name="mha",
                            domain=MS, num_heads=4, unidirectional=unidirectional)  # fmt: skip
    _check(node, feeds, inits, ["y", "present_key", "present_value"])


def test_multi_head_cross_attention_with_bnsh_key_value():
    feeds = {"query": RNG.standard_normal((2, 3, 64)).astype(np.float32)}
    feeds |= {n: RNG.standard_normal((2, 4, 5, 16)).astype(np.float32) for n in ("key", "value")}
    node = helper.make_node("MultiHeadAttention", ["query", "key", "value"], ["y"], name="mha", domain=MS,
                            num_heads=4, scale=0.2)  # fmt: skip
    _check(node, feeds, {}, ["y"])


@pytest.mark.parametrize(("op", "inputs"), [("Gelu", ["x"]), ("BiasGelu", ["x", "b"]), ("FastGelu", ["x"]),
                                            ("FastGelu", ["x", "b"])])  # fmt: skip
def test_gelu_variants(op, inputs):
    """TVM's converters of ORT's GELUs (exact erf form; FastGelu's tanh approximation)."""
    node = helper.make_node(op, inputs, ["y"], name="gelu", domain=MS)
    _check(node, {"x": 3 * X}, {"b": BIAS} if "b" in inputs else {}, ["y"])


@pytest.mark.parametrize("case", ["shared_buffer", "padded_decode"])
def test_group_query_attention_refuses_inputs_outside_the_concatenated_cache(case):
    """A fixed-size cache (past = max length, total < past + S) or rows of a decode batch with
    different lengths read keys at positions lutc's concatenation does not put them: refused."""
    feeds = _gqa_feeds(2, 1, 6, packed=True)
    if case == "shared_buffer":
        feeds["total"], feeds["seqlens_k"] = np.array(4, np.int32), np.full(2, 3, np.int32)
    else:
        feeds["seqlens_k"] = np.array([6, 4], np.int32)
    model = lutc.build(_model(_gqa_node(feeds, False), feeds, {}, ["y", "present_key", "present_value"]), target="llvm")
    with pytest.raises(lutc.errors.InputError, match="concatenated"):
        model(**feeds)


@pytest.mark.parametrize("bits", [4, 8, 2])
@pytest.mark.parametrize("with_zeros", [False, True])
def test_gather_block_quantized(bits, with_zeros):
    """An embedding stored as uint8-packed blocks (the builder's tied embedding / LM head)."""
    rows, width, block = 40, 64, 32
    per_byte = 8 // bits
    data = RNG.integers(0, 256, (rows, width // per_byte), dtype=np.uint8)
    scales = RNG.uniform(0.01, 0.1, (rows, width // block)).astype(np.float32)
    inits = {"data": data, "scales": scales}
    if with_zeros:
        inits["zeros"] = RNG.integers(0, 256, (rows, max(1, width // block // per_byte)), dtype=np.uint8)
    node = helper.make_node("GatherBlockQuantized", ["data", "ids", "scales", *(["zeros"] if with_zeros else [])],
                            ["y"], name="embed", domain=MS, bits=bits, block_size=block, gather_axis=0,
                            quantize_axis=1)  # fmt: skip
    ids = np.array([[0, 39, 7], [3, 3, 21]], np.int64)
    _check(node, {"ids": ids}, inits, ["y"])
