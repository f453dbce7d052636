"""``python -m lutc.bench kernels``, ``model`` and ``float``: the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import LutcError
from .cases import MODES, parse_shape
from .feeds import parse_dims
from .libs import BASELINES, LUTC_MODES
from .mca import CPUS as MCA_CPUS

QUICK = {
    "m": [1],
    "shapes": ["256x256"],
    "bits": [2],
    "blocks": [32],
    "threads": [1],
    "repeat": 3,
    "min_time": 0.05,
    "cold_mib": 1.0,
    "bandwidth_mib": [16.0, 1.0],
}
"""Defaults under ``--quick``: a smoke run of a few seconds plus compilation."""


def _kernels_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "kernels",
        help="time lutc's LUT GEMM against ORT MatMulNBits, fp32 baselines and TVM's default path",
        description="Time y[M,N] = x[M,K] @ W^T with W quantized (symmetric, per-block scales), for every "
        "library on the same inputs, after checking each output against lutc.quant.reference_matmul.",
    )
    p.add_argument("--m", nargs="+", type=int, default=[1, 16], help="activation rows M (1 = decode GEMV)")
    p.add_argument("--shapes", nargs="+", default=["4096x4096", "4096x11008", "11008x4096"], help="weight shapes KxN")
    p.add_argument(
        "--bits", nargs="+", type=int, choices=range(1, 9), default=[2, 4], help="weight bits 1-8 (ORT: 2, 4, 8)"
    )
    p.add_argument("--blocks", nargs="+", type=int, default=[32, 128], help="quantization block (group) sizes along K")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="thread counts, used by every library")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="hot: same weights every call; "
                   "cold: cycle weight copies so the working set exceeds --cold-mib")  # fmt: skip
    p.add_argument("--repeat", type=int, default=10, help="timed batches per library, case and mode (min and median)")
    p.add_argument("--min-time", type=float, default=0.5, help="seconds of timed calls per library, case and mode; "
                   "calls per batch adapt to the latency")  # fmt: skip
    p.add_argument("--cold-mib", type=float, default=None, help="cold mode working set per library, MiB "
                   "(default: 4x the L3 size, at least 64; copies = ceil(this / weight bytes) + 1)")  # fmt: skip
    p.add_argument("--bandwidth-mib", nargs=2, type=float, default=[256.0, 4.0], metavar=("COLD", "HOT"),
                   help="buffer sizes of the read-bandwidth (roofline) measurement, MiB")  # fmt: skip
    p.add_argument("--baselines", nargs="*", choices=BASELINES, default=list(BASELINES),
                   help="baselines to run (no value: none)")  # fmt: skip
    p.add_argument("--lutc-modes", nargs="*", choices=LUTC_MODES, default=list(LUTC_MODES),
                   help="lutc table modes to run (no value: none, e.g. when lutc.gemm cannot import)")  # fmt: skip
    p.add_argument("--lutc-target", default="x86", help="target name given to lutc.gemm.build_lut_gemm "
                   "(default x86: this machine's CPU, e.g. AVX-512 where it has it)")  # fmt: skip
    p.add_argument("--compare-targets", nargs="*", default=[], metavar="TARGET",
                   help="also run lutc's modes built for these targets, side by side (e.g. x86-avx2 on an "
                   "AVX-512 machine: the AVX2 kernels next to the AVX-512 ones)")  # fmt: skip
    p.add_argument("--tuned", nargs="?", const="tuning_logs", default=None, metavar="DIR",
                   help="also run lutc fast with the tuned schedules of the log in DIR (default tuning_logs), "
                   "next to the default schedules; cases without a record are noted")  # fmt: skip
    p.add_argument("--any-m", action="store_true", help="also run lutc fast built for any row count (M dynamic: "
                   "a model prompt's kernel, timed at each --m), next to the one built for that M")  # fmt: skip
    p.add_argument("--half-scales", action="store_true", help="also run lutc fast with float16 scales and offsets "
                   "(lutc.build's fast mode where float16 converts in hardware), with its own bytes")  # fmt: skip
    p.add_argument("--no-floors", action="store_true", help="skip the per-call overhead floors (tiny case)")
    p.add_argument("--quick", action="store_true", help="tiny smoke configuration (defaults: "
                   + ", ".join(f"{k}={v}" for k, v in QUICK.items()) + "); explicit flags still win")  # fmt: skip
    p.add_argument("--plain", action="store_true", help="plain progress lines instead of a rich progress bar")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and activations")
    p.add_argument("--out", type=Path, default=Path("bench_results"), help="output directory (kernels.json/.md/.png)")
    return p


def _named_shape(text: str) -> tuple[str, tuple[int, int]]:
    """``decode=1x1`` -> ("decode", (1, 1)); a bare ``2x8`` is named ``2x8``."""
    name, _, dims = text.rpartition("=")
    try:
        batch, seq = (int(d) for d in dims.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=BATCHxSEQ such as decode=1x1, not {text!r}") from None
    if batch < 1 or seq < 1:
        raise argparse.ArgumentTypeError(f"batch and seq must be >= 1 in {text!r}")
    return name or dims, (batch, seq)


def _model_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "model",
        help="time a whole quantized ONNX model: lutc against ONNX Runtime, side by side",
        description="Compile MODEL with lutc.build for each thread count (and table mode), check its output "
        "against ORT at accuracy_level 0, then time lutc and ORT's fast variants (accuracy_level 4; for 2-bit "
        "weights also mlas.use_lut_gemm=1) with the same Python loop. Writes model.json and model.md.",
    )
    p.add_argument("model", type=Path, metavar="MODEL.onnx", help="ONNX model with com.microsoft::MatMulNBits weights")
    p.add_argument(
        "--threads", nargs="+", type=int, default=[1, 2], help="thread counts, for lutc and ORT alike (default 1 2)"
    )
    p.add_argument("--shapes", nargs="+", type=_named_shape, default=["decode=1x1", "prefill=1x16"],
                   metavar="NAME=BxS", help="named batch x seq shapes, applied to the inputs' dynamic dims "
                   "batch and seq (other dims keep their sizes; default decode=1x1 prefill=1x16)")  # fmt: skip
    p.add_argument("--dims", nargs="+", default=[], metavar="NAME=EXPR",
                   help="sizes of other named dims, an int or a sum of ints and dim names: past=15 "
                   "total=past+seq s53=seq (int inputs: token ids, ones for *mask*, positions)")  # fmt: skip
    p.add_argument("--mode", nargs="+", choices=("fast", "exact"), default=["fast"],
                   help="lutc table modes (check tolerance: fast 3e-2, exact 1e-4; default fast)")  # fmt: skip
    p.add_argument(
        "--repeat",
        type=int,
        default=50,
        help="timed calls per runtime, shape and thread count, after a warm-up (default 50)",
    )
    p.add_argument("--static", action="store_true", help="also build lutc once per shape with static input "
                   "shapes (lutc.build(shapes=...)), shown as extra rows")  # fmt: skip
    p.add_argument("--tuning-logs", type=Path, default=None, metavar="DIR", help="also build lutc with the tuning "
                   "log in DIR (written by 'lutc tune'), shown as extra 'tuned' rows")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("bench_results"), help="output directory (model.json, model.md)")
    return p


FLOAT_SHAPES = ["256x768", "768x768", "256x512", "512x256", "768x3072", "4096x4096", "256x32000"]
"""Default ``float`` weight shapes KxN: GPT-2's Conv1D/attention projections, a 7B projection, an LM head."""


