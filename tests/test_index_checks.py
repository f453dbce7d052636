"""Gathers with runtime indices: in-range calls match ONNX Runtime, out-of-range ones are an
``InputError`` naming the node (TVM's gathers would read out of bounds), constant
out-of-range indices are a ``ModelError`` at build time."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import lutc
from lutc.errors import InputError, ModelError

CORPUS = Path(__file__).parent / "corpus"


def _gather_model(op: str, data_shape, index_shape, attrs: dict, constant_indices=None) -> onnx.ModelProto:
    """``op(data, indices + shift)``: the indices are computed, so no import-time check sees them."""
    data = helper.make_tensor_value_info("data", TensorProto.FLOAT, data_shape)
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    inits = [numpy_helper.from_array(np.array(0, np.int64), "shift")]
    if constant_indices is None:
        inputs = [data, helper.make_tensor_value_info("idx", TensorProto.INT64, index_shape)]
        nodes = [helper.make_node("Add", ["idx", "shift"], ["computed"], name="shift_indices")]
    else:
        inputs = [data]
        inits.append(numpy_helper.from_array(np.asarray(constant_indices, np.int64), "computed"))
        nodes = []
    nodes.append(helper.make_node(op, ["data", "computed"], ["out"], name=f"my_{op.lower()}", **attrs))
    graph = helper.make_graph(nodes, "gather", inputs, [out], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _ort(model: onnx.ModelProto, feeds: dict):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _build(model: onnx.ModelProto) -> lutc.CompiledModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no quantized matmul" notes
        return lutc.build(model, target="x86")


CASES = [
    ("Gather", [5, 3], [2, 2], {"axis": 0}, [[0, 4], [-5, 2]], [[0, 5], [1, 1]]),
    ("Gather", [5, 3], [4], {"axis": 1}, [0, 2, -1, -3], [0, 3, 0, 0]),
    ("GatherElements", [4, 3], [2, 3], {"axis": 0}, [[3, 0, -4], [1, 2, 0]], [[0, 0, -5], [0, 0, 0]]),
    ("GatherND", [4, 3, 2], [2, 2], {}, [[3, 2], [-4, -3]], [[0, 3], [0, 0]]),
    ("GatherND", [2, 3, 2], [2, 1], {"batch_dims": 1}, [[2], [-3]], [[2], [3]]),
]


@pytest.mark.parametrize(("op", "data_shape", "index_shape", "attrs", "good", "bad"), CASES)
def test_runtime_indices_are_checked(op, data_shape, index_shape, attrs, good, bad):
    model = _gather_model(op, data_shape, index_shape, attrs)
    compiled = _build(model)
    data = np.arange(np.prod(data_shape), dtype=np.float32).reshape(data_shape)
    good = np.array(good, np.int64)
    np.testing.assert_array_equal(compiled(data=data, idx=good), _ort(model, {"data": data, "idx": good}))
    with pytest.raises(InputError, match=rf"{op} node 'my_{op.lower()}': index out of range"):
        compiled(data=data, idx=np.array(bad, np.int64))
    with pytest.raises(Exception, match=r"(?i)out of bounds|invalid|out of range|indices"):  # ORT refuses too
        _ort(model, {"data": data, "idx": np.array(bad, np.int64)})
    np.testing.assert_array_equal(compiled(data=data, idx=good), _ort(model, {"data": data, "idx": good}))


def test_constant_indices_out_of_range_are_refused_at_build():
    model = _gather_model("Gather", [5, 3], None, {"axis": 0}, constant_indices=[1, 7])
    with pytest.raises(ModelError, match=r"Gather node 'my_gather'.*outside"):
        _build(model)


def test_dim_auto_export_with_disagreeing_batches_is_an_input_error():
    """A dynamo ``Dim.AUTO`` export gives ``input_ids`` and ``attention_mask`` independent batch
    symbols; a mask of batch 1 with ids of batch 2 made TVM's GatherND read out of bounds
    (ORT: "invalid index"). Batches that ORT accepts still match it."""
    entry = next(e for e in json.loads((CORPUS / "manifest.json").read_text()) if e["dims"] == "Dim.AUTO")
    path = CORPUS / entry["file"]
    compiled = _build(onnx.load(path))
    ids = np.random.default_rng(0).integers(0, entry["config"]["vocab"], (2, 5)).astype(np.int64)
    with pytest.raises(InputError, match=r"GatherND node '\w+': index out of range"):
        compiled(input_ids=ids, attention_mask=np.ones((1, 5), np.int64))
    feeds = {"input_ids": ids, "attention_mask": np.ones((2, 5), np.int64)}
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = compiled(**feeds)
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 2e-2  # fast mode, 4-bit weights
