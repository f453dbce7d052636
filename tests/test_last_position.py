"""Logits of the last position only (``last_logits=True``, the prompt model of ``build_decoder``)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from corpus.feeds import CORPUS_DIR
from onnx import TensorProto, helper, numpy_helper

import lutc
from lutc.decode import cache_layout, step_feeds
from lutc.frontend.last_position import slice_logits_to_last_position


@pytest.mark.parametrize("name", ["llama_genai_int4", "llama_ts_decode_q4b128a"])
def test_the_last_row_of_logits_is_the_full_builds_last_row(name):
    """``MatMulNBits`` (onnxruntime-genai) and ``MatMul`` (TorchScript) LM heads: the same last row
    from an LM head that reads one row. Up to float32 rounding: the final norm, fused into the LM
    head's table precompute in the full build, is its own kernel before the slice (1e-6 relative
    seen; the bound is 1e-5 of the largest logit)."""
    path = CORPUS_DIR / f"{name}.onnx"
    full = lutc.build(path, mode="exact")
    last = lutc.build(path, mode="exact", last_logits=True)
    assert last.outputs[0].shape[1] == 1 and full.outputs[0].shape[1] != 1
    layout = cache_layout(full.inputs, full.outputs)
    ids = np.array([[1, 5, 17, 33, 2, 8, 100]], np.int64)
    feeds = step_feeds(layout, ids, layout.empty_past(1), ids.shape[1])
    expected, got = full(**feeds)[0], last(**feeds)[0]
    assert expected.shape[1] == ids.shape[1] and got.shape == expected[:, -1:].shape
    np.testing.assert_allclose(got, expected[:, -1:], rtol=0, atol=1e-5 * np.abs(expected).max())
    assert "logits of the last position only" in last.summary()


def test_a_decoders_prompt_model_computes_the_last_logits_only():
    prompt, step = lutc.build_decoder(CORPUS_DIR / "llama_genai_int4.onnx")
    assert prompt.outputs[0].name == "logits" and prompt.outputs[0].shape[1] == 1
    assert step.outputs[0].shape[1] == 1  # one token per step anyway


def _head_graph(after_head: list[onnx.NodeProto], extra_inputs=(), rank: int = 3) -> onnx.ModelProto:
    """``h @ W`` then ``after_head`` (ending in ``logits``)."""
    dims = ["batch", "seq", 8][:rank] if rank == 3 else ["rows", 8]
    inputs = [helper.make_tensor_value_info("h", TensorProto.FLOAT, [*dims[:-1], 4]), *extra_inputs]
    weight = numpy_helper.from_array(np.ones((4, 8), np.float32), "W")
    cap = numpy_helper.from_array(np.array(30.0, np.float32), "cap")
    nodes = [helper.make_node("MatMul", ["h", "W"], ["head"], name="lm_head"), *after_head]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, dims)
    return helper.make_model(helper.make_graph(nodes, "g", inputs, [output], [weight, cap]))


def test_a_softcap_after_the_lm_head_is_sliced_before_it():
    """Gemma-2's logits: ``tanh(head / cap) * cap``: position-wise, so the head's input is sliced."""
    softcap = [
        helper.make_node("Div", ["head", "cap"], ["scaled"]),
        helper.make_node("Tanh", ["scaled"], ["capped"]),
        helper.make_node("Mul", ["capped", "cap"], ["logits"]),
    ]
    model = _head_graph(softcap)
    assert slice_logits_to_last_position(model) == "head"
    onnx.checker.check_model(model, full_check=True)
    head = next(n for n in model.graph.node if n.name == "lm_head")
    assert head.input[0].endswith("/output") and model.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 1


@pytest.mark.parametrize(
    ("after_head", "extra", "rank"),
    [
        ([helper.make_node("Add", ["head", "bias_rows"], ["logits"])], [helper.make_tensor_value_info(
            "bias_rows", TensorProto.FLOAT, ["batch", "seq", 8])], 3),
        ([helper.make_node("Identity", ["head"], ["logits"])], [], 2),
        ([helper.make_node("Softmax", ["head"], ["logits"], axis=1)], [], 3),
    ],
    ids=["another-input-per-position", "rank-2-logits", "not-position-wise"],
)  # fmt: skip
def test_logits_that_are_not_a_position_wise_lm_head_are_left_whole(after_head, extra, rank):
    model = _head_graph(after_head, extra, rank)
    before = model.SerializeToString()
    assert slice_logits_to_last_position(model) is None
    assert model.SerializeToString() == before