def _float_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "float",
        help="time unquantized float32 MatMul (constant weight): lutc against ONNX Runtime",
        description="Build a one-node float32 MatMul model per weight shape KxN with lutc.build (dynamic M, and "
        "with --static one build per M), check it against ORT, then time lutc and ORT interleaved, as kernels "
        "(preallocated tensors) and as numpy calls. Writes float.json and float.md.",
    )
    p.add_argument("--shapes", nargs="+", default=FLOAT_SHAPES, help="weight shapes KxN")
    p.add_argument("--m", nargs="+", type=int, default=[1, 16], help="activation rows M")
    p.add_argument("--threads", type=int, default=1, help="threads, for lutc and ORT alike (default 1)")
    p.add_argument("--static", action="store_true", help="also build lutc once per M with a static input shape")
    p.add_argument("--repeat", type=int, default=10, help="timed batches per call (min and median)")
    p.add_argument("--min-time", type=float, default=0.3, help="seconds of timed calls per call and case")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and activations")
    p.add_argument("--out", type=Path, default=Path("bench_results"), help="output directory (float.json, float.md)")
    return p


def _check_float_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    try:
        args.shapes = [parse_shape(s) for s in args.shapes]
    except ValueError as err:
        parser.error(str(err))
    if min(args.m) < 1 or args.threads < 1 or args.repeat < 1 or args.min_time <= 0:
        parser.error("--m, --threads and --repeat must be >= 1 and --min-time > 0")
    return args


