"""lutc quickstart: compile a low-bit quantized decoder block, check it against ONNX Runtime, time both.

1. builds a Llama-style decoder block with :mod:`lutc.zoo`, quantizes its seven projections to
   ``com.microsoft::MatMulNBits`` and saves it to a temporary directory;
2. compiles it with ``lutc.build``;
3. runs it;
4. compares it with ONNX Runtime running the same quantized model (fp32 activations,
   ``accuracy_level`` 0) and the float model with the dequantized weights;
5. times decode (batch 1, seq 1) and prefill (batch 1, seq 16) against ONNX Runtime's fast
   settings on the same number of threads: ``accuracy_level=4`` (int8 activations) and, for
   2-bit weights, also MLAS's LUT GEMM (``mlas.use_lut_gemm=1``); neither is always the faster.

Exits with status 1 when lutc's output is off by more than the mode's tolerance.

    python examples/quickstart.py --threads 2 --bits 2 --hidden 1024
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import lutc
from lutc import zoo

TOLERANCE = {"fast": 3e-2, "exact": 1e-4}
"""Largest accepted ``|lutc - reference| / |reference|`` (norms over the whole output).

fast: int8 tables cost 0.7-1.3 % relative error per matmul (README, Fast mode) on the block's
contribution; errors of chained matmuls add up, the residual stream dilutes them. exact: float32
tables equal dequantize-then-matmul up to fp32 rounding (~1e-6 here)."""
ORT_LUT_GEMM = {"mlas.use_lut_gemm": "1"}
"""Session option selecting MLAS's T-MAC-style LUT GEMM for 2-bit MatMulNBits."""
SHAPES = {"decode": (1, 1), "prefill": (1, 16)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="threads for lutc and ONNX Runtime (default 1)")
    parser.add_argument("--bits", type=int, default=2, choices=(2, 4), help="weight bits (default 2)")
    parser.add_argument("--block-size", type=int, default=128, help="weights per quantization block (default 128)")
    parser.add_argument(
        "--hidden", type=int, default=2048, help="model width; MLP is 2.75x, heads of 64 (default 2048)"
    )
    parser.add_argument("--mode", choices=("fast", "exact"), default="fast", help="lutc table mode (default fast)")
    parser.add_argument("--repeat", type=int, default=50, help="timed calls per shape and runtime (default 50)")
    args = parser.parse_args(argv)
    if args.hidden % 64 or args.hidden % args.block_size:
        parser.error(f"--hidden {args.hidden} must be a multiple of 64 and of --block-size {args.block_size}")
    return args


