"""Smoke test of ``python -m lutc.bench scale`` on the corpus builder model (without onnxruntime-genai,
which the test environment does not install): every measurement is there and sane.

Nothing here asserts a speed or a memory bound of the real sizes: the README's table is from the
1 B and 3 B models on a quiet machine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from corpus.feeds import CORPUS_DIR

from lutc.bench import main

pytestmark = pytest.mark.slow


def test_scale_benchmark_smoke(tmp_path: Path, capsys) -> None:
    folder, out = tmp_path / "model", tmp_path / "out"
    folder.mkdir()
    shutil.copyfile(CORPUS_DIR / "llama_genai_int4.onnx", folder / "model.onnx")
    argv = ["scale", str(folder), "--threads", "1", "--prompt", "4", "--tokens", "4", "--rounds", "1", "--long", "64",
            "--no-genai", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "scale.json").read_text())
    build, load = report["build"], report["load"]
    assert build["build_s"] > 0 and build["export_s"] > 0
    assert build["peak_rss"] > build["weight_bytes"] >= build["streamed_bytes"] > 0
    assert sorted(build["files"]) == sorted(["prompt.so", "prompt.so.lutc.json", "step.so", "step.so.lutc.json",
                                             "decoder.weights"])  # fmt: skip
    assert load["load_s"] > 0
    row = report["speed"]["1"]["lutc fast"]
    assert 0 < row["decode_min_ms"] <= row["decode_median_ms"] and row["prefill_ms"] > 0
    long = report["long"]
    assert long["tokens"] == 64 and long["kv_bytes"] > 0 and long["max_growth"] >= 0
    assert "| lutc fast | 1 |" in (out / "scale.md").read_text()


@pytest.mark.parametrize(("argv", "message"), [
    (["scale", "/nonexistent"], "holds no model.onnx"),
    (["scale", ".", "--tokens", "1"], "--tokens >= 2"),
])  # fmt: skip
def test_scale_arguments_are_checked(argv, message, capsys) -> None:
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err