def build_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The top-level parser and its ``kernels`` subparser (``model`` and ``float`` are registered too)."""
    parser = argparse.ArgumentParser(prog="python -m lutc.bench", description="lutc benchmarks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    kernels = _kernels_parser(sub)
    _model_parser(sub)
    _float_parser(sub)
    _mca_parser(sub)
    _generate_parser(sub)
    _scale_parser(sub)
    return parser, kernels


def _scale_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "scale",
        help="a real-size decoder from build to long generations: build/load seconds and RSS, prefill and decode "
        "beside onnxruntime-genai (and llama.cpp), memory over a long generation",
        description="For an onnxruntime-genai model folder: build_decoder and export_decoder in a fresh process "
        "(seconds, peak RSS), load_decoder (seconds, RSS), prefill and decode timed per thread count, rounds "
        "interleaved with onnxruntime-genai's generator on the same folder (and llama.cpp's llama-bench on a GGUF of "
        "the same checkpoint, where given), the DRAM roofline fraction of a step, and RSS over a long generation. "
        "Writes scale.json and scale.md under --out.",
    )
    p.add_argument("model_dir", type=Path, help="the builder's folder: model.onnx, its data, genai_config.json")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="thread counts (default 1 2)")
    p.add_argument("--prompt", type=int, default=16, help="prompt tokens (default 16)")
    p.add_argument("--tokens", type=int, default=32, help="tokens generated per timed run (default 32)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per engine; the best is reported")
    p.add_argument("--long", type=int, default=4096, help="tokens of the memory run (capped by the model's "
                   "position limit; 0: skip it)")  # fmt: skip
    p.add_argument("--no-genai", action="store_true", help="skip onnxruntime-genai")
    _llama_cpp_arguments(p)
    p.add_argument("--out", type=Path, default=Path("bench_results"), help="output directory (scale.json/.md)")
    return p


def _llama_cpp_arguments(p: argparse.ArgumentParser) -> None:
    """``--llama-bench PATH`` (alias ``--llamacpp-bench``) and ``--gguf FILE``, given together."""
    p.add_argument("--llama-bench", "--llamacpp-bench", dest="llama_bench", type=Path, default=None, metavar="PATH",
                   help="llama.cpp's llama-bench binary: with --gguf, add llama.cpp's rows (llama-bench -p PROMPT "
                   "-n TOKENS -t THREADS -r ROUNDS -o json at each thread count, after the other engines); its "
                   "failure is noted in the report, not fatal")  # fmt: skip
    p.add_argument("--gguf", type=Path, default=None, metavar="FILE",
                   help="a GGUF of the same checkpoint for --llama-bench (llama.cpp's quantization)")  # fmt: skip


def _check_llama_cpp(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if (args.llama_bench is None) != (args.gguf is None):
        parser.error("--llama-bench and --gguf go together")
    if args.gguf is not None and not args.gguf.is_file():
        parser.error(f"no such GGUF file: {args.gguf}")


def _mca_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    cpus = sorted({c.mcpu for c in MCA_CPUS})
    p = sub.add_parser(
        "mca",
        help="llvm-mca estimates of the lookup kernels' inner loops (ARM and x86), beside an int8 dot loop",
        description="Build lut_matmul (M = 1, 4096 x 4096, groups of 128) for each CPU's lutc target, take the "
        "innermost loop with the most lookup instructions and estimate its cycles per 32 lookups with llvm-mca, "
        "beside an ORT-style int8 dot-product loop doing the same work. Estimates, not measurements.",
    )
    p.add_argument("--bits", nargs="+", type=int, choices=[2, 4], default=[2, 4], help="weight bits (default 2 4)")
    p.add_argument("--cpus", nargs="+", choices=cpus, default=cpus, metavar="CPU",
                   help="llvm-mca -mcpu names, each with its lutc target: " + ", ".join(
                       f"{c.mcpu} ({c.target})" for c in MCA_CPUS) + " (default: all)")  # fmt: skip
    p.add_argument("--modes", nargs="+", choices=["fast", "exact"], default=["fast"],
                   help="lutc table modes (default fast)")  # fmt: skip
    p.add_argument("--llvm-mca", default=None, metavar="PATH",
                   help="llvm-mca to run (default: the newest /usr/lib/llvm-NN/bin/llvm-mca, llvm-mca-NN)")  # fmt: skip
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the rows as JSON to PATH")
    return p


def _generate_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "generate",
        help="greedy decoding tokens/s: lutc (fast, exact) beside ORT (accuracy_level 0 and 4), onnxruntime-genai "
        "and llama.cpp, with each step's fraction of the DRAM roofline",
        description="Build a decoder with past/present KV (torch-exported or onnxruntime-genai-built), run the same "
        "greedy loop on each engine (rounds interleaved; the best round's median step is reported), then llama.cpp's "
        "llama-bench on a GGUF of the same checkpoint where given; measure lutc's decode step inside and outside its "
        "LUT kernels, and check that lutc exact and ORT accuracy_level=0 pick the same tokens. Every row gets GB/s "
        "(the weight bytes a lutc step streams: its LUT weights plus any float matmul weights, over the median step) "
        "and its fraction of the DRAM roofline (those bytes over the best read bandwidth of 256 MiB runs before and "
        "after the timings). Writes generate.json and generate.md under --out.",
    )
    p.add_argument("model", type=Path, help="the decoder .onnx (past_key_values.N.* inputs, present.N.* outputs)")
    p.add_argument("--threads", nargs="+", type=int, default=[1], help="thread counts (default 1)")
    p.add_argument("--prompt", type=int, default=8, help="prompt tokens (default 8)")
    p.add_argument("--tokens", type=int, default=32, help="tokens generated (default 32)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per engine (default 3)")
    p.add_argument("--genai-dir", type=Path, default=None, metavar="DIR",
                   help="the builder's output folder (genai_config.json): add onnxruntime-genai's generator "
                   "(on the same threads)")  # fmt: skip
    _llama_cpp_arguments(p)
    p.add_argument("--out", type=Path, default=Path("bench_results"), help="output folder (default bench_results)")
    return p


def _check_model_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    args.shapes = dict(_named_shape(s) if isinstance(s, str) else s for s in args.shapes)
    try:
        args.dims = parse_dims(args.dims)
    except ValueError as err:
        parser.error(str(err))
    if min(args.threads) < 1 or args.repeat < 1:
        parser.error("--threads and --repeat must be >= 1")
    if not args.model.is_file():
        parser.error(f"no such model file: {args.model}")
    return args


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser, kernels = build_parser()
    args = parser.parse_args(argv)
    if args.command == "model":
        return _check_model_args(parser, args)
    if args.command == "float":
        return _check_float_args(parser, args)
    if args.command == "mca":
        return args
    if args.command == "scale":
        if min([*args.threads, args.prompt, args.tokens - 1, args.rounds, args.long + 1]) < 1:
            parser.error("--threads, --prompt and --rounds must be >= 1, --tokens >= 2 and --long >= 0")
        if not (args.model_dir / "model.onnx").is_file():
            parser.error(f"{args.model_dir} holds no model.onnx (an onnxruntime-genai model folder)")
        _check_llama_cpp(parser, args)
        return args
    if args.command == "generate":
        if min([*args.threads, args.prompt, args.tokens - 1, args.rounds]) < 1:
            parser.error("--threads, --prompt and --rounds must be >= 1 and --tokens >= 2")
        if not args.model.is_file():
            parser.error(f"no such model file: {args.model}")
        _check_llama_cpp(parser, args)
        return args
    if args.quick:
        kernels.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    try:
        args.shapes = [parse_shape(s) for s in args.shapes]
    except ValueError as err:
        parser.error(str(err))
    bad = [(k, b) for k, _ in args.shapes for b in args.blocks if k % b or b % 8]
    if bad:
        parser.error(f"every block must be a multiple of 8 dividing every K; (K, block) {bad} do not")
    if min(args.m + args.threads) < 1 or args.repeat < 1 or args.min_time <= 0:
        parser.error("--m, --threads and --repeat must be >= 1 and --min-time > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run a benchmark: ``kernels`` writes ``kernels.{json,md,png}``, ``model`` writes ``model.{json,md}``,
    ``float`` writes ``float.{json,md}`` under ``--out``; each prints its table.

    Returns 1 when a check failed or a library raised, 2 when lutc refused the model (its error
    printed), else 0.
    """
    args = parse_args(argv)
    try:
        return _run(args, argv)
    except LutcError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    if args.command == "model":
        from .model import run_model

        return run_model(args, sys.argv[1:] if argv is None else argv)
    if args.command == "scale":
        from .scale import run_scale

        return run_scale(args, sys.argv[1:] if argv is None else argv)
    if args.command == "generate":
        from .generate import run_generate

        return run_generate(args, sys.argv[1:] if argv is None else argv)
    if args.command == "mca":
        from .mca import run_from_args as run_mca

        return run_mca(args)
    if args.command == "float":
        from .float_matmul import run_float

        return run_float(args, sys.argv[1:] if argv is None else argv)
    from .run import run_from_args

    return run_from_args(args)
