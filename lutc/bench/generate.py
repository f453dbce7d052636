"""``python -m lutc.bench generate``: greedy decoding tokens/s of lutc beside ONNX Runtime (and
onnxruntime-genai's generator where it is installed, llama.cpp's ``llama-bench`` on a GGUF where
given), with the share of lutc's decode step spent outside its LUT kernels, the fraction of the
DRAM roofline each engine's step reaches and whether the greedy tokens agree.

Every ONNX engine runs the same loop (:func:`lutc.decode.greedy_loop`: argmax of the last logits,
the step's present tensors fed back as the next past), interleaved round by round; llama-bench
times its own prefill and generation after them. The roofline is lutc's step's weight bytes
(:func:`lutc.bench.roofline.streamed_bytes`) over the best DRAM read bandwidth measured before and
after the timings.
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from ..decode import CacheLayout, Generation, build_decoder, cache_layout, greedy_loop, step_feeds
from ..runtime import set_threads
from .llamacpp import ENGINE as LLAMA_CPP
from .llamacpp import run_llama_bench
from .machine import machine_info
from .model import ort_session, with_accuracy_level
from .roofline import DRAM_MIB, StepRoofline, best_cold, dram_bandwidths, float_matmul_bytes, streamed_bytes

LUT_KERNELS = ("lut_matmul", "lut_precompute")
"""Names of the PrimFuncs lutc's LUT rewrite makes (the table precompute and the lookup GEMM)."""


@dataclass(frozen=True)
class GenerateRow:
    """One engine at one thread count; llama.cpp's row has no min step and no tokens (``None``)."""

    engine: str
    threads: int
    prefill_ms: float
    decode_median_ms: float
    decode_min_ms: float | None
    tokens_per_second: float
    tokens: list[int] | None


def _row(engine: str, threads: int, run: Generation) -> GenerateRow:
    steps = run.step_seconds
    return GenerateRow(engine, threads, run.prefill_seconds * 1e3, statistics.median(steps) * 1e3, min(steps) * 1e3,
                       run.decode_tokens_per_second, run.tokens[0].tolist())  # fmt: skip


def _llama_row(result: dict, threads: int) -> GenerateRow:
    """The row of a :func:`~lutc.bench.llamacpp.run_llama_bench` result (its mean decode step as the median)."""
    step = result["decode_median_ms"]
    return GenerateRow(LLAMA_CPP, threads, result["prefill_ms"], step, None, 1e3 / step, None)


def ort_generate(model: onnx.ModelProto, layout: CacheLayout, ids: np.ndarray, tokens: int, threads: int, level: int):
    """The greedy loop on an ORT CPU session with ``MatMulNBits`` at ``accuracy_level=level``."""
    session = ort_session(with_accuracy_level(model, level), threads)
    outputs = [o.name for o in session.get_outputs()]
    return greedy_loop(lambda feeds: session.run(None, feeds), layout, outputs, ids, tokens)


def genai_generate(model_dir: Path, ids: np.ndarray, tokens: int, threads: int | None = None) -> Generation:
    """onnxruntime-genai's own generator on its model folder (``genai_config.json``), greedy, on
    ``threads`` intra-op threads (the config's setting where ``None``), on the CPU whatever the config's
    providers (a ``-e cuda`` build names CUDA; ORT's CPU EP runs it)."""
    import onnxruntime_genai as og

    config = og.Config(str(model_dir))
    config.clear_providers()
    if threads is not None:
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
    model = og.Model(config)
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=ids.shape[1] + tokens, min_length=ids.shape[1] + tokens)
    generator = og.Generator(model, params)
    times, out = [], []
    start = time.perf_counter()
    generator.append_tokens(ids)
    for _ in range(tokens):
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
    return Generation(np.array([out]), ids.shape[1], times[0], tuple(times[1:]))


def kernel_share(model, layout: CacheLayout, past: int, repeat: int = 20) -> dict[str, float]:
    """One decode step at ``past`` cached positions (the best of ``repeat`` VM calls) and the time
    in its LUT kernels (each timed between the VM's before/after instrument callbacks). A
    window-sized cache holds its window's rows whatever ``past``."""
    import tvm
    from tvm import relax

    feeds = step_feeds(layout, np.ones((1, 1), np.int64), _random_cache(layout, past), past + 1)
    vm = relax.VirtualMachine(model._executable, tvm.cpu())
    args = [tvm.runtime.tensor(feeds[i.name]) for i in model.inputs]
    args += model.weight_arguments
    step = min(_timed(lambda: vm["main"](*args)) for _ in range(repeat))
    spent: dict[str, float] = defaultdict(float)
    began = [0.0]

    def instrument(_func, name, before, _ret, *_args):
        if before:
            began[0] = time.perf_counter()
        else:
            spent[name] += time.perf_counter() - began[0]
        return 0

    vm.set_instrument(instrument)
    for _ in range(repeat):
        vm["main"](*args)
    lut = sum(t for name, t in spent.items() if name.startswith(LUT_KERNELS)) / repeat
    return {"step_ms": step * 1e3, "lut_ms": lut * 1e3, "outside_lut": max(0.0, 1 - lut / step)}


