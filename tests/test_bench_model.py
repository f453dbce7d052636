"""Smoke test of ``python -m lutc.bench model`` on a tiny zoo decoder: outputs exist, checks pass, times are sane.

Nothing here asserts a speed: the machines are noisy and the model is tiny (hidden 128).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

from lutc import zoo
from lutc.bench import main
from lutc.bench.cli import parse_args
from lutc.bench.llamacpp import run_llama_bench
from lutc.bench.roofline import StepRoofline, float_matmul_bytes, streamed_bytes
from lutc.weights import WeightLayout, WeightSpec


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
    """``python -m lutc.bench generate`` on a builder-made corpus decoder: every engine (llama.cpp's row from
    a fake llama-bench), tokens agree, every row has its GB/s and roofline fraction."""
    out = tmp_path / "out"
    model = Path(__file__).parent / "corpus" / "llama_genai_int4.onnx"
    argv = ["generate", str(model), "--tokens", "4", "--rounds", "1", "--out", str(out), *_fake_llama(tmp_path)]
    assert main(argv) == 0
    report = json.loads((out / "generate.json").read_text())
    engines = {row["engine"]: row for row in report["rows"]}
    assert set(engines) == {"lutc fast", "lutc exact", "ORT acc0", "ORT acc4", "llama.cpp"}
    assert engines["lutc exact"]["tokens"] == engines["ORT acc0"]["tokens"] and len(engines["ORT acc0"]["tokens"]) == 4
    for row in [r for name, r in engines.items() if name != "llama.cpp"]:
        assert 0 < row["decode_min_ms"] <= row["decode_median_ms"] and row["tokens_per_second"] > 0
    llama = engines["llama.cpp"]  # the fake's 400 tok/s over a prompt of 8, 50 tok/s decode
    assert [llama[k] for k in ("prefill_ms", "decode_median_ms", "decode_min_ms", "tokens")] == [20, 20, None, None]
    roofline = report["roofline"]
    assert roofline["float_matmul_bytes"] == 0 and roofline["streamed_bytes"] > 0
    assert roofline["bandwidth_gbps"]["1"] > 0
    floor_ms = roofline["streamed_bytes"] / roofline["bandwidth_gbps"]["1"] / 1e6
    for row in engines.values():
        assert row["gbps"] == pytest.approx(roofline["streamed_bytes"] / row["decode_median_ms"] / 1e6)
        assert row["roofline"] == pytest.approx(floor_ms / row["decode_median_ms"])
    share = report["kernel_share"]["1"]
    assert share["lut_ms"] > 0 and 0 <= share["outside_lut"] < 1
    text = (out / "generate.md").read_text()
    assert "| lutc exact | 1 |" in text and "| llama.cpp | 1 | 20.00 | 20.00 | - | 50.0 |" in text
    assert "llama.cpp: llama-bench; its weights are the GGUF given" in text and "DRAM read bandwidth" in text
    assert report["failed"] == {}


FAMILIES = Path(__file__).parent / "corpus" / "families"
FAKE_LLAMA_BENCH = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    args = sys.argv[1:]
    Path(sys.argv[0] + ".argv").write_text(" ".join(args))
    given = {flag: int(args[args.index(flag) + 1]) for flag in ("-p", "-n", "-t")}
    tests = [{"n_prompt": given["-p"], "n_gen": 0, "avg_ts": 400.0},
             {"n_prompt": 0, "n_gen": given["-n"], "avg_ts": 50.0}]
    print(json.dumps([{"build_commit": "fake", "n_threads": given["-t"], "avg_ns": 1, "stddev_ts": 0.5, **test,
                       "samples_ts": [test["avg_ts"]]} for test in tests], indent=2))
    """
)
"""llama-bench's ``-o json`` rows: prefill of ``-p`` tokens at 400 tok/s, decode of ``-n`` at 50 tok/s."""
FAILING_LLAMA_BENCH = 'import sys\nprint("[")\nsys.exit("llama_bench: error: no model")\n'
"""What llama-bench does with a GGUF it cannot load: half a JSON list, a line on stderr, status 1."""


