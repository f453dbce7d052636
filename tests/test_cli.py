"""The lutc command line, run in-process."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from test_build import K, N, _nbits_model

from lutc.cli import main, parser


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "proj.onnx"
    onnx.save(_nbits_model(2, 32)[0], str(path))
    return path


def test_inspect_lists_quantized_nodes(model_path, capsys):
    assert main(["inspect", str(model_path)]) == 0
    out = capsys.readouterr().out
    assert f"proj: MatMulNBits N={N} K={K} w2g32" in out


def test_compile_then_run_the_library(model_path, tmp_path, capsys):
    library = tmp_path / "proj.so"
    assert main(["compile", str(model_path), "-o", str(library), "--mode", "exact"]) == 0
    assert "proj: lut exact w2g32 symmetrized" in capsys.readouterr().out
    x = np.random.default_rng(0).standard_normal((1, 2, K)).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    assert main(["run", str(library), "--input", f"A={tmp_path / 'a.npy'}", "--output-dir", str(tmp_path)]) == 0
    assert "Y: shape (1, 2, 72)" in capsys.readouterr().out
    assert np.load(tmp_path / "Y.npy").shape == (1, 2, N)


def test_errors_are_reported_not_raised(model_path, tmp_path, capsys):
    (tmp_path / "bad.npy").write_bytes(b"")
    assert main(["run", str(model_path), "--input", f"A={tmp_path / 'bad.npy'}"]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["compile", str(tmp_path / "absent.onnx")]) == 2


def test_every_flag_has_help():
    for action in parser()._subparsers._group_actions[0].choices.values():
        for flag in action._actions:
            assert flag.help, f"{action.prog} {flag.dest} has no --help text"
