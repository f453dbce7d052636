"""Graph preparation and lutc's shape-value converters, on the few-node reproducers of the shape
idioms torch's exporters emit (README, Known limits: what TVM 0.27's importer got wrong).

Each graph runs through lutc's converters alone (``fold=False``: no preparation, so the
converters see the symbolic shapes) and through ``lutc.build`` (preparation first), at two
input sizes, against ONNX Runtime. The graphs compute integers or copy floats, so results
must be equal, not close.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from lutc.relay_passes import LutcIsolateShapeKernels
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import lutc
from lutc.errors import ModelError
from lutc.frontend import import_onnx
from lutc.frontend.prepare import prepare_graph
from lutc.pipeline import get_pipeline
from lutc.targets import resolve_target
from lutc.zoo import single_matmul_nbits


def _const(name: str, values, dtype=np.int64) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(values, dtype), name))


def _model(nodes: list, inputs: list, outputs: list, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "repro", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _x(dims=("n", 4)) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))


def _out(name="y", dtype=TensorProto.FLOAT, dims=None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, dims)


def _run_converters_only(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    mod, info = import_onnx(model, fold=False)
    target = resolve_target("llvm", None)
    vm = relax.VirtualMachine(tvm.compile(mod, target, relax_pipeline=get_pipeline(target, None)), tvm.cpu())
    result = vm["main"](*(tvm.runtime.tensor(feeds[i.name]) for i in info.inputs))
    return [result.numpy()] if isinstance(result, tvm.runtime.Tensor) else [r.numpy() for r in result]


def _run_built(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    result = lutc.build(model, target="llvm")(**feeds)
    return list(result) if isinstance(result, tuple) else [result]


def _check_both_paths(model: onnx.ModelProto, sizes=(3, 5)) -> None:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for n in sizes:
        feeds = {"x": np.arange(n * 4, dtype=np.float32).reshape(n, 4)}
        want = session.run(None, feeds)
        for run in (_run_converters_only, _run_built):
            got = run(model, feeds)
            assert len(got) == len(want)
            for g, w in zip(got, want, strict=True):
                assert g.shape == w.shape and g.dtype == w.dtype, (run.__name__, g.shape, w.shape)
                np.testing.assert_array_equal(g, w)


def test_constant_of_shape_with_empty_shape_is_a_scalar():
    empty = numpy_helper.from_array(np.zeros(0, np.int64), "empty")
    nodes = [
        helper.make_node(
            "ConstantOfShape", ["empty"], ["c"], value=numpy_helper.from_array(np.array([2.0], np.float32))
        ),
        helper.make_node("Mul", ["x", "c"], ["y"]),
    ]
    _check_both_paths(_model(nodes, [_x()], [_out()], [empty]))


def test_range_to_a_gathered_dim_keeps_that_dim():
    """``Range(0, Shape(x)[0])`` broadcast against x's own dim: its length must be ``n``, not a fresh var."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        _const("zero", 0),
        _const("one", 1),
        helper.make_node("Gather", ["s", "zero"], ["n"]),
        helper.make_node("Range", ["zero", "n", "one"], ["r"]),
        helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
        _const("axis1", [1]),
        helper.make_node("Unsqueeze", ["rf", "axis1"], ["col"]),
        helper.make_node("Add", ["x", "col"], ["sum"]),
        helper.make_node("Shape", ["sum"], ["s2"]),
        helper.make_node("Expand", ["col", "s2"], ["wide"]),
        helper.make_node("Mul", ["sum", "wide"], ["y"]),
    ]
    _check_both_paths(_model(nodes, [_x()], [_out()]))