def _fake_llama(folder: Path, script: str = FAKE_LLAMA_BENCH) -> list[str]:
    """``--llama-bench`` (a Python script with ``script`` as its body) and ``--gguf`` (a file of 1 MB) in ``folder``."""
    fake, gguf = folder / "llama-bench", folder / "model.gguf"
    fake.write_text(f"#!{sys.executable}\n{script}")
    fake.chmod(0o755)
    gguf.write_bytes(bytes(10**6))
    return ["--llama-bench", str(fake), "--gguf", str(gguf)]


def test_bandwidth_runs_leave_the_thread_count_they_found() -> None:
    """The read kernel runs at each thread count asked for, then TVM's pool is back at the count the
    caller had set: ``bench generate``'s lutc rows at 1 thread once ran at 2 after it."""
    from lutc.bench.roofline import measure_bandwidth
    from lutc.bench.timing import TimingPolicy
    from lutc.runtime import get_threads, set_threads

    set_threads(1)
    measured = measure_bandwidth([1, 2], 1, 1, TimingPolicy(repeat=2, min_time=0.01))
    assert [(b.kind, b.threads) for b in measured] == [("cold", 1), ("cold", 2), ("hot", 1), ("hot", 2)]
    assert get_threads() == 1


def test_step_roofline_from_known_bytes_and_bandwidth() -> None:
    """1 GB at 20 GB/s: a 50 ms floor; a 100 ms step moves 10 GB/s, half the roofline; a 40 ms one 1.25."""
    roof = StepRoofline(10**9, 20.0)
    assert roof.floor_ms == pytest.approx(50.0)
    assert (roof.gbps(100.0), roof.fraction(100.0)) == pytest.approx((10.0, 0.5))
    assert roof.fraction(40.0) == pytest.approx(1.25) and roof.cells(40.0) == "25.0 | 1.25"
    assert "2 thread(s): 20.0 GB/s; the 1.000 GB of weights" in roof.note(2) and "take 50.00 ms" in roof.note(2)
    with pytest.raises(ValueError, match="GB/s > 0"):
        StepRoofline(1, 0.0)


def test_streamed_bytes_are_the_lut_weights_and_the_float_matmul_weights() -> None:
    """packed.* parameters, float MatMul/Gemm initializers (directly or through a tied head's Transpose);
    not an embedding table a Gather reads, not an integer initializer, not a weight the step takes unpacked."""
    from onnx import TensorProto, helper, numpy_helper

    def init(name: str, shape: tuple[int, ...], dtype=np.float32) -> TensorProto:
        return numpy_helper.from_array(np.zeros(shape, dtype), name)

    node = helper.make_node
    nodes = [node("Gather", ["table", "ids"], ["x"]), node("MatMul", ["x", "w"], ["y"]),
             node("Transpose", ["table"], ["head"]), node("MatMul", ["y", "head"], ["z"]),
             node("Gemm", ["z", "g16", "b"], ["out"]), node("Gather", ["shape", "ids"], ["s"])]  # fmt: skip
    inits = [init("table", (100, 8)), init("w", (8, 8)), init("g16", (8, 4), np.float16), init("b", (4,)),
             init("shape", (4,), np.int64)]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [], [], inits)
    assert float_matmul_bytes(graph) == (100 * 8 + 8 * 8 + 4) * 4 + 8 * 4 * 2
    layout = WeightLayout((WeightSpec("packed.data:m0", (8, 16), "uint8"), WeightSpec("packed.scales:m0", (8, 2),
                           "float32"), WeightSpec("codes:m1", (64,), "uint8")))  # fmt: skip
    assert streamed_bytes(layout, graph) == 8 * 16 + 8 * 2 * 4 + float_matmul_bytes(graph)


def _llama_args(folder: Path, script: str) -> argparse.Namespace:
    binary, gguf = _fake_llama(folder, script)[1::2]
    return argparse.Namespace(llama_bench=Path(binary), gguf=Path(gguf), prompt=8, tokens=4, rounds=2)


