"""Smoke test of ``python -m lutc.bench model`` on a tiny zoo decoder: outputs exist, checks pass, times are sane.

Nothing here asserts a speed: the machines are noisy and the model is tiny (hidden 128).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

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


def test_feeds_size_named_dims_and_read_integer_inputs_by_name():
    from lutc.bench.feeds import model_feeds, parse_dims, resolve_dims

    model = onnx.load(Path(__file__).parent / "corpus" / "llama_ts_decode_q4b128a.onnx")
    sizes = resolve_dims(parse_dims(["past=15"]), batch=2, seq=1)
    feeds = model_feeds(model, sizes)
    assert feeds["attention_mask"].shape == (2, 16) and (feeds["attention_mask"] == 1).all()  # dim "past+seq"
    assert feeds["position_ids"].tolist() == [[15], [15]]
    assert feeds["past_key_values.0.key"].shape == (2, 4, 15, 64)
    assert feeds["input_ids"].dtype == np.int64 and 0 <= feeds["input_ids"].min() <= feeds["input_ids"].max() < 256


def test_feeds_name_the_dims_they_cannot_size():
    from lutc.bench.feeds import model_feeds, parse_dims, resolve_dims

    model = onnx.load(Path(__file__).parent / "corpus" / "llama_ts_decode_q4b128a.onnx")
    with pytest.raises(ValueError, match=r"\['past\+seq'\]: size them with --dims"):
        model_feeds(model, resolve_dims({}, 1, 1))
    with pytest.raises(ValueError, match="NAME=EXPR"):
        parse_dims(["past"])
    with pytest.raises(ValueError, match="unknown dims"):
        resolve_dims({"total": "past+seq"}, 1, 1)


def test_generate_benchmark_smoke(tmp_path: Path) -> None:
    """``python -m lutc.bench generate`` on a builder-made corpus decoder: every engine, tokens agree."""
    out = tmp_path / "out"
    model = Path(__file__).parent / "corpus" / "llama_genai_int4.onnx"
    assert main(["generate", str(model), "--tokens", "4", "--rounds", "1", "--out", str(out)]) == 0
    report = json.loads((out / "generate.json").read_text())
    engines = {row["engine"]: row for row in report["rows"]}
    assert set(engines) == {"lutc fast", "lutc exact", "ORT acc0", "ORT acc4"}
    assert engines["lutc exact"]["tokens"] == engines["ORT acc0"]["tokens"] and len(engines["ORT acc0"]["tokens"]) == 4
    for row in engines.values():
        assert 0 < row["decode_min_ms"] <= row["decode_median_ms"] and row["tokens_per_second"] > 0
    share = report["kernel_share"]["1"]
    assert share["lut_ms"] > 0 and 0 <= share["outside_lut"] < 1
    assert "| lutc exact | 1 |" in (out / "generate.md").read_text()


FAMILIES = Path(__file__).parent / "corpus" / "families"


def test_generate_benchmark_on_a_ring_buffer_family(tmp_path: Path) -> None:
    """The gemma2 family graph (layer 0: a window-sized ring-buffer cache of 16 rows) through a prompt of 20
    and 6 tokens: every engine runs it (onnxruntime-genai where installed) and lutc exact's tokens are ORT's."""
    out, folder = tmp_path / "out", FAMILIES / "gemma2"
    genai = ["--genai-dir", str(folder)] if importlib.util.find_spec("onnxruntime_genai") else []
    argv = ["generate", str(folder / "model.onnx"), "--prompt", "20", "--tokens", "6", "--rounds", "1", *genai]
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads((out / "generate.json").read_text())
    engines = {row["engine"]: row["tokens"] for row in report["rows"]}
    expected = {"lutc fast", "lutc exact", "ORT acc0", "ORT acc4"} | ({"onnxruntime-genai"} if genai else set())
    assert set(engines) == expected
    assert engines["lutc exact"] == engines["ORT acc0"] and len(set(engines["ORT acc0"])) > 2
    assert report["kernel_share"]["1"]["lut_ms"] > 0


def test_generate_benchmark_reports_a_refused_model(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """gpt-oss's QMoE: lutc's ModelError as one line and exit status 2, not a traceback."""
    assert main(["generate", str(FAMILIES / "gptoss" / "model.onnx"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: unsupported operators: com.microsoft::QMoE")
