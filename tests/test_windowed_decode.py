"""Greedy decoding over a window-sized KV cache (``GroupQueryAttention`` with
``sliding_window_cache=1``, as onnxruntime-genai's builder emits for Gemma-2/3's local layers) beside
a layer with the concatenated cache: the cache layout says which pasts start as a window of
zeros, and lutc's tokens equal ORT's over prompts longer than the window.

The decoder is written here in the builder's form (``seqlens_k`` and ``total_sequence_length``
from ``attention_mask``, packed QKV, rotary inside, 4-bit ``MatMulNBits`` projections), two layers
small enough to build in seconds; exact mode, so the tokens must be identical.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import lutc
from lutc.bench.generate import ort_generate
from lutc.decode import cache_layout
from lutc.quant.onnx_convert import matmul_nbits_node
from lutc.zoo import nbits_arrays

MS = "com.microsoft"
VOCAB, HIDDEN, HEADS, KV_HEADS, HEAD = 96, 64, 4, 2, 16
WINDOW = 5


def _nbits(name: str, x: str, out: str, k: int, n: int, rng: np.random.Generator) -> tuple[onnx.NodeProto, list]:
    """A 4-bit block-32 ``MatMulNBits`` ``x[.., k] -> out[.., n]`` and its initializers."""
    weight = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
    return matmul_nbits_node(name, x, out, nbits_arrays(weight, 4, 32))


def _rotary(rows: int) -> list:
    angles = np.arange(rows)[:, None] / 10000 ** (np.arange(HEAD // 2)[None, :] / (HEAD // 2))
    return [numpy_helper.from_array(np.cos(angles).astype(np.float32), "cos"),
            numpy_helper.from_array(np.sin(angles).astype(np.float32), "sin")]  # fmt: skip


def windowed_decoder(seed: int = 0) -> onnx.ModelProto:
    """Layer 0 windowed (``local_window_size=WINDOW``, window-sized cache), layer 1 global."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Gather", ["embed", "input_ids"], ["h0"], name="embed_tokens"),
        helper.make_node("ReduceSum", ["attention_mask", "axis1"], ["seen"], name="seen", keepdims=0),
        helper.make_node("Sub", ["seen", "one"], ["last"], name="last"),
        helper.make_node("Cast", ["last"], ["seqlens_k"], name="seqlens_cast", to=TensorProto.INT32),
        helper.make_node("Shape", ["attention_mask"], ["mask_shape"], name="mask_shape"),
        helper.make_node("Gather", ["mask_shape", "one"], ["total64"], name="total_gather", axis=0),
        helper.make_node("Cast", ["total64"], ["total"], name="total_cast", to=TensorProto.INT32),
    ]
    inits = [numpy_helper.from_array(rng.standard_normal((VOCAB, HIDDEN)).astype(np.float32), "embed"),
             numpy_helper.from_array(np.array(1, np.int64), "one"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"), *_rotary(256)]  # fmt: skip
    hidden = "h0"
    for layer, windowed in enumerate((True, False)):
        qkv, inits_qkv = _nbits(f"qkv{layer}", hidden, f"qkv_out{layer}", HIDDEN, (HEADS + 2 * KV_HEADS) * HEAD, rng)
        attrs = {"local_window_size": WINDOW, "sliding_window_cache": 1} if windowed else {}
        gqa = helper.make_node(
            "GroupQueryAttention",
            [f"qkv_out{layer}", "", "", f"past_key_values.{layer}.key", f"past_key_values.{layer}.value",
             "seqlens_k", "total", "cos", "sin"],
            [f"attn{layer}", f"present.{layer}.key", f"present.{layer}.value"],
            name=f"gqa{layer}", domain=MS, num_heads=HEADS, kv_num_heads=KV_HEADS, do_rotary=1, **attrs,
        )  # fmt: skip
        proj, inits_proj = _nbits(f"o{layer}", f"attn{layer}", f"o_out{layer}", HEADS * HEAD, HIDDEN, rng)
        add = helper.make_node("Add", [hidden, f"o_out{layer}"], [f"h{layer + 1}"], name=f"residual{layer}")
        nodes += [qkv, gqa, proj, add]
        inits += inits_qkv + inits_proj
    head, inits_head = _nbits("lm_head", hidden, "logits", HIDDEN, VOCAB, rng)
    nodes.append(head)
    inits += inits_head
    cache = lambda name, rows: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", KV_HEADS, rows, HEAD])  # noqa: E731
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total_seq"])]  # fmt: skip
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", VOCAB])]
    for layer, rows in enumerate(("past_sliding_seq", "past_seq")):
        inputs += [cache(f"past_key_values.{layer}.{kind}", rows) for kind in ("key", "value")]
        outputs += [cache(f"present.{layer}.{kind}", None) for kind in ("key", "value")]
    graph = helper.make_graph(nodes, "windowed_decoder", inputs, outputs, inits)
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


@pytest.fixture(scope="module")
def decoder() -> onnx.ModelProto:
    return windowed_decoder()


def test_the_windowed_past_starts_as_a_window_of_zeros(decoder):
    model = lutc.build(decoder, target="x86", mode="exact")
    layout = cache_layout(model.inputs, model.outputs)
    assert layout.window_rows == {"past_key_values.0.key": WINDOW, "past_key_values.0.value": WINDOW}
    empty = layout.empty_past(2)
    assert empty["past_key_values.0.key"].shape == (2, KV_HEADS, WINDOW, HEAD)
    assert empty["past_key_values.1.key"].shape == (2, KV_HEADS, 0, HEAD)


def test_a_window_sized_past_with_fewer_rows_than_the_window_is_refused(decoder):
    model = lutc.build(decoder, target="x86", mode="exact")
    feeds = {"input_ids": np.zeros((1, 2), np.int64), "attention_mask": np.ones((1, 2), np.int64)}
    feeds |= {name: np.zeros((1, KV_HEADS, 0, HEAD), np.float32) for name in cache_layout(model.inputs,
              model.outputs).head_shapes}  # fmt: skip
    with pytest.raises(lutc.errors.InputError, match=rf"'past_key_values.0.key' is a window-sized .* {WINDOW} rows"):
        model(**feeds)


@pytest.mark.parametrize(("prompt", "batch"), [(3, 1), (12, 1), (9, 2)])
def test_greedy_tokens_equal_ort_across_the_window(decoder, prompt, batch):
    """32 tokens (past the window several times over, and past the point where the cache evicts),
    from a prompt shorter and longer than the window; the prompt build and the step build."""
    model, step = lutc.build_decoder(decoder, target="x86", mode="exact", batch=batch)
    ids = np.random.default_rng(prompt).integers(0, VOCAB, (batch, prompt))
    mine = lutc.generate(model, ids, 32, step_model=step)
    layout = cache_layout(model.inputs, model.outputs)
    theirs = ort_generate(decoder, layout, ids, 32, 1, 0)
    np.testing.assert_array_equal(mine.tokens, theirs.tokens)
    assert len(set(mine.tokens[0].tolist())) > 3  # the tokens move: a stuck argmax would hide a wrong cache
