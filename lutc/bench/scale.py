"""``python -m lutc.bench scale MODEL_DIR``: a real-size decoder from build to long generations.

For an onnxruntime-genai model folder (``model.onnx``, its external data, ``genai_config.json``):

1. **build** ``lutc.build_decoder`` in a fresh process: seconds and peak RSS, then
   ``lutc.export_decoder`` (seconds, bytes on disk);
2. **load** ``lutc.load_decoder`` in another fresh process: seconds and RSS after the load;
3. **speed** in that process, per thread count, rounds interleaved with onnxruntime-genai's own
   generator on the same folder (each engine's model loaded once): prefill of ``--prompt`` tokens
   and the decode step (median and min), with the fraction of the DRAM roofline a step reaches
   (the weights a step streams, :func:`lutc.bench.roofline.streamed_bytes`, over the best read
   bandwidth measured before and after the timings); where ``--llama-bench`` and ``--gguf`` are
   given, llama.cpp's ``llama-bench`` on that GGUF (:mod:`lutc.bench.llamacpp`);
4. **memory over a long generation**, in a fresh process loading the exported decoder: the largest
   RSS growth over ``--long`` tokens (capped by the model's position limit) and the growth after
   it, beside the KV cache's bytes.

Writes ``scale.json`` and ``scale.md`` under ``--out``.
"""

from __future__ import annotations

import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .llamacpp import ENGINE, run_llama_bench