def test_int64_vector_plus_scalar_dim_keeps_rank_one():
    """``Add(int64[1], n)`` is ``int64[1]``; two ``Unsqueeze`` make it ``[1, 1, 1]`` (a KV-cache idiom)."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        _const("zero", 0),
        helper.make_node("Gather", ["s", "zero"], ["n"]),
        _const("two", [2]),
        helper.make_node("Add", ["two", "n"], ["a"]),
        _const("axis0", [0]),
        helper.make_node("Unsqueeze", ["a", "axis0"], ["u1"]),
        helper.make_node("Unsqueeze", ["u1", "axis0"], ["y"]),
    ]
    _check_both_paths(_model(nodes, [_x()], [_out("y", TensorProto.INT64)]))


def test_reshape_of_scalar_shape_arithmetic():
    """Dynamo's ``Reshape(Div(Mul(n, n), n), [-1])`` feeding a reshape target."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        _const("zero", 0),
        helper.make_node("Gather", ["s", "zero"], ["n"]),
        helper.make_node("Mul", ["n", "n"], ["nn"]),
        helper.make_node("Div", ["nn", "n"], ["n2"]),
        _const("flat", [-1]),
        helper.make_node("Reshape", ["n2", "flat"], ["n1"]),
        _const("two_two", [2, 2]),
        helper.make_node("Concat", ["n1", "two_two"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    _check_both_paths(_model(nodes, [_x()], [_out()]))


def test_equal_on_a_shape_compares_values():
    """``Equal(Shape(x[2, 4]), [2, 5])`` is ``[True, False]`` (TVM folded it to all False)."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        _const("ref", [2, 5]),
        helper.make_node("Equal", ["s", "ref"], ["y"]),
    ]
    model = _model(nodes, [_x((2, 4))], [_out("y", TensorProto.BOOL)])
    feeds = {"x": np.zeros((2, 4), np.float32)}
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert want[0].tolist() == [True, False]
    for run in (_run_converters_only, _run_built):
        np.testing.assert_array_equal(run(model, feeds)[0], want[0])


def test_concat_of_a_shape_and_a_runtime_tensor():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Shape", ["x"], ["t"], start=1),
        helper.make_node("Mul", ["t", "t"], ["runtime"]),
        helper.make_node("Cast", ["x"], ["xi"], to=TensorProto.INT64),
        _const("zero", [0]),
        helper.make_node("Gather", ["xi", "zero"], ["row"], axis=0),
        helper.make_node("ReduceMax", ["row"], ["data"], keepdims=0),
        _const("flat", [1]),
        helper.make_node("Reshape", ["data", "flat"], ["data1"]),
        helper.make_node("Concat", ["s", "runtime", "data1"], ["y"], axis=0),
    ]
    _check_both_paths(_model(nodes, [_x()], [_out("y", TensorProto.INT64)]))


def test_shape_kernels_with_scalar_arguments_are_not_fused():
    n = tvm.tirx.Var("n", "int64")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([n, 4], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            shape = bb.emit(relax.op.shape_to_tensor(relax.ShapeExpr([n])))
            out = bb.emit_output(bb.emit(relax.op.add(relax.op.astype(shape, "float32"), relax.const(1.0))))
        bb.emit_func_output(out)
    mod = tvm.transform.Sequential(
        [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(), LutcIsolateShapeKernels()]
    )(bb.get())
    patterns = {
        gv.name_hint: int(f.attrs["op_pattern"]) for gv, f in mod.functions_items() if "op_pattern" in (f.attrs or {})
    }
    assert patterns["shape_to_tensor"] == 8
    assert patterns["add"] != 8


def _two_inputs() -> onnx.ModelProto:
    nodes = [helper.make_node("Shape", ["b"], ["s"]), helper.make_node("Reshape", ["a", "s"], ["y"])]
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", "seq", 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", "seq", 4])
    return _model(nodes, [a, b], [_out()])


def test_shapes_bind_named_dims_in_every_input_and_fold_the_shape_subgraph():
    prepared, report = prepare_graph(_two_inputs(), {"a": [2, 3, 4]})
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in prepared.graph.input}
    assert dims == {"a": [2, 3, 4], "b": [2, 3, 4]}
    assert report.static_inputs == {"a": (2, 3, 4), "b": (2, 3, 4)}
    assert "Shape" not in [n.op_type for n in prepared.graph.node]
    assert report.removed_ops["Shape"] == 1
    assert "input b fixed to [2, 3, 4]" in report.describe()


def test_shapes_bind_symbols_inside_dims_named_by_expressions():
    """A TorchScript decoder's mask is ``[batch, past+seq]``: fixing ``seq`` leaves ``past+1``
    (TVM reads the name as an expression; ``past + seq`` would name a dim nothing computes)."""
    ids = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", "seq", 4])
    mask = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", "past+seq", "seq*2+1"])
    model = _model([helper.make_node("Identity", ["b"], ["y"])], [ids, mask], [_out()])
    prepared, _ = prepare_graph(model, {"a": [2, 1, 4]}, fold=False)
    dims = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim] for v in prepared.graph.input}
    assert dims == {"a": [2, 1, 4], "b": [2, "past+1", 3]}


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        ({"c": [1, 2, 4]}, "not model inputs"),
        ({"a": [2, 4]}, "rank 2"),
        ({"a": [2, 3, 8]}, "dim 2 is fixed to 4"),
        ({"a": [2, 3, 4], "b": [2, 5, 4]}, "'seq' is 3"),
        ({"a": [2, 0, 4]}, "positive"),
        ({"a": "2x3"}, "list of ints"),
    ],
)
def test_bad_shapes_are_refused_by_name(shapes, message):
    with pytest.raises(ModelError, match=message):
        lutc.build(_two_inputs(), target="llvm", shapes=shapes)


def test_quantized_weights_come_through_preparation_unchanged():
    model = single_matmul_nbits(64, 32, bits=2, block_size=32)
    prepared, _ = prepare_graph(model, {"A": [1, 1, 64]})
    assert [(n.domain, n.op_type) for n in prepared.graph.node] == [("com.microsoft", "MatMulNBits")]
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in prepared.graph.initializer}
    assert before.keys() == after.keys()
    for name, array in before.items():
        np.testing.assert_array_equal(after[name], array)


def test_custom_domain_op_named_like_a_standard_op_is_refused():
    node = helper.make_node("Relu", ["x"], ["y"], domain="my.ops")
    graph = helper.make_graph([node], "custom", [_x()], [_out()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)])
    with pytest.raises(ModelError, match=r"custom domain 'my\.ops'"):
        lutc.build(model, target="llvm")


def test_unconvertible_node_error_names_node_and_op():
    k = helper.make_tensor_value_info("k", TensorProto.INT64, [1])
    node = helper.make_node("TopK", ["x", "k"], ["y", "indices"], name="the_topk")
    model = _model([node], [_x(), k], [_out(), _out("indices", TensorProto.INT64)])
    with pytest.raises(ModelError, match="TopK node 'the_topk': ValueError: TopK k must be a constant") as info:
        lutc.build(model, target="llvm")
    assert "Traceback" not in str(info.value)


def test_a_symbolic_input_dim_read_by_a_weight_is_fixed_to_k():
    """``A[batch, seq, k]`` against K = 64: other k are refused by name, not read past the weight."""
    model = single_matmul_nbits(64, 32, bits=2, block_size=32)
    last = model.graph.input[0].type.tensor_type.shape.dim[-1]
    last.Clear()
    last.dim_param = "k"
    compiled = lutc.build(model, target="llvm")
    assert compiled.inputs[0].shape == ("batch", "seq", 64)
    assert compiled(A=np.ones((1, 2, 64), np.float32)).shape == (1, 2, 32)
    for k in (1, 8, 128, 200):
        with pytest.raises(lutc.errors.InputError, match=rf"input 'A' has shape \(1, 2, {k}\)"):
            compiled(A=np.ones((1, 2, k), np.float32))


@pytest.mark.parametrize("raw", [True, False])
def test_initializer_dims_beyond_its_data_are_named(raw):
    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    if not raw:
        weight.float_data.extend(np.ones(16, np.float32).tolist())
        weight.ClearField("raw_data")
    weight.dims[:] = [8, 4]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    model = _model(nodes, [_x((1, 8))], [_out()], [weight])
    with pytest.raises(ModelError, match=r"initializer 'w'"):
        lutc.build(model, target="llvm")
