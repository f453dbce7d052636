"""Weights without copies: the graph read without its bytes, external data memory-mapped and
checked, weights as parameters of ``main`` computed straight into their final memory."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from onnx import numpy_helper
from tvm.ir.expr import Constant

import lutc
from lutc import zoo
from lutc.errors import ModelError
from lutc.frontend import import_onnx
from lutc.frontend.weight_params import WEIGHTS_ATTR, weights_of
from lutc.frontend.weights import REFERENCE_LOCATION, WeightReader, read_weightless
from lutc.quant.layout import pack

K, N = 512, 384
"""B holds N * K / 2 = 98304 bytes: more elements than graph preparation folds, so a reference."""


def _model(seed: int = 0) -> onnx.ModelProto:
    return zoo.single_matmul_nbits(K, N, 4, 32, symmetric=False, bias=True, seed=seed)


def _save_external(model: onnx.ModelProto, folder: Path, location: str = "model.onnx.data") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    onnx.save(copy, str(path), save_as_external_data=True, location=location, size_threshold=0)
    return path


def _feeds() -> dict[str, np.ndarray]:
    return {"A": np.random.default_rng(1).standard_normal((1, 3, K)).astype(np.float32)}


def _initializer(model: onnx.ModelProto, suffix: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name.endswith(suffix))


def test_the_graph_holds_references_not_bytes(tmp_path):
    path = _save_external(_model(), tmp_path)
    graph, store = read_weightless(path)
    b = _initializer(graph, ".B")
    assert not b.raw_data and b.data_location == onnx.TensorProto.EXTERNAL
    assert {e.key: e.value for e in b.external_data}["location"] == REFERENCE_LOCATION
    expected = numpy_helper.to_array(_initializer(_model(), ".B"))
    view = store[b.name]
    np.testing.assert_array_equal(view, expected)
    assert not view.flags.owndata and not view.flags.writeable  # a view of the memory map
    scales = _initializer(graph, ".scales")  # 384 * 16 elements: small, read into the graph
    assert scales.raw_data and scales.data_location == onnx.TensorProto.DEFAULT


def test_a_model_proto_is_read_without_being_changed():
    model = _model()
    before = model.SerializeToString()
    graph, store = read_weightless(model)
    assert model.SerializeToString() == before
    assert not _initializer(graph, ".B").raw_data
    np.testing.assert_array_equal(
        store[_initializer(graph, ".B").name], numpy_helper.to_array(_initializer(model, ".B"))
    )


def test_a_model_proto_with_external_data_needs_its_folder(tmp_path):
    path = _save_external(_model(), tmp_path)
    proto = onnx.load(str(path), load_external_data=False)
    with pytest.raises(ModelError, match=r"stored in the external file 'model.onnx.data': pass base_dir="):
        lutc.build(proto, "llvm")
    built = lutc.build(proto, "llvm", base_dir=tmp_path)
    np.testing.assert_array_equal(built(**_feeds()), lutc.build(_model(), "llvm")(**_feeds()))


def _with_location(path: Path, location: str, offset: int | None = None, length: int | None = None) -> Path:
    proto = onnx.load(str(path), load_external_data=False)
    tensor = _initializer(proto, ".B")
    entries = {e.key: e.value for e in tensor.external_data}
    entries["location"] = location
    if offset is not None:
        entries["offset"] = str(offset)
    if length is not None:
        entries["length"] = str(length)
    del tensor.external_data[:]
    for key, value in entries.items():
        tensor.external_data.add(key=key, value=value)
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: _with_location(p, "../outside.data"), r"location '../outside.data' is outside the model's folder"),
        (lambda p: _with_location(p, "/etc/hostname"), r"location '/etc/hostname' is outside the model's folder"),
        (lambda p: _with_location(p, "gone.data"), r"external data file .*gone.data is missing"),
        (lambda p: _with_location(p, "model.onnx.data", length=7), r"holds 7 bytes for it; dims \[384, 16, 16\] need"),
        (lambda p: _with_location(p, "model.onnx.data", offset=10**9), r"truncated or foreign data file"),
    ],
    ids=["parent", "absolute", "missing", "length", "offset"],
)
def test_bad_external_data_is_a_model_error_naming_the_file(tmp_path, change, message):
    path = change(_save_external(_model(), tmp_path / "m"))
    (tmp_path / "outside.data").write_bytes(bytes(10**6))
    with pytest.raises(ModelError, match=message) as info:
        lutc.build(path, "llvm")
    assert ".B'" in str(info.value)


def test_a_truncated_data_file_is_a_model_error(tmp_path):
    path = _save_external(_model(), tmp_path)
    data = tmp_path / "model.onnx.data"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(ModelError, match=r"model.onnx.data has \d+ bytes; the tensor needs bytes"):
        lutc.build(path, "llvm")


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_linked_data_files_are_refused(tmp_path, link):
    path = _save_external(_model(), tmp_path / "m", location="real.data")
    real, linked = tmp_path / "m" / "real.data", tmp_path / "m" / "linked.data"
    os.symlink(real, linked) if link == "symlink" else os.link(real, linked)
    _with_location(path, "linked.data")
    with pytest.raises(ModelError, match=r"linked.data is a link; lutc reads plain files only"):
        lutc.build(path, "llvm")


def test_several_data_files_and_the_onnx_data_spelling(tmp_path):
    """Each initializer may name its own file (``model.onnx_data`` is what some exporters write)."""
    model, folder = _model(), tmp_path / "m"
    path = _save_external(model, folder, location="model.onnx_data")
    proto = onnx.load(str(path), load_external_data=False)
    b = _initializer(proto, ".B")
    entries = {e.key: e.value for e in b.external_data}
    raw = (folder / "model.onnx_data").read_bytes()[int(entries.get("offset", 0)) :][: int(entries["length"])]
    (folder / "b.bin").write_bytes(raw)
    _with_location(path, "b.bin", offset=0)
    expected = ort.InferenceSession(model.SerializeToString()).run(None, _feeds())[0]
    np.testing.assert_allclose(lutc.build(path, "llvm", mode="exact")(**_feeds()), expected, rtol=1e-4, atol=1e-4)


def test_weights_are_parameters_of_main_with_keys(tmp_path):
    main = import_onnx(_save_external(_model(), tmp_path))[0]["main"]
    assert int(main.attrs["num_input"]) == 1
    assert list(weights_of(main).values()) == ["codes:matmul", "scales:matmul", "zeros:matmul"]
    assert max(c.value.numpy().size for c in _constants(main)) <= N  # the bias (N floats) is the largest
    after = lutc.builder.lut_module(_save_external(_model(), tmp_path / "b"), lutc.BuildOptions())[0]["main"]
    assert [str(k) for k in after.attrs[WEIGHTS_ATTR]] == ["packed.data:matmul", "packed.scales:matmul",
                                                           "packed.offsets:matmul"]  # fmt: skip


def _constants(func) -> list:
    found = []
    keep = lambda e: found.append(e) if isinstance(e, Constant) and isinstance(e.value, tvm.runtime.Tensor) else None  # noqa: E731
    tvm.relax.analysis.post_order_visit(func, keep)
    return found


def test_the_reader_packs_what_pack_packs(tmp_path):
    _, info = import_onnx(_save_external(_model(), tmp_path))
    reader = WeightReader(info.weights, info.quantized)
    packed = pack(info.quantized["matmul"].weight(info.weights))
    np.testing.assert_array_equal(reader.read("packed.data:matmul"), packed.data)
    np.testing.assert_array_equal(reader.read("packed.scales:matmul"), packed.scales)
    np.testing.assert_array_equal(reader.read("packed.offsets:matmul"), packed.offsets)
    with pytest.raises(ModelError, match="cannot compute weights of kind 'bogus'"):
        reader.read("bogus:matmul")


def test_built_from_external_data_matches_onnxruntime(tmp_path):
    model = _model()
    built = lutc.build(_save_external(model, tmp_path), "llvm", mode="exact")
    expected = ort.InferenceSession(model.SerializeToString()).run(None, _feeds())[0]
    np.testing.assert_allclose(built(**_feeds()), expected, rtol=1e-4, atol=1e-4)  # float32 sums over K = 512
    assert built.weight_bytes == sum(w.nbytes for w in built.layout.weights) > N * K // 2


def test_weights_sit_together_on_huge_pages():
    """One region: the first weight starts on a 2 MiB boundary, the rest follow it; values as packed."""
    from lutc.runtime import HUGE_PAGE

    model = zoo.quantize_matmuls(zoo.float_decoder_block(1024, 16, 2816), 2, 32)  # 7 weights, ~3.6 MiB packed
    built = lutc.build(model, "llvm")
    tensors = list(built.weights.values())
    packed = [key for key in built.weights if key.startswith("packed.")]
    assert len(packed) == 7 * 2 and len(tensors) == 15  # data and scales (symmetric: no offsets); the causal mask
    pointers = sorted(t.data_ptr() for t in tensors)
    assert pointers[0] % HUGE_PAGE == 0
    total = sum(t.numpy().nbytes for t in tensors)
    assert pointers[-1] - pointers[0] < total + 64 * len(tensors)
    _, info = import_onnx(model)
    node = next(iter(info.quantized.values()))
    np.testing.assert_array_equal(
        built.weights[f"packed.data:{node.name}"].numpy(), pack(node.weight(info.weights)).data
    )


@pytest.mark.parametrize("suffix", [".B", ".scales"], ids=["reference", "small"])
def test_an_initializer_shorter_than_its_dims_is_a_model_error(suffix):
    model = _model()
    tensor = _initializer(model, suffix)
    tensor.raw_data = tensor.raw_data[:-4]
    pattern = rf"initializer .*{re.escape(suffix)}. has dims .* bytes. but \d+ bytes of data"
    with pytest.raises(ModelError, match=pattern):
        lutc.build(model, "llvm")
