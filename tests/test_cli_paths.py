"""``lutc run --output-dir`` and ``lutc compile -o`` write only where asked, and never over an input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import lutc
from lutc import cli
from lutc.cli import main, output_file_names
from lutc.zoo import single_matmul_nbits

K, N = 256, 128
EXTRA_OPS = ("Neg", "Relu", "Abs", "Sigmoid")
"""Ops giving each further output its own values, so a mix-up of files shows."""


def _model(names: list[str]) -> onnx.ModelProto:
    """The zoo's one-matmul model, its output renamed ``names[0]``, plus one output per further name."""
    model = single_matmul_nbits(K, N, bits=2, block_size=32)
    graph = model.graph
    graph.node[0].output[0] = names[0]
    del graph.output[:]
    for index, name in enumerate(names):
        if index:
            graph.node.append(helper.make_node(EXTRA_OPS[index - 1], [names[0]], [name], name=f"extra{index}"))
        graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", "seq", N]))
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("paths")


@pytest.fixture(scope="module")
def victim(root) -> Path:
    """A file an output named by its absolute path (less ``.npy``) would overwrite."""
    path = root / "outside" / "victim.npy"
    path.parent.mkdir()
    np.save(path, np.zeros(3))
    return path


@pytest.fixture(scope="module")
def hostile(root, victim) -> tuple[Path, list[str], tuple]:
    """A library whose outputs have hostile names, those names, and its outputs on :func:`_x`."""
    names = ["../escaped", str(victim.with_suffix("")), "a/b", "A_B", ".."]
    built = lutc.build(_model(names), "x86")
    (root / "lib").mkdir()
    return built.export_library(root / "lib" / "hostile.so"), names, built(A=_x())


@pytest.fixture(scope="module")
def plain(root) -> Path:
    path = root / "plain" / "model.onnx"
    path.parent.mkdir()
    onnx.save(single_matmul_nbits(K, N, bits=2, block_size=32), str(path))
    return path


def _x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1, 2, K)).astype(np.float32)


def _snapshot(*folders: Path) -> dict[Path, tuple]:
    """Every file (and link) under ``folders``: its mtime and a digest of its bytes (or its link target)."""
    files = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_symlink():
                files[path] = ("link", str(path.readlink()))
            elif path.is_file():
                files[path] = (path.stat().st_mtime_ns, hashlib.sha1(path.read_bytes()).hexdigest())
    return files


@pytest.fixture(autouse=True)
def _unwrapped(monkeypatch):
    """Errors on one line: the console would fold long paths at its width."""
    monkeypatch.setattr(cli.console, "soft_wrap", True)


def _error(capsys) -> str:
    return capsys.readouterr().err


def _changes(before: dict, after: dict) -> set[Path]:
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


@pytest.mark.parametrize(
    ("names", "files"),
    [
        (["../escaped", "/abs/victim", "a/b"], ["_escaped.npy", "_abs_victim.npy", "a_b.npy"]),
        (["..", ".", "", ".hidden"], ["output_0.npy", "output_1.npy", "output_2.npy", "hidden.npy"]),
        (["a\\b", "a\x00b", "a b", "A_B"], ["a_b.npy", "a_b_2.npy", "a_b_3.npy", "A_B_4.npy"]),
        (["Y", "y", "y_2"], ["Y.npy", "y_2.npy", "y_2_2.npy"]),
        (["x" * 300, "x" * 250], ["x" * 200 + ".npy", "x" * 200 + "_2.npy"]),
    ],
)
def test_output_file_names(names, files):
    assert output_file_names(names) == files