def test_llama_bench_rows_are_read_from_its_json(tmp_path: Path) -> None:
    """prefill ms = prompt / prefill tok/s; decode ms = 1 / decode tok/s; llama-bench gets -p -n -t -r -o json."""
    result = run_llama_bench(_llama_args(tmp_path, FAKE_LLAMA_BENCH), threads=2)
    assert result == {"prefill_ms": 8 / 400 * 1e3, "decode_median_ms": 1e3 / 50, "decode_min_ms": None,
                      "gguf_bytes": 10**6}  # fmt: skip
    argv = (tmp_path / "llama-bench.argv").read_text()
    assert argv == f"-m {tmp_path / 'model.gguf'} -p 8 -n 4 -t 2 -r 2 -o json"


@pytest.mark.parametrize(("script", "error"), [
    (FAILING_LLAMA_BENCH, "llama-bench exited with 1: llama_bench: error: no model"),
    ("print('not json')", "llama-bench's output was not understood (JSONDecodeError"),
    ("print('[{\"n_prompt\": 8, \"avg_ts\": 400}]')", "llama-bench's output was not understood (KeyError: 'decode')"),
])  # fmt: skip
def test_llama_bench_failures_are_errors_not_exceptions(tmp_path: Path, script: str, error: str) -> None:
    assert run_llama_bench(_llama_args(tmp_path, script), threads=1)["error"].startswith(error)


def test_a_missing_llama_bench_is_an_error_and_no_paths_no_run(tmp_path: Path) -> None:
    args = _llama_args(tmp_path, FAKE_LLAMA_BENCH)
    args.llama_bench = tmp_path / "absent"
    assert run_llama_bench(args, threads=1)["error"].startswith("llama-bench did not start: [Errno 2]")
    args.llama_bench = None
    assert run_llama_bench(args, threads=1) is None


def test_generate_takes_both_spellings_of_the_llama_bench_flag(tmp_path: Path, capsys) -> None:
    model = str(Path(__file__).parent / "corpus" / "llama_genai_int4.onnx")
    binary, gguf = _fake_llama(tmp_path)[1::2]
    for flag in ("--llama-bench", "--llamacpp-bench"):
        args = parse_args(["generate", model, flag, binary, "--gguf", gguf])
        assert (args.llama_bench, args.gguf) == (Path(binary), Path(gguf))
    for argv, message in [([binary], "--llama-bench and --gguf go together"),
                          ([binary, "--gguf", str(tmp_path / "absent.gguf")], "no such GGUF file")]:  # fmt: skip
        with pytest.raises(SystemExit):
            parse_args(["generate", model, "--llamacpp-bench", *argv])
        assert message in capsys.readouterr().err


def test_generate_benchmark_on_a_ring_buffer_family(tmp_path: Path) -> None:
    """The gemma2 family graph (layer 0: a window-sized ring-buffer cache of 16 rows) through a prompt of 20
    and 6 tokens: every engine runs it (onnxruntime-genai where installed) and lutc exact's tokens are ORT's."""
    out, folder = tmp_path / "out", FAMILIES / "gemma2"
    genai = ["--genai-dir", str(folder)] if importlib.util.find_spec("onnxruntime_genai") else []
    argv = ["generate", str(folder / "model.onnx"), "--prompt", "20", "--tokens", "6", "--rounds", "1", *genai]
    assert main([*argv, "--out", str(out), *_fake_llama(tmp_path, FAILING_LLAMA_BENCH)]) == 0
    report = json.loads((out / "generate.json").read_text())
    engines = {row["engine"]: row["tokens"] for row in report["rows"]}
    expected = {"lutc fast", "lutc exact", "ORT acc0", "ORT acc4"} | ({"onnxruntime-genai"} if genai else set())
    assert set(engines) == expected
    assert engines["lutc exact"] == engines["ORT acc0"] and len(set(engines["ORT acc0"])) > 2
    assert report["kernel_share"]["1"]["lut_ms"] > 0
    assert report["failed"]["llama.cpp"] == "1 thread(s): llama-bench exited with 1: llama_bench: error: no model"
    assert "llama.cpp failed: 1 thread(s): llama-bench exited with 1" in (out / "generate.md").read_text()


def test_generate_benchmark_reports_a_refused_model(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """gpt-oss's QMoE: lutc's ModelError as one line and exit status 2, not a traceback."""
    assert main(["generate", str(FAMILIES / "gptoss" / "model.onnx"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: unsupported operators: com.microsoft::QMoE")
