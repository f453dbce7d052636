"""What a careless user does with the API: builds in threads beside a printing thread, a model given
as bytes, a pickled or copied model, submodules reached from ``import lutc``, a ``ModelProto``
whose external data points outside its folder. Each asserts the error class and what its message
names, or results against ONNX Runtime.
"""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import lutc
from lutc import zoo
from lutc.errors import ModelError

X = np.random.default_rng(0).standard_normal((1, 3, 256)).astype(np.float32)
EXACT = 1e-5
"""Exact mode against ORT: float32 rounding over K = 256 products (test_build.py)."""


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _relative_error(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(y - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module")
def proto() -> onnx.ModelProto:
    return zoo.single_matmul_nbits(256, 128, bits=2, block_size=32)


@pytest.fixture(scope="module")
def model(proto):
    return lutc.build(proto, target="x86", mode="exact")


def test_a_model_given_as_bytes_builds_and_matches_ort(proto):
    built = lutc.build(proto.SerializeToString(), target="x86", mode="exact")
    assert _relative_error(built(A=X), _ort(proto, {"A": X})[0]) < EXACT


@pytest.mark.parametrize("data", [b"", b"not a model", bytes(range(256))])
def test_bytes_that_are_not_a_model_are_a_model_error(data):
    with pytest.raises(ModelError, match=f"the {len(data)} bytes given"):
        lutc.build(data, target="x86")


def test_pickling_a_model_says_how_to_save_it(model):
    with pytest.raises(TypeError, match=r"export_library\(path\).*lutc\.load\(path\)"):
        pickle.dumps(model)


@pytest.mark.parametrize("how", [copy.copy, copy.deepcopy])
def test_a_copied_model_computes_the_same_on_its_own(model, how):
    twin = how(model)
    assert twin is not model and twin.description == model.description
    np.testing.assert_array_equal(twin(A=X), model(A=X))
    assert twin.weights.keys() == model.weights.keys()


def test_submodules_resolve_right_after_import_lutc():
    code = "import lutc; print(lutc.decode.step_shapes(1)); print(lutc.errors.LoadError.__name__, lutc.zoo.__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.splitlines() == ["{'input_ids': [1, 1]}", "LoadError lutc.zoo"]
    with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
        lutc.no_such_thing  # noqa: B018


@pytest.mark.parametrize("base_dir", [None, "folder"])
@pytest.mark.parametrize("location", ["../../../secret", "/etc/passwd"])
def test_external_data_of_a_model_proto_outside_its_folder_is_a_model_error(proto, tmp_path, base_dir, location):
    escaped = onnx.ModelProto()
    escaped.CopyFrom(proto)
    tensor = escaped.graph.initializer[0]
    length = len(tensor.raw_data)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(ModelError) as info:
        lutc.build(escaped, target="x86", base_dir=None if base_dir is None else folder)
    assert f"initializer {tensor.name!r}" in str(info.value) and repr(location) in str(info.value)


def _two_minus_ones() -> onnx.ModelProto:
    """A Reshape TVM's converter refuses (two -1 dims): its importer prints the node's inputs first."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)
    node = helper.make_node("Reshape", ["X", "shape"], ["Y"], name="two_minus_ones")
    shape = numpy_helper.from_array(np.array([-1, -1], np.int64), "shape")
    graph = helper.make_graph([node], "g", [x], [y], initializer=[shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_failed_import_prints_nothing_and_names_the_node(capfd):
    with pytest.raises(ModelError, match="Reshape node 'two_minus_ones'"):
        lutc.build(_two_minus_ones(), target="llvm")
    out, _ = capfd.readouterr()
    assert out == ""


def test_dotted_input_names_build_without_renaming_warnings_and_keep_their_names():
    """``past_key_values.0.key`` is not an identifier: TVM's importer renames it with a warning per
    input (60 for SmolLM2). lutc binds by position, so the warning is noise: none, and the name stays."""
    x = helper.make_tensor_value_info("past.0.key", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("present.0.key", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["past.0.key"], ["present.0.key"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compiled = lutc.build(model, target="llvm")
    names = ([i.name for i in compiled.inputs], [o.name for o in compiled.outputs])
    assert names == (["past.0.key"], ["present.0.key"])
    value = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    np.testing.assert_array_equal(compiled(**{"past.0.key": value}), np.maximum(value, 0))


THREADS = textwrap.dedent(
    """
    import sys, threading, time
    import numpy as np
    import onnx
    import onnxruntime as ort
    import lutc
    from lutc import zoo
    sys.path.insert(0, {corpus!r})
    from feeds import load_manifest, make_feeds

    entries = {{e["file"]: e for e in load_manifest()}}
    jobs = [(name, onnx.load({corpus!r} + "/" + name), make_feeds(entries[name]))
            for name in ("llama_genai_int4.onnx", "qwen2_genai_int4.onnx")]
    matmul = zoo.single_matmul_nbits(256, 64, bits=4, block_size=32, seed=3)
    jobs.append(("matmul", matmul, {{"A": np.ones((1, 2, 256), np.float32)}}))
    errors, results, building = {{}}, {{}}, []

    def build(name, model, feeds):
        try:
            results[name] = (lutc.build(model, target="x86", mode="exact")(**feeds), model, feeds)
        except Exception as err:
            errors[name] = f"{{type(err).__name__}}: {{err}}"

    def printer():
        i = 0
        while any(t.is_alive() for t in building) or i < 2000:
            print(f"line {{i}}")
            i += 1
            time.sleep(0.0002)
        print(f"printed {{i}}")

    for name, model, feeds in jobs + [("refused", onnx.load_from_string({refused!r}), {{}})]:
        building.append(threading.Thread(target=build, args=(name, model, feeds)))
    talk = threading.Thread(target=printer)
    talk.start()
    for thread in building:
        thread.start()
        time.sleep(0.3)
    for thread in building + [talk]:
        thread.join()
    print("stdout restored", sys.stdout is sys.__stdout__)
    for name, (outputs, model, feeds) in sorted(results.items()):
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        for node in model.graph.node:  # the builder's accuracy_level 4 quantizes activations to int8 in ORT
            for attribute in node.attribute:
                if attribute.name == "accuracy_level":
                    attribute.i = 0
        ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
        error = max(float(np.abs(o - r).max() / np.abs(r).max()) for o, r in zip(outputs, ref))
        print(f"result {{name}} {{error:.2e}}")
    for name, message in sorted(errors.items()):
        print(f"error {{name}} {{message.splitlines()[0]}}")
    """
)


def test_builds_in_threads_beside_a_printing_thread_lose_nothing():
    """Three builds (two with GroupQueryAttention, whose shared values are per import) and one the
    importer refuses, started 0.3 s apart while a fourth thread prints: every line arrives, in
    order, ``sys.stdout`` is untouched afterwards, every result matches ORT, the refusal is a
    ModelError. In a subprocess: the test sees the real stdout."""
    from corpus.feeds import CORPUS_DIR

    script = THREADS.format(corpus=str(CORPUS_DIR), refused=_two_minus_ones().SerializeToString())
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    printed = int(next(line for line in lines if line.startswith("printed ")).split()[1])
    assert [line for line in lines if line.startswith("line ")] == [f"line {i}" for i in range(printed)]
    assert "stdout restored True" in lines and not any("Error converting operator" in line for line in lines)
    results = {line.split()[1]: float(line.split()[2]) for line in lines if line.startswith("result ")}
    assert set(results) == {"llama_genai_int4.onnx", "qwen2_genai_int4.onnx", "matmul"}
    assert max(results.values()) <= 5e-5, results  # exact mode: test_corpus.py's bound
    refusals = [line for line in lines if line.startswith("error ")]
    assert len(refusals) == 1 and refusals[0].startswith("error refused ModelError: cannot convert Reshape node")
