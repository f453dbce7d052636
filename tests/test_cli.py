"""The lutc command line, run in-process."""

from __future__ import annotations

import json

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


def test_no_fuse_is_stored_in_the_library_description(model_path, tmp_path):
    library = tmp_path / "unfused.so"
    assert main(["compile", str(model_path), "-o", str(library), "--no-fuse"]) == 0
    assert json.loads((tmp_path / "unfused.so.lutc.json").read_text())["options"]["fuse"] is False


def test_errors_are_reported_not_raised(model_path, tmp_path, capsys):
    (tmp_path / "bad.npy").write_bytes(b"")
    assert main(["run", str(model_path), "--input", f"A={tmp_path / 'bad.npy'}"]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["compile", str(tmp_path / "absent.onnx")]) == 2


def test_every_flag_has_help():
    for action in parser()._subparsers._group_actions[0].choices.values():
        for flag in action._actions:
            assert flag.help, f"{action.prog} {flag.dest} has no --help text"


def test_misspelled_input_name_is_refused(model_path, tmp_path, capsys):
    np.save(tmp_path / "b.npy", np.zeros((1, 1, K), np.float32))
    assert main(["run", str(model_path), "--input", f"B={tmp_path / 'b.npy'}"]) == 2
    assert "--input names ['B'] are not inputs of the model; it takes ['A']" in capsys.readouterr().err


def test_messages_keep_their_brackets(model_path, capsys):
    """Shapes like ``[batch, seq, 64]`` are printed as written, not eaten as rich markup."""
    assert main(["run", str(model_path)]) == 2
    assert f"A: float32[batch, seq, {K}]" in capsys.readouterr().err


def test_missing_output_dir_is_refused_before_compiling(model_path, tmp_path, capsys):
    assert main(["run", str(model_path), "--output-dir", str(tmp_path / "absent")]) == 2
    assert "--output-dir" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compile", "m.onnx", "--target", "{bad json"], "argument --target: not valid JSON"),
        (["run", "m.onnx", "--repeat", "-2"], "argument --repeat: must be >= 0"),
        (["compile", "m.onnx", "--threads", "0"], "argument --threads: must be >= 1"),
        (["tune", "m.onnx", "--timeout", "0"], "argument --timeout: must be > 0"),
        (["tune", "m.onnx", "--trials", "0"], "argument --trials: must be >= 1"),
    ],
)
def test_bad_flag_values_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_keep_dequantize_flag_does_not_swallow_the_model(model_path, capsys):
    assert main(["compile", "--keep-dequantize", "proj", str(model_path)]) == 0
    assert "proj: dequantize path" in capsys.readouterr().out


def test_tuning_into_an_unwritable_log_dir_fails_before_tuning(model_path, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["tune", str(model_path), "--trials", "1", "--log-dir", str(blocker / "logs"), "--no-progress"]) == 2
    assert "cannot create the tuning log directory" in capsys.readouterr().err