def _random_cache(layout: CacheLayout, past: int) -> dict[str, np.ndarray]:
    """Batch-1 past tensors of ``past`` rows (a window-sized cache: its window's), in the cache's dtype."""
    rng = np.random.default_rng(0)
    shapes = {name: (1, heads, layout.window_rows.get(name, past), size)
              for name, (heads, size) in layout.head_shapes.items()}  # fmt: skip
    dtype = layout.dtypes.get
    return {name: rng.standard_normal(shape).astype(dtype(name, "float32")) for name, shape in shapes.items()}


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


HEADER = ["engine", "threads", "prefill ms", "decode median ms", "min ms", "tokens/s", "vs lutc fast", "GB/s",
          "roofline", "tokens = lutc exact"]  # fmt: skip


def _markdown(report: dict) -> str:
    machine = report["machine"]
    lines = [f"`{report['command']}`", "", f"{machine['cpu_model']}, {machine['usable_cpus']} usable CPUs; prompt "
             f"{report['prompt']} tokens, {report['tokens']} generated, batch 1", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]  # fmt: skip
    fast = {r["threads"]: r for r in report["rows"] if r["engine"] == "lutc fast"}
    exact = {r["threads"]: r["tokens"] for r in report["rows"] if r["engine"] == "lutc exact"}
    for r in report["rows"]:
        ratio = r["tokens_per_second"] / fast[r["threads"]]["tokens_per_second"]
        same = "-" if r["tokens"] is None else "yes" if r["tokens"] == exact.get(r["threads"]) else "no"
        least = "-" if r["decode_min_ms"] is None else f"{r['decode_min_ms']:.2f}"
        lines.append(f"| {r['engine']} | {r['threads']} | {r['prefill_ms']:.2f} | {r['decode_median_ms']:.2f} | "
                     f"{least} | {r['tokens_per_second']:.1f} | {ratio:.2f} | {r['gbps']:.1f} | {r['roofline']:.2f} | "
                     f"{same} |")  # fmt: skip
    return "\n".join(lines + _notes(report)) + "\n"


def _notes(report: dict) -> list[str]:
    """The lines under the table: failures, llama.cpp's weights, the bandwidths and lutc's kernel share."""
    lines = [f"\n{name} failed: {message}" for name, message in report.get("failed", {}).items()]
    llama = report.get("llama_cpp")
    if llama is not None:
        lines.append(f"\n{LLAMA_CPP}: llama-bench; its weights are the GGUF given, {llama['gguf']} "
                     f"({llama['gguf_bytes'] / 1e6:.1f} MB: the same checkpoint in llama.cpp's own quantization); "
                     "prefill of the prompt and generation of the tokens from an empty cache, timed separately by "
                     "llama-bench (means of --rounds runs: no min step, no tokens to compare)")  # fmt: skip
    roofline = report["roofline"]
    lines += ["\n" + StepRoofline(roofline["streamed_bytes"], gbps).note(threads)
              for threads, gbps in roofline["bandwidth_gbps"].items()]  # fmt: skip
    past = report["prompt"] + report["tokens"] // 2
    for threads, share in report["kernel_share"].items():
        lines.append(
            f"\nlutc fast, {threads} thread(s), one decode step at past {past} (the step model's VM call alone): "
            f"{share['step_ms']:.2f} ms, of which LUT kernels {share['lut_ms']:.2f} ms: {share['outside_lut']:.0%} "
            "outside them (attention, norms, the VM's shape and allocation work)"
        )
    return lines


def _engines(args: argparse.Namespace, model: onnx.ModelProto, ids: np.ndarray, threads: int) -> tuple[dict, dict]:
    """The compiled lutc decoders (``(model, step_model)`` per mode) and a zero-argument run per engine."""
    import lutc

    built = {mode: build_decoder(args.model, mode=mode, threads=threads) for mode in ("fast", "exact")}
    layout = cache_layout(built["fast"][0].inputs, built["fast"][0].outputs)
    engines = {f"lutc {mode}": functools.partial(lutc.generate, pair[0], ids, args.tokens, step_model=pair[1])
               for mode, pair in built.items()}  # fmt: skip
    for level in (0, 4):
        engines[f"ORT acc{level}"] = functools.partial(ort_generate, model, layout, ids, args.tokens, threads, level)
    if args.genai_dir is not None:
        engines["onnxruntime-genai"] = functools.partial(genai_generate, args.genai_dir, ids, args.tokens, threads)
    return built, engines


