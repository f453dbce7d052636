"""Smoke test of ``python -m lutc.bench model`` on a tiny zoo decoder: outputs exist, checks pass, times are sane.

Nothing here asserts a speed: the machines are noisy and the model is tiny (hidden 128).
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from lutc import zoo
from lutc.bench import main


def test_model_benchmark_smoke(tmp_path: Path) -> None:
    model = tmp_path / "tiny.onnx"
    onnx.save(zoo.quantize_matmuls(zoo.float_decoder_block(128, 2, 256), 2, 32), model)
    out = tmp_path / "out"
    argv = ["model", str(model), "--threads", "1", "--shapes", "decode=1x1", "--repeat", "3", "--out", str(out)]
    assert main(argv) == 0
    assert (out / "model.md").stat().st_size > 0
    report = json.loads((out / "model.json").read_text())
    assert report["machine"]["versions"]["onnxruntime"] and report["command"].endswith(str(out))
    (row,) = report["rows"]
    assert (row["threads"], row["shape"], row["batch"], row["seq"], row["build"]) == (1, "decode", 1, 1, "fast")
    assert row["passed"] and row["rel_err"] <= row["tolerance"] == 3e-2
    assert "ORT acc4" in row["ort"] and row["best_ort_over_lutc"] > 0
    for timing in [row["lutc"], *row["ort"].values()]:
        assert 0 < timing["min_us"] <= timing["median_us"]
    assert "| 1 | decode [1, 1] | fast | ok" in (out / "model.md").read_text()


def test_model_benchmark_adds_tuned_rows(tmp_path: Path, recwarn) -> None:
    """``--tuning-logs`` adds a 'fast tuned' build; with an empty log it runs default schedules and says so."""
    model = tmp_path / "tiny.onnx"
    onnx.save(zoo.quantize_matmuls(zoo.float_decoder_block(128, 2, 256), 2, 32), model)
    out, logs = tmp_path / "out", tmp_path / "logs"
    logs.mkdir()
    argv = ["model", str(model), "--threads", "1", "--shapes", "decode=1x1", "--repeat", "2", "--out", str(out),
            "--tuning-logs", str(logs)]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads((out / "model.json").read_text())["rows"]
    assert [r["build"] for r in rows] == ["fast", "fast tuned"] and all(r["passed"] for r in rows)
    assert any("default schedule" in str(w.message) for w in recwarn)