def make_model(args: argparse.Namespace, directory: Path) -> Path:
    """The quantized decoder block, saved as ``decoder_w{bits}.onnx`` in ``directory``."""
    block = args.block_size
    intermediate = -(-args.hidden * 11 // 4 // block) * block  # Llama's ratio, rounded up to whole blocks
    float_model = zoo.float_decoder_block(args.hidden, args.hidden // 64, intermediate)
    model = zoo.quantize_matmuls(float_model, args.bits, block)
    path = directory / f"decoder_w{args.bits}.onnx"
    onnx.save(model, path)
    size = path.stat().st_size / 2**20
    print(f"model: hidden {args.hidden}, {args.hidden // 64} heads, MLP {intermediate}, {args.bits}-bit weights in "
          f"blocks of {block}: {path} ({size:.1f} MiB)")  # fmt: skip
    return path


def with_accuracy_level(model: onnx.ModelProto, level: int) -> onnx.ModelProto:
    """A copy whose MatMulNBits nodes have ``accuracy_level=level`` (4: int8 activations)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for node in out.graph.node:
        if node.op_type == "MatMulNBits":
            kept = [a for a in node.attribute if a.name != "accuracy_level"]
            del node.attribute[:]
            node.attribute.extend([*kept, onnx.helper.make_attribute("accuracy_level", level)])
    return out


def ort_session(model: onnx.ModelProto, threads: int, config: dict[str, str] | None = None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, value)
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def fast_ort(model: onnx.ModelProto, bits: int, threads: int) -> dict[str, ort.InferenceSession]:
    """ORT's fast sessions: accuracy_level 4, and for 2-bit also the LUT GEMM (when it takes effect)."""
    acc4 = with_accuracy_level(model, 4)
    sessions = {"ORT acc4": ort_session(acc4, threads)}
    if bits == 2:
        lut = ort_session(acc4, threads, ORT_LUT_GEMM)
        feeds = zoo.decoder_inputs(model, 1, 4, seed=1)
        if np.array_equal(lut.run(None, feeds)[0], sessions["ORT acc4"].run(None, feeds)[0]):
            print("note: ORT ignored mlas.use_lut_gemm=1 (same output as without it)")
        else:
            sessions["ORT LUT"] = lut
    return sessions


def _errors(y: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max abs error, norm-relative error)."""
    return float(np.abs(y - ref).max()), float(np.linalg.norm(y - ref) / np.linalg.norm(ref))


def check(compiled: lutc.CompiledModel, model: onnx.ModelProto, fast: dict, args: argparse.Namespace) -> bool:
    """Print lutc's errors (and fast ORT's, for scale) against two references; True when lutc's are in tolerance."""
    ort_nbits = ort_session(model, args.threads)
    reference = ort_session(zoo.dequantized_reference(model), args.threads)
    tol = TOLERANCE[args.mode]
    print(f"\ncorrectness: relative error = |y - ref| / |ref| over the output, lutc's must be <= {tol:g} ({args.mode})")
    print(f"  {'input':14s} {'compared':44s} {'max abs':>10s} {'relative':>10s}")
    ok = True
    for batch, seq in ((1, 1), (1, 16), (2, 7)):
        feeds = zoo.decoder_inputs(model, batch, seq, seed=seq)
        y, y_ref = compiled(**feeds), reference.run(None, feeds)[0]
        rows = [
            ("lutc vs ORT MatMulNBits (fp32 activations)", _errors(y, ort_nbits.run(None, feeds)[0]), True),
            ("lutc vs ORT on dequantized (float) weights", _errors(y, y_ref), True),
        ]
        rows += [(f"{name} vs dequantized (ORT's own error)", _errors(sess.run(None, feeds)[0], y_ref), False)
                 for name, sess in fast.items()]  # fmt: skip
        for i, (what, (abs_err, rel_err), checked) in enumerate(rows):
            bad = checked and not rel_err <= tol
            ok &= not bad
            label = f"x[{batch}, {seq}, {args.hidden}]" if i == 0 else ""
            print(f"  {label:14s} {what:44s} {abs_err:10.2e} {rel_err:10.2e}{'  FAIL' if bad else ''}")
    return ok


def time_call(call: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(min, median) microseconds per call over ``repeat`` calls, after a warm-up."""
    for _ in range(max(3, repeat // 10)):
        call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times) * 1e6, statistics.median(times) * 1e6


def benchmark(compiled: lutc.CompiledModel, fast: dict, model: onnx.ModelProto, args: argparse.Namespace) -> None:
    """Print decode and prefill latency of lutc and of each fast ORT session."""
    print(f"\nlatency: microseconds per call, {args.threads} thread(s), min / median of {args.repeat} calls")
    print("(every runtime is called from Python with numpy inputs and returns a numpy output)")
    header = "".join(f"{name + ' min':>14s} {'median':>8s}" for name in ("lutc", *fast))
    print(f"  {'shape':16s}{header} {'best ORT/lutc':>14s}")
    for name, (batch, seq) in SHAPES.items():
        feeds = zoo.decoder_inputs(model, batch, seq)
        ours = time_call(lambda feeds=feeds: compiled(**feeds), args.repeat)
        theirs = [time_call(lambda s=s, feeds=feeds: s.run(None, feeds), args.repeat) for s in fast.values()]
        times = "".join(f"{t[0]:14.0f} {t[1]:8.0f}" for t in (ours, *theirs))
        ratio = min(t[1] for t in theirs) / ours[1]
        print(f"  {name:8s}[{batch}, {seq:2d}]{times} {ratio:13.2f}x")
    print("  (best ORT/lutc: the faster ORT session's median over lutc's; above 1 means lutc is faster)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lutc-quickstart-") as tmp:
        path = make_model(args, Path(tmp))
        start = time.perf_counter()
        compiled = lutc.build(path, "x86", mode=args.mode, threads=args.threads)
        print(f"compiled in {time.perf_counter() - start:.1f} s\n")
        print(compiled.summary())
        model = onnx.load(path)
    y = compiled(**zoo.decoder_inputs(model, 1, 16))
    print(f"\nran: x[1, 16, {args.hidden}] -> y{list(y.shape)}, mean |y| = {np.abs(y).mean():.3f}")
    fast = fast_ort(model, args.bits, args.threads)
    ok = check(compiled, model, fast, args)
    benchmark(compiled, fast, model, args)
    print("\nOK" if ok else "\nFAILED: lutc's output is outside the tolerance")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
