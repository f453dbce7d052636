"""Tune lut_matmul for the kernel benchmark's shapes into tuning_logs/ (the shipped logs).

    python examples/tune_benchmark_kernels.py                      # 4096x4096, bits 2 4, blocks 32 128, M 1 16
    python examples/tune_benchmark_kernels.py --shapes 4096x11008 --trials 32

Formats match ``python -m lutc.bench kernels`` (symmetric int, fast tables). Resumable: a
kernel that already has ``--trials`` trials in the log is skipped. Takes minutes per kernel.
"""

from __future__ import annotations

import argparse
import itertools

from lutc.bench.cases import Case, parse_shape
from lutc.kernels import KernelSpec
from lutc.tuning import TuneOptions, tune_kernels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=["4096x4096"], help="weight shapes KxN")
    p.add_argument("--bits", nargs="+", type=int, default=[2, 4], help="weight bits")
    p.add_argument("--blocks", nargs="+", type=int, default=[32, 128], help="quantization block sizes")
    p.add_argument("--m", nargs="+", type=int, default=[1, 16], help="activation rows")
    p.add_argument("--trials", type=int, default=48, help="trials per kernel (the spaces hold 24-96 points)")
    p.add_argument("--threads", type=int, default=1, help="pool threads while timing")
    p.add_argument("--measure", choices=("cold", "hot"), default="cold", help="flush caches before each run, or not")
    p.add_argument("--log-dir", default="tuning_logs", help="tuning log directory")
    args = p.parse_args()
    grid = itertools.product(args.m, map(parse_shape, args.shapes), args.bits, args.blocks)
    specs = [KernelSpec(m, n, k, Case(m, k, n, bits, block, args.threads).fmt) for m, (k, n), bits, block in grid]
    options = TuneOptions(trials=args.trials, threads=args.threads, measure=args.measure)
    for result in tune_kernels(specs, "x86", log_dir=args.log_dir, options=options):
        best = "-" if result.best_seconds is None else f"{result.best_seconds * 1e6:.1f} us"
        print(f"{result.name}: {result.trials_total} trials, best {best}")


if __name__ == "__main__":
    main()
