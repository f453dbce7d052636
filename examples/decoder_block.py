"""A synthetic decoder block, kernel against kernel: compile a low-bit quantized block, check it
against ONNX Runtime, time both (the real-model quickstart is ``examples/quickstart.py``).

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

    python examples/decoder_block.py --threads 2 --bits 2 --hidden 1024
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import lutc
from lutc import zoo
from lutc.bench.model import (
    SHAPES,
    TABLE_NOTE,
    TOLERANCE,
    LutcBuild,
    bench_shape,
    errors,
    markdown_table,
    ort_session,
    ort_variants,
    with_accuracy_level,
)


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


def fast_ort(model: onnx.ModelProto, threads: int) -> dict[str, ort.InferenceSession]:
    """ORT's fast sessions: accuracy_level 4, and for 2-bit also the LUT GEMM (when it takes effect)."""
    notes: list[str] = []
    sessions = ort_variants(model, threads, zoo.decoder_inputs(model, 1, 4, seed=1), notes)
    for note in notes:
        print(f"note: {note}")
    return sessions


def check(compiled: lutc.CompiledModel, model: onnx.ModelProto, fast: dict, args: argparse.Namespace) -> bool:
    """Print lutc's errors (and fast ORT's, for scale) against two references; True when lutc's are in tolerance."""
    ort_nbits = ort_session(with_accuracy_level(model, 0), args.threads)
    reference = ort_session(zoo.dequantized_reference(model), args.threads)
    tol = TOLERANCE[args.mode]
    print(f"\ncorrectness: relative error = |y - ref| / |ref| over the output, lutc's must be <= {tol:g} ({args.mode})")
    print(f"  {'input':14s} {'compared':44s} {'max abs':>10s} {'relative':>10s}")
    ok = True
    for batch, seq in ((1, 1), (1, 16), (2, 7)):
        feeds = zoo.decoder_inputs(model, batch, seq, seed=seq)
        y, y_ref = compiled(**feeds), reference.run(None, feeds)[0]
        rows = [
            ("lutc vs ORT MatMulNBits (fp32 activations)", errors(y, ort_nbits.run(None, feeds)[0]), True),
            ("lutc vs ORT on dequantized (float) weights", errors(y, y_ref), True),
        ]
        rows += [(f"{name} vs dequantized (ORT's own error)", errors(sess.run(None, feeds)[0], y_ref), False)
                 for name, sess in fast.items()]  # fmt: skip
        for i, (what, (abs_err, rel_err), checked) in enumerate(rows):
            bad = checked and not rel_err <= tol
            ok &= not bad
            label = f"x[{batch}, {seq}, {args.hidden}]" if i == 0 else ""
            print(f"  {label:14s} {what:44s} {abs_err:10.2e} {rel_err:10.2e}{'  FAIL' if bad else ''}")
    return ok


def benchmark(compiled: lutc.CompiledModel, fast: dict, model: onnx.ModelProto, args: argparse.Namespace) -> None:
    """Print decode and prefill latency of lutc and of each fast ORT session, side by side."""
    print(f"\nlatency: {args.threads} thread(s), {args.repeat} timed calls per shape and runtime\n")
    reference = ort_session(with_accuracy_level(model, 0), args.threads)
    build = LutcBuild(args.mode, args.mode, compiled)
    rows = []
    for name, (batch, seq) in SHAPES.items():
        feeds = zoo.decoder_inputs(model, batch, seq)
        shape = (name, batch, seq)
        rows += bench_shape([build], fast, reference, feeds, args.repeat, threads=args.threads, shape=shape)
    print(markdown_table(rows))
    print(f"\n{TABLE_NOTE}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lutc-decoder-block-") as tmp:
        path = make_model(args, Path(tmp))
        start = time.perf_counter()
        compiled = lutc.build(path, "x86", mode=args.mode, threads=args.threads)
        print(f"compiled in {time.perf_counter() - start:.1f} s\n")
        print(compiled.summary())
        model = onnx.load(path)
    y = compiled(**zoo.decoder_inputs(model, 1, 16))
    print(f"\nran: x[1, 16, {args.hidden}] -> y{list(y.shape)}, mean |y| = {np.abs(y).mean():.3f}")
    fast = fast_ort(model, args.threads)
    ok = check(compiled, model, fast, args)
    benchmark(compiled, fast, model, args)
    print("\nOK" if ok else "\nFAILED: lutc's output is outside the tolerance")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