def _run_engine(name: str, engine, runs: dict, failed: dict) -> None:
    """One run of ``engine`` into ``runs``; onnxruntime-genai's own errors (its cache buffer sized by
    the config's window, for one) are recorded in ``failed`` and it runs no more."""
    try:
        result = engine()
    except RuntimeError as err:
        if name != "onnxruntime-genai":
            raise
        failed[name] = str(err).splitlines()[0][:400]
        return
    runs[name].append(result)


def _timed_rows(engines: dict, rounds: int, threads: int, failed: dict) -> list[GenerateRow]:
    """``rounds`` interleaved rounds of every engine not in ``failed``; each engine's best round."""
    runs: dict[str, list[Generation]] = defaultdict(list)
    for _ in range(rounds):
        for name, engine in engines.items():
            if name not in failed:
                _run_engine(name, engine, runs, failed)
    return [_row(name, threads, min(results, key=lambda r: statistics.median(r.step_seconds)))
            for name, results in runs.items()]  # fmt: skip


def _llama_rows(args: argparse.Namespace, threads: int, failed: dict) -> list[GenerateRow]:
    """llama.cpp's row at ``threads`` where ``--llama-bench`` and ``--gguf`` are given; its failure
    goes to ``failed`` and it runs no more."""
    result = None if LLAMA_CPP in failed else run_llama_bench(args, threads)
    if result is None:
        return []
    if "error" in result:
        failed[LLAMA_CPP] = f"{threads} thread(s): {result['error']}"
        return []
    return [_llama_row(result, threads)]


def _row_json(row: GenerateRow, roof: StepRoofline) -> dict:
    return {**asdict(row), "gbps": roof.gbps(row.decode_median_ms), "roofline": roof.fraction(row.decode_median_ms)}


def _report(args: argparse.Namespace, argv: Sequence[str], rows: list[GenerateRow],
            roofs: dict[int, StepRoofline], graph: onnx.GraphProto) -> dict:  # fmt: skip
    """The JSON report, less the kernel shares and failures; ``roofs``: the step's roofline per thread count."""
    roofline = {"streamed_bytes": next(iter(roofs.values())).streamed_bytes,
                "float_matmul_bytes": float_matmul_bytes(graph), "dram_mib": DRAM_MIB,
                "bandwidth_gbps": {t: roof.bandwidth_gbps for t, roof in roofs.items()}}  # fmt: skip
    report = {"command": "python -m lutc.bench " + shlex.join(argv), "machine": machine_info(),
              "model": str(args.model), "prompt": args.prompt, "tokens": args.tokens,
              "rows": [_row_json(r, roofs[r.threads]) for r in rows], "roofline": roofline}  # fmt: skip
    if args.llama_bench is not None and args.gguf is not None:
        size = args.gguf.stat().st_size if args.gguf.is_file() else 0
        report["llama_cpp"] = {"llama_bench": str(args.llama_bench), "gguf": str(args.gguf), "gguf_bytes": size}
    return report


def run_generate(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Build lutc fast and exact, run every engine ``args.rounds`` times interleaved (then llama-bench);
    write ``generate.json``/``generate.md``; 1 when exact-mode tokens differ from ORT accuracy_level 0."""
    model = onnx.load(str(args.model))
    ids = np.random.default_rng(0).integers(3, 200, (1, args.prompt), dtype=np.int64)
    rows, shares, failed, measured = [], {}, {}, []
    for threads in args.threads:
        built, engines = _engines(args, model, ids, threads)
        measured = measured or dram_bandwidths(args.threads)  # before the timings and after them: the best of both
        set_threads(threads)  # lutc's rows run at this count whatever ran before
        rows += _timed_rows(engines, args.rounds, threads, failed) + _llama_rows(args, threads, failed)
        step = built["fast"][1]
        shares[threads] = kernel_share(step, cache_layout(step.inputs, step.outputs), args.prompt + args.tokens // 2)
        streamed = streamed_bytes(step.layout, model.graph)  # the same at every thread count
    bandwidth = best_cold(measured + dram_bandwidths(args.threads), args.threads)
    roofs = {t: StepRoofline(streamed, gbps) for t, gbps in bandwidth.items()}
    report = _report(args, argv, rows, roofs, model.graph) | {"kernel_share": shares, "failed": failed}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generate.json").write_text(json.dumps(report, indent=1))
    text = _markdown(report)
    (args.out / "generate.md").write_text(text)
    print(text)
    exact = {r.threads: r.tokens for r in rows if r.engine == "lutc exact"}
    return 0 if all(r.tokens == exact[r.threads] for r in rows if r.engine == "ORT acc0") else 1