BUILD = textwrap.dedent(
    """
    import json, resource, sys, time
    start = time.perf_counter()
    import onnx
    import lutc
    from lutc.bench.roofline import streamed_bytes
    model, step = lutc.build_decoder(sys.argv[1])
    built = time.perf_counter()
    folder = lutc.export_decoder(model, step, sys.argv[2])
    exported = time.perf_counter()
    streamed = streamed_bytes(step.layout, onnx.load(sys.argv[1], load_external_data=False).graph)
    print(json.dumps({"build_s": built - start, "export_s": exported - built, "weight_bytes": model.weight_bytes,
                      "streamed_bytes": streamed, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "files": {p.name: p.stat().st_size for p in folder.iterdir()}}))
    """
)


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def run_build(model_dir: Path, out: Path) -> dict:
    """Build and export in a fresh process (its peak RSS is the build's)."""
    done = subprocess.run([sys.executable, "-c", BUILD, str(model_dir / "model.onnx"), str(out)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"the build failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _lutc_run(model, step, ids: np.ndarray, tokens: int) -> dict:
    import lutc

    run = lutc.generate(model, ids, tokens, step_model=step)
    return {"prefill_ms": run.prefill_seconds * 1e3, "decode_ms": [s * 1e3 for s in run.step_seconds]}


def _genai_model(model_dir: Path, threads: int):
    import onnxruntime_genai as og

    config = og.Config(str(model_dir))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
    return og.Model(config)


def _genai_run(model, ids: np.ndarray, tokens: int) -> dict:
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=ids.shape[1] + tokens, min_length=ids.shape[1] + tokens)
    generator = og.Generator(model, params)
    start = time.perf_counter()
    generator.append_tokens(ids)
    generator.generate_next_token()
    prefill = time.perf_counter() - start
    steps = []
    for _ in range(tokens - 1):
        start = time.perf_counter()
        generator.generate_next_token()
        generator.get_next_tokens()
        steps.append(time.perf_counter() - start)
    return {"prefill_ms": prefill * 1e3, "decode_ms": [s * 1e3 for s in steps]}


def _summary(runs: list[dict]) -> dict:
    """The round with the lowest median step; prefill as the best round's."""
    best = min(runs, key=lambda r: statistics.median(r["decode_ms"]))
    return {"prefill_ms": min(r["prefill_ms"] for r in runs), "decode_median_ms": statistics.median(best["decode_ms"]),
            "decode_min_ms": min(best["decode_ms"])}  # fmt: skip


def run_speed(args, model, step, threads: int) -> dict:
    """lutc and onnxruntime-genai interleaved, ``args.rounds`` rounds, at ``threads``."""
    from ..runtime import set_threads

    set_threads(threads)
    ids = np.random.default_rng(0).integers(3, 200, (1, args.prompt), dtype=np.int64)
    engines = {"lutc fast": lambda: _lutc_run(model, step, ids, args.tokens)}
    if not args.no_genai:
        genai = _genai_model(args.model_dir, threads)
        engines["onnxruntime-genai"] = lambda: _genai_run(genai, ids, args.tokens)
    runs: dict[str, list[dict]] = {name: [] for name in engines}
    for _ in range(args.rounds):
        for name, engine in engines.items():
            runs[name].append(engine())
    return {name: _summary(r) for name, r in runs.items()}


LONG = textwrap.dedent(
    """
    import json, statistics, sys, warnings
    import numpy as np
    import lutc
    from lutc.decode import cache_layout

    def rss():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * 4096

    model, step = lutc.load_decoder(sys.argv[1])
    ids = np.array([[1, 5, 17]], np.int64)
    lutc.generate(model, ids, 16, step_model=step)
    before, samples = rss(), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the position limit's warning: the report says how many ran
        run = lutc.generate(model, ids, int(sys.argv[2]), step_model=step,
                            progress=lambda i: samples.append(rss() - before) if i % 256 == 0 else None)
    layout = cache_layout(model.inputs, model.outputs)
    positions = ids.shape[1] + run.tokens.shape[1]
    kv = sum(heads * size * 4 * positions for heads, size in layout.head_shapes.values())
    print(json.dumps({"tokens": int(run.tokens.shape[1]), "max_growth": max(samples, default=0),
                      "end_growth": rss() - before, "kv_bytes": kv,
                      "decode_median_ms": statistics.median(run.step_seconds) * 1e3}))
    """
)


def run_long(folder: Path, tokens: int) -> dict:
    """RSS over a generation of ``tokens`` (as many as the position limit allows) in a fresh process
    that loads the exported decoder: the largest growth seen (every 256 tokens) and after it."""
    done = subprocess.run([sys.executable, "-c", LONG, str(folder), str(tokens)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the long generation failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_scale(args, argv: Sequence[str]) -> int:
    import lutc

    from .machine import machine_info
    from .roofline import best_cold, dram_bandwidths

    report = {"command": "python -m lutc.bench " + shlex.join(argv), "machine": machine_info(),
              "model_dir": str(args.model_dir), "prompt": args.prompt, "tokens": args.tokens}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="lutc-scale-") as folder:
        decoder = Path(folder) / "decoder"
        print("building (a fresh process)...", flush=True)
        report["build"] = run_build(args.model_dir, decoder)
        print(f"built in {report['build']['build_s']:.1f} s; loading...", flush=True)
        before = _rss()
        start = time.perf_counter()
        model, step = lutc.load_decoder(decoder)
        report["load"] = {"load_s": time.perf_counter() - start, "rss_growth": _rss() - before}
        measured = dram_bandwidths(args.threads)  # before and after the timings: the best of both
        report["speed"] = {}
        for threads in args.threads:
            print(f"timing at {threads} thread(s)...", flush=True)
            rows = run_speed(args, model, step, threads)
            llama = run_llama_bench(args, threads)
            if llama is not None:
                rows[ENGINE] = llama
            report["speed"][threads] = rows
        report["bandwidth_gbps"] = best_cold(measured + dram_bandwidths(args.threads), args.threads)
        if args.long:
            print(f"generating {args.long} tokens for the memory check (a fresh process)...", flush=True)
            report["long"] = run_long(decoder, args.long)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (args.out / "scale.md").write_text(text)
    print(text)
    return 0


def markdown(report: dict) -> str:
    from .roofline import StepRoofline

    build, load, machine = report["build"], report["load"], report["machine"]
    weights = build["weight_bytes"]
    flags = ", ".join(f for f, on in machine["simd_flags"].items() if on)
    lines = [
        f"`{report['command']}`", "",
        f"{machine['cpu_model']} ({machine['llvm_host_cpu']}; {flags}), {machine['usable_cpus']} usable CPUs",
        "", f"- weights: {weights / 1e9:.2f} GB; files on disk: "
        + ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in sorted(build["files"].items())),
        f"- build_decoder: {build['build_s']:.1f} s, peak RSS {build['peak_rss'] / 1e9:.2f} GB "
        f"(weights + {(build['peak_rss'] - weights) / 1e9:.2f} GB); export_decoder {build['export_s']:.1f} s",
        f"- load_decoder: {load['load_s']:.1f} s, RSS +{load['rss_growth'] / 1e9:.2f} GB",
        "", f"prompt {report['prompt']} tokens, {report['tokens']} generated, batch 1, greedy", "",
        "| engine | threads | prefill ms | prefill tok/s | decode median ms | min ms | tok/s | GB/s | roofline |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    roofs = {t: StepRoofline(build["streamed_bytes"], gbps) for t, gbps in report["bandwidth_gbps"].items()}
    for threads, rows in report["speed"].items():
        for name, row in rows.items():
            if "error" in row:
                lines.append(f"| {name} | {threads} | {row['error']} | | | | | | |")
                continue
            minimum = f"{row['decode_min_ms']:.1f}" if row.get("decode_min_ms") else "-"
            prefill, step = row["prefill_ms"], row["decode_median_ms"]
            lines.append(f"| {name} | {threads} | {prefill:.0f} | {report['prompt'] / prefill * 1e3:.1f} | {step:.1f} "
                         f"| {minimum} | {1e3 / step:.1f} | {roofs[threads].cells(step)} |")  # fmt: skip
    lines += ["", *(roof.note(threads) for threads, roof in roofs.items())]
    long = report.get("long")
    if long:
        most, end, kv = long["max_growth"] / 1e6, long["end_growth"] / 1e6, long["kv_bytes"] / 1e6
        lines.append(f"\nlong generation ({long['tokens']} tokens, a fresh process): RSS grew by at most {most:.0f} MB "
                     f"({end:.0f} MB after it) for a KV cache of {kv:.0f} MB at the end (a step holds the past and the "
                     f"present cache: 2x); median step {long['decode_median_ms']:.1f} ms")  # fmt: skip
    return "\n".join(lines) + "\n"
