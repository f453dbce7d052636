"""The private APIs lutc touches are still there, as lutc calls them.

Graph preparation (``lutc/frontend/prepare.py``) folds constants with onnxscript's
``_constant_folding`` and runs ONNX Runtime's symbolic shape inference loop itself (its
``_preprocess``/``_infer_impl``/``out_mp_``); the frontend (``lutc/frontend/onnx_import.py``)
subclasses TVM's ``ONNXGraphImporter`` and overrides its private hooks. pyproject bounds
onnxscript and onnxruntime below their next untested minor version and pins TVM; when one of
these moves anyway, this test names the library, its version and the symbol, instead of a
build failing somewhere inside graph preparation or import.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib.metadata import version

import onnx
import pytest
from onnx import TensorProto, helper


def _parameters(func: Callable) -> list[str]:
    return [p for p in inspect.signature(func).parameters if p != "self"]


def _require(library: str, symbol: str, check: Callable[[], object]) -> None:
    """Run ``check``; any failure becomes one message naming the library, its version and the symbol."""
    try:
        ok = check()
    except Exception as err:  # an import error, a missing attribute, a changed call
        pytest.fail(
            f"{library} {version(library)}: {symbol} is not usable as lutc uses it: {type(err).__name__}: {err}"
        )
    if ok is False:
        pytest.fail(f"{library} {version(library)}: {symbol} changed (lutc's use of it no longer fits)")


def _identity_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"], name="id")], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_onnxscript_constant_folding():
    def fold_pass():
        from onnxscript.optimizer import _constant_folding

        params = _parameters(_constant_folding.FoldConstantsPass.__init__)
        return {"shape_inference", "input_size_limit", "output_size_limit", "should_fold"} <= set(params)

    _require("onnxscript", "onnxscript.optimizer._constant_folding.FoldConstantsPass(shape_inference=, "
             "input_size_limit=, output_size_limit=, should_fold=)", fold_pass)  # fmt: skip


def test_onnxruntime_symbolic_shape_inference_loop():
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    symbol = "onnxruntime.tools.symbolic_shape_infer.SymbolicShapeInference"
    _require("onnxruntime", f"{symbol}(int_max, auto_merge, guess_output_rank, verbose)",
             lambda: _parameters(SymbolicShapeInference.__init__)[:4]
             == ["int_max", "auto_merge", "guess_output_rank", "verbose"])  # fmt: skip
    for method in ("_preprocess", "_infer_impl", "_update_output_from_vi"):
        _require("onnxruntime", f"{symbol}.{method}", lambda m=method: callable(getattr(SymbolicShapeInference, m)))

    def loop() -> bool:  # what lutc.frontend.prepare._run_symbolic_inference does
        inference = SymbolicShapeInference(2**31 - 1, False, False, 0)
        inference._preprocess(_identity_model())
        complete = False
        while inference.run_:
            complete = inference._infer_impl()
        inference._update_output_from_vi()
        return isinstance(inference.out_mp_, onnx.ModelProto) and complete in (True, False)

    _require("onnxruntime", f"{symbol}: _preprocess, run_, _infer_impl, _update_output_from_vi, out_mp_", loop)


def test_tvm_onnx_importer_hooks():
    from tvm.relax.frontend.onnx import onnx_frontend

    module = "tvm.relax.frontend.onnx.onnx_frontend"
    _require("apache-tvm", f"{module}._get_convert_map()", lambda: "MatMul" in onnx_frontend._get_convert_map())
    _require("apache-tvm", f"{module}.onnx_input", lambda: issubclass(onnx_frontend.onnx_input, list))
    _require("apache-tvm", f"{module}.tvm", lambda: onnx_frontend.tvm.runtime.tensor is not None)
    importer = onnx_frontend.ONNXGraphImporter
    hooks = {
        "__init__": ["shape_dict", "dtype_dict", "keep_params_in_input", "sanitize"],
        "_parse_graph_initializers": ["graph"],
        "_check_for_unsupported_ops": ["graph"],
        "_parse_array": ["tensor_proto"],
        "_convert_operator": ["op_name", "inputs", "attrs", "opset"],
    }
    for name, params in hooks.items():
        _require("apache-tvm", f"{module}.ONNXGraphImporter.{name}({', '.join(params)})",
                 lambda n=name, p=params: _parameters(getattr(importer, n)) == p)  # fmt: skip
    # from_onnx must still call the two hooks lutc overrides
    source = inspect.getsource(importer.from_onnx)
    for hook in ("_parse_graph_initializers", "_check_for_unsupported_ops"):
        _require("apache-tvm", f"{module}.ONNXGraphImporter.from_onnx calling self.{hook}",
                 lambda h=hook: f"self.{h}(" in source)  # fmt: skip
    instance = importer(None, "float32", keep_params_in_input=True, sanitize=True)
    for attribute in ("_nodes", "_params", "bb"):
        _require("apache-tvm", f"{module}.ONNXGraphImporter().{attribute}",
                 lambda a=attribute: hasattr(instance, a))  # fmt: skip
