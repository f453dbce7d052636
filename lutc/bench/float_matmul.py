"""``python -m lutc.bench float``: unquantized float32 MatMul, lutc against ONNX Runtime.

For every weight shape ``KxN`` a one-node ONNX ``MatMul`` with a float32 initializer
(:func:`~lutc.bench.libs.onnxrt.fp32_model`) is compiled by ``lutc.build`` with a dynamic M
(``dynamic`` rows) and, with ``--static``, once per M with that static M (``static`` rows), and
opened by ORT on the same thread count. Four calls per case are timed interleaved
(:func:`~lutc.bench.timing.time_interleaved`): ``kernel`` calls take and return preallocated
tensors (lutc's VM function on a TVM tensor; ORT through an IOBinding), ``call`` calls go
numpy in, numpy out (``CompiledModel.__call__``; ``InferenceSession.run``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from .libs.base import FP32_TOL
from .libs.onnxrt import _bound, fp32_model, session
from .machine import machine_info
from .model import errors
from .tables import _table
from .timing import Timing, TimingPolicy, time_interleaved

CALLS = ("lutc kernel", "ORT kernel", "lutc call", "ORT call")


@dataclass
class FloatRow:
    """One (K, N, M, build) case: the four timings and lutc's error against ORT."""

    k: int
    n: int
    m: int
    build: str
    rel_err: float
    times: dict[str, Timing]

    @property
    def passed(self) -> bool:
        return self.rel_err <= FP32_TOL

    def ratio(self, kind: str) -> float:
        """lutc's median over ORT's for ``kind`` (``kernel`` or ``call``): below 1.5 is the goal."""
        return self.times[f"lutc {kind}"].median_us / self.times[f"ORT {kind}"].median_us


def _lutc_calls(compiled, x: np.ndarray) -> tuple[Callable, Callable, np.ndarray]:
    """(kernel call on a staged TVM tensor, numpy call, output)."""
    import tvm

    staged = tvm.runtime.tensor(x, tvm.cpu())
    main = compiled._main  # the VM function itself: the kernel time without numpy staging
    weights = compiled.weight_arguments
    return (lambda: main(staged, *weights)), (lambda: compiled(A=x)), np.asarray(compiled(A=x))


def bench_case(compiled, sess, x: np.ndarray, policy: TimingPolicy) -> tuple[float, dict[str, Timing]]:
    """lutc's relative error against ORT, and the four interleaved timings."""
    kernel, call, y = _lutc_calls(compiled, x)
    out = np.zeros(y.shape, np.float32)
    calls = {"lutc kernel": kernel, "ORT kernel": _bound(sess, x, out), "lutc call": call,
             "ORT call": lambda: sess.run(None, {"A": x})}  # fmt: skip
    times = time_interleaved(calls, policy)
    return errors(y, sess.run(None, {"A": x})[0])[1], times


def _build(model: onnx.ModelProto, threads: int, shapes: dict | None = None):
    import lutc

    return lutc.build(model, "x86", threads=threads, shapes=shapes)


def bench_shape(k: int, n: int, args: argparse.Namespace) -> list[FloatRow]:
    """Every M and build of one weight shape."""
    rng = np.random.default_rng(args.seed)
    model_bytes = fp32_model(rng.standard_normal((n, k)).astype(np.float32))
    model = onnx.load_from_string(model_bytes)
    sess = session(model_bytes, args.threads)
    policy = TimingPolicy(args.repeat, args.min_time)
    dynamic = _build(model, args.threads)
    rows = []
    for m in args.m:
        x = rng.standard_normal((m, k)).astype(np.float32)
        builds = {"dynamic": dynamic}
        if args.static:
            builds["static"] = _build(model, args.threads, {"A": [m, k]})
        for label, compiled in builds.items():
            rel_err, times = bench_case(compiled, sess, x, policy)
            rows.append(FloatRow(k, n, m, label, rel_err, times))
            print(f"K={k} N={n} M={m} {label}: " + ", ".join(f"{c} {times[c].median_us:.1f}" for c in CALLS))
    return rows


def markdown_table(rows: Sequence[FloatRow]) -> str:
    header = ["K x N", "M", "lutc build", "check (rel err)", *(f"{c} µs min / median" for c in CALLS)]
    header += ["lutc / ORT kernel", "lutc / ORT call"]
    lines = []
    for r in rows:
        check = f"ok ({r.rel_err:.1e})" if r.passed else f"**FAIL** ({r.rel_err:.1e})"
        cells = [f"{r.times[c].min_us:.1f} / {r.times[c].median_us:.1f}" for c in CALLS]
        ratios = [f"{r.ratio('kernel'):.2f}x", f"{r.ratio('call'):.2f}x"]
        lines.append([f"{r.k} x {r.n}", str(r.m), r.build, check, *cells, *ratios])
    return "\n".join(_table(header, lines))


def _markdown(report: dict, rows: Sequence[FloatRow]) -> str:
    mach = report["machine"]
    return "\n".join([
        "# Float32 MatMul: lutc against ONNX Runtime",
        "",
        f"`{report['command']}`",
        "",
        f"{mach['date']} on {mach['cpu_model']} (LLVM host cpu `{mach['llvm_host_cpu']}`), lutc target `x86`, "
        f"{report['threads']} thread(s), lutc and ORT timed interleaved. Latency per call in µs; "
        "lutc / ORT is the ratio of medians (below 1: lutc is faster).",
        "",
        markdown_table(rows),
        "",
    ])  # fmt: skip


def run_float(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Build, check, time; write ``float.json`` and ``float.md`` under ``args.out``; 1 if a check failed."""
    from ..runtime import set_threads

    set_threads(args.threads)
    started = time.perf_counter()
    rows = [row for k, n in args.shapes for row in bench_shape(k, n, args)]
    report = {
        "command": "python -m lutc.bench " + shlex.join(argv),
        "machine": machine_info(),
        "threads": args.threads,
        "rows": [asdict(r) | {"passed": r.passed, "ratio_kernel": r.ratio("kernel")} for r in rows],
        "seconds": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "float.json").write_text(json.dumps(report, indent=1) + "\n")
    text = _markdown(report, rows)
    (args.out / "float.md").write_text(text)
    print(text)
    print(f"wrote {Path(args.out) / 'float.json'} and float.md")
    return 0 if all(r.passed for r in rows) else 1