def test_hostile_output_names_stay_inside_the_output_dir(root, hostile, tmp_path, capsys):
    library, names, expected = hostile
    out = tmp_path / "out"
    out.mkdir()
    np.save(tmp_path / "a.npy", _x())
    np.save(tmp_path / "escaped.npy", np.zeros(3))  # where '../escaped' would land
    before = _snapshot(root, tmp_path)
    argv = ["run", str(library), "--input", f"A={tmp_path / 'a.npy'}", "--output-dir", str(out), "--repeat", "0"]
    assert main(argv) == 0
    files = ["_escaped.npy", str(root / "outside" / "victim").replace("/", "_") + ".npy", "a_b.npy", "A_B_2.npy"]
    files.append("output_4.npy")
    assert _changes(before, _snapshot(root, tmp_path)) == {out / f for f in files}
    printed = capsys.readouterr().out
    for name, file, value in zip(names, files, expected, strict=True):
        np.testing.assert_array_equal(np.load(out / file), value)  # the same build's outputs: bit-identical
        assert f"{name}: shape (1, 2, {N}) dtype float32" in printed
        assert f" -> {out / file}\n" in printed


def test_a_link_at_an_output_name_is_replaced_not_followed(plain, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "target.npy"
    np.save(target, np.zeros(3))
    (out / "Y.npy").symlink_to(target)
    np.save(tmp_path / "a.npy", _x())
    before = _snapshot(tmp_path)
    argv = ["run", str(plain), "--input", f"A={tmp_path / 'a.npy'}", "--output-dir", str(out), "--repeat", "0"]
    assert main(argv) == 0
    assert _changes(before, _snapshot(tmp_path)) == {out / "Y.npy"}
    assert not (out / "Y.npy").is_symlink()
    np.testing.assert_array_equal(np.load(out / "Y.npy"), lutc.build(str(plain), "x86")(A=_x()))


def test_an_output_over_an_input_file_is_refused(plain, tmp_path, capsys):
    np.save(tmp_path / "Y.npy", _x())
    before = _snapshot(tmp_path)
    argv = ["run", str(plain), "--input", f"A={tmp_path / 'Y.npy'}", "--output-dir", str(tmp_path)]
    assert main(argv) == 2
    assert f"would overwrite the --input file {tmp_path / 'Y.npy'}" in _error(capsys)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("decoder", [[], ["--decoder"]])
def test_compile_onto_the_model_is_refused(plain, decoder, capsys):
    before = plain.read_bytes()
    assert main(["compile", str(plain), "-o", str(plain), *decoder]) == 2
    assert f"-o {plain} would overwrite the input model {plain}" in _error(capsys)
    assert plain.read_bytes() == before


def test_compile_onto_external_data_is_refused(tmp_path, capsys):
    model = tmp_path / "model.onnx"
    data = tmp_path / "lib.so.weights"  # what -o lib.so writes beside the library
    onnx.save(single_matmul_nbits(K, N, bits=2, block_size=32), str(model), save_as_external_data=True,
              location=data.name, size_threshold=0)  # fmt: skip
    before = _snapshot(tmp_path)
    for output in (data, tmp_path / "lib.so"):
        assert main(["compile", str(model), "-o", str(output)]) == 2
        assert f"would overwrite the model's external data file {data}" in _error(capsys)
    assert _snapshot(tmp_path) == before


def test_compile_into_the_tuning_logs_is_refused(plain, tmp_path, capsys):
    logs = tmp_path / "logs"
    (logs / "x86").mkdir(parents=True)
    (logs / "x86" / "lib.so.lutc.json").write_text("{}")
    assert main(["compile", str(plain), "-o", str(logs / "x86" / "lib"), "--tuning-logs", str(logs)]) == 2
    assert f"would overwrite the tuning log {logs / 'x86' / 'lib.so.lutc.json'}" in _error(capsys)
    assert (logs / "x86" / "lib.so.lutc.json").read_text() == "{}"


def test_decoder_output_onto_a_file_is_refused(plain, tmp_path, capsys):
    (tmp_path / "file").write_text("keep")
    assert main(["compile", str(plain), "--decoder", "-o", str(tmp_path / "file")]) == 2
    assert f"with --decoder, -o names a folder; {tmp_path / 'file'} is a file" in _error(capsys)
    assert (tmp_path / "file").read_text() == "keep"


def test_tune_log_dir_onto_the_model_is_refused(plain, capsys):
    before = plain.read_bytes()
    assert main(["tune", str(plain), "--log-dir", str(plain)]) == 2
    assert f"--log-dir {plain} is the input model" in _error(capsys)
    assert plain.read_bytes() == before
