"""From parsed arguments to the three output files."""

from __future__ import annotations

import argparse
import sys

from .kernels import GridConfig, KernelsReport, RunOptions, run_kernels
from .libs import make_libraries
from .machine import default_cold_mib
from .plot import plot_speedups
from .progress import progress
from .report import write_json
from .tables import markdown
from .timing import TimingPolicy


def grid_config(args: argparse.Namespace) -> GridConfig:
    return GridConfig(
        ms=tuple(args.m),
        shapes=tuple(args.shapes),
        bits=tuple(args.bits),
        blocks=tuple(args.blocks),
        threads=tuple(args.threads),
        modes=tuple(args.modes),
        policy=TimingPolicy(args.repeat, args.min_time),
        cold_mib=args.cold_mib or default_cold_mib(),
        seed=args.seed,
    )


def write_outputs(report: KernelsReport, args: argparse.Namespace) -> str:
    """``kernels.json``, ``kernels.md`` and ``kernels.png`` under ``args.out``; returns the markdown."""
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(report, args.out / "kernels.json")
    text = markdown(report)
    (args.out / "kernels.md").write_text(text)
    plot_speedups(report, args.out / "kernels.png")
    return text


def _described(target: str) -> str:
    """``x86`` -> ``x86 (x86_64-avx512)``: what a target name means on this machine."""
    from ..targets import isa_level, resolve_target

    return f"{target} ({isa_level(resolve_target(target))})"


def run_from_args(args: argparse.Namespace) -> int:
    """Run, write the outputs, print the markdown; 1 if a check failed or a library raised, 2 on setup errors."""
    config = grid_config(args)
    try:
        libraries = make_libraries(
            tuple(args.lutc_modes),
            tuple(args.baselines),
            max(config.threads),
            args.lutc_target,
            args.tuned,
            tuple(args.compare_targets),
            args.any_m,
            args.half_scales,
        )
        targets = ", ".join(_described(t) for t in [args.lutc_target, *args.compare_targets])
    except (RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    options = RunOptions(tuple(libraries), targets, tuple(args.bandwidth_mib), not args.no_floors)
    with progress(config.size(), plain=args.plain) as bar:
        report = run_kernels(config, options, bar)
    print(write_outputs(report, args))
    print(f"wrote {args.out / 'kernels.json'}, kernels.md and kernels.png")
    bad = [m for r in report.cases for m in r.measurements if m.status in ("fail", "error")]
    return 1 if bad else 0
