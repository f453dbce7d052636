"""``python -m lutc.bench model``: a whole quantized ONNX model, lutc against ONNX Runtime.

For every thread count the model is compiled with ``lutc.build`` (per table mode; with
``--static`` also once per input shape) and ONNX Runtime opens the same model with the same
threads (``intra_op_num_threads=t``, ``inter_op_num_threads=1``). For every shape, lutc's
output is checked against ORT at ``accuracy_level`` 0 (fp32 activations), then lutc and ORT's
fast variants are timed by the same Python loop (:func:`time_call`): ``accuracy_level=4``
(int8 activations) and, for 2-bit weights, MLAS's LUT GEMM (``mlas.use_lut_gemm=1``).

The session variants, the timing loop and the side-by-side table are shared with
``examples/decoder_block.py``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from .libs.onnxrt import LUT_CONFIG, session
from .machine import machine_info
from .tables import _table
from .timing import Timing

TOLERANCE = {"fast": 3e-2, "exact": 1e-4}
"""Largest accepted ``|lutc - reference| / |reference|`` (norms over the whole output).

fast: int8 tables cost 0.7-1.3 % relative error per matmul (README, Fast mode) on the block's
contribution; errors of chained matmuls add up, the residual stream dilutes them. exact: float32
tables equal dequantize-then-matmul up to fp32 rounding (~1e-6 on the zoo's decoder)."""

SHAPES = {"decode": (1, 1), "prefill": (1, 16)}
"""Default (batch, seq) shapes by name."""


# ------------------------------------------------------------------------------ ONNX Runtime


def with_accuracy_level(model: onnx.ModelProto, level: int) -> onnx.ModelProto:
    """A copy whose MatMulNBits nodes have ``accuracy_level=level`` (0: fp32, 4: int8 activations)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for node in out.graph.node:
        if node.op_type == "MatMulNBits":
            kept = [a for a in node.attribute if a.name != "accuracy_level"]
            del node.attribute[:]
            node.attribute.extend([*kept, onnx.helper.make_attribute("accuracy_level", level)])
    return out


def ort_session(
    model: onnx.ModelProto, threads: int, config: dict[str, str] | None = None, basic: bool = False
) -> ort.InferenceSession:
    """A CPU session on ``threads`` intra-op threads, one inter-op thread, sequential execution.

    ``basic``: basic graph optimizations only, for references: at the default level ORT fuses
    ``DequantizeLinear -> MatMul`` into ``MatMulNBits`` with int8 activations (1.3 % off).
    """
    return session(model.SerializeToString(), threads, config, basic)


def weight_bits(model: onnx.ModelProto) -> set[int]:
    """The ``bits`` of the model's MatMulNBits nodes."""
    nodes = (n for n in model.graph.node if n.op_type == "MatMulNBits")
    return {a.i for n in nodes for a in n.attribute if a.name == "bits"}


def ort_variants(
    model: onnx.ModelProto, threads: int, feeds: dict[str, np.ndarray], notes: list[str] | None = None
) -> dict[str, ort.InferenceSession]:
    """ORT's fast sessions: ``ORT acc4`` and, for 2-bit weights, ``ORT LUT`` when it takes effect.

    ``feeds`` are used to tell whether the LUT option was honoured (its output differs from
    acc4's); when not, a note is appended to ``notes``.
    """
    acc4 = with_accuracy_level(model, 4)
    sessions = {"ORT acc4": ort_session(acc4, threads)}
    if 2 in weight_bits(model):
        lut = ort_session(acc4, threads, LUT_CONFIG)
        if np.array_equal(lut.run(None, feeds)[0], sessions["ORT acc4"].run(None, feeds)[0]):
            if notes is not None:
                notes.append("ORT ignored mlas.use_lut_gemm=1 (same output as without it); no ORT LUT column")
        else:
            sessions["ORT LUT"] = lut
    return sessions


def errors(y: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max abs error, norm-relative error)."""
    return float(np.abs(y - ref).max()), float(np.linalg.norm(y - ref) / np.linalg.norm(ref))


# ------------------------------------------------------------------------------ timing


def time_call(call: Callable[[], object], repeat: int) -> Timing:
    """Min and median microseconds per call over ``repeat`` individually timed calls, after a warm-up."""
    for _ in range(max(3, repeat // 10)):
        call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - start)
    return Timing(min(times) / 1e3, statistics.median(times) / 1e3, repeat, 1)


@dataclass
class LutcBuild:
    """One compiled lutc model: ``label`` names it in the table (e.g. ``fast static``)."""

    label: str
    mode: str
    compiled: Callable
    threads: int | None = None
    shape: str | None = None
    seconds: float = 0.0


@dataclass
class Row:
    """One lutc build at one thread count and shape, beside ORT's variants at the same."""

    threads: int
    shape: str
    batch: int
    seq: int
    build: str
    rel_err: float
    tolerance: float
    lutc: Timing
    ort: dict[str, Timing] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.rel_err <= self.tolerance)

    @property
    def ratio(self) -> float | None:
        """The fastest ORT variant's median over lutc's: above 1 means lutc is faster."""
        best = min((t.median_us for t in self.ort.values()), default=None)
        return best / self.lutc.median_us if best else None

    def to_json(self) -> dict:
        return asdict(self) | {"passed": self.passed, "best_ort_over_lutc": self.ratio}


def bench_shape(
    builds: Sequence[LutcBuild],
    sessions: dict[str, ort.InferenceSession],
    reference: ort.InferenceSession,
    feeds: dict[str, np.ndarray],
    repeat: int,
    *,
    threads: int,
    shape: tuple[str, int, int],
) -> list[Row]:
    """Check every build against ``reference`` (first outputs), time it and ORT's ``sessions`` (once) on ``feeds``.

    ``shape`` is (name, batch, seq), for the table.
    """
    y_ref = reference.run(None, feeds)[0]
    ort_times = {name: time_call(lambda s=s: s.run(None, feeds), repeat) for name, s in sessions.items()}
    rows = []
    for b in builds:
        out = b.compiled(**feeds)
        rel_err = errors(out[0] if isinstance(out, tuple) else out, y_ref)[1]
        timing = time_call(lambda c=b.compiled: c(**feeds), repeat)
        rows.append(Row(threads, *shape, b.label, rel_err, TOLERANCE[b.mode], timing, ort_times))
    return rows


# ------------------------------------------------------------------------------ the table


def _us(t: Timing) -> str:
    return f"{t.min_us:.0f} / {t.median_us:.0f}"


def markdown_table(rows: Sequence[Row]) -> str:
    """The side-by-side table: one line per lutc build, thread count and shape."""
    names = list(dict.fromkeys(name for r in rows for name in r.ort))
    header = ["threads", "shape", "lutc build", "check (rel err)", "lutc µs min / median"]
    header += [f"{name} µs min / median" for name in names] + ["best ORT / lutc"]
    lines = []
    for r in rows:
        check = f"ok ({r.rel_err:.1e})" if r.passed else f"**FAIL** ({r.rel_err:.1e} > {r.tolerance:g})"
        ort_cells = [_us(r.ort[n]) if n in r.ort else "—" for n in names]
        ratio = "—" if r.ratio is None else f"{r.ratio:.2f}x"
        shape = f"{r.shape} [{r.batch}, {r.seq}]"
        lines.append([str(r.threads), shape, r.build, check, _us(r.lutc), *ort_cells, ratio])
    return "\n".join(_table(header, lines))


TABLE_NOTE = (
    "Latency in µs per call (min / median), every runtime called from Python with numpy inputs and "
    "returning numpy; best ORT / lutc is the faster ORT variant's median over lutc's (above 1: lutc is faster)."
)


# ------------------------------------------------------------------------------ the command


def model_feeds(model: onnx.ModelProto, batch: int, seq: int, dims: dict[str, str], seed: int = 0) -> dict:
    """Random valid inputs (:func:`lutc.bench.feeds.model_feeds`): ``batch``/``seq`` and ``--dims`` size the dims."""
    from .feeds import model_feeds as make_feeds
    from .feeds import resolve_dims

    try:
        return make_feeds(model, resolve_dims(dims, batch, seq), seed=seed)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None


def _build(
    model_path: Path,
    mode: str,
    threads: int,
    label: str,
    shapes: dict | None = None,
    shape: str | None = None,
    tuning_logs: Path | None = None,
) -> LutcBuild:
    import lutc

    start = time.perf_counter()
    compiled = lutc.build(model_path, "x86", mode=mode, threads=threads, shapes=shapes, tuning_logs=tuning_logs)
    seconds = time.perf_counter() - start
    where = f" for {shape}" if shape else ""
    print(f"built {label}{where} on {threads} thread(s) in {seconds:.1f} s", file=sys.stderr)
    return LutcBuild(label, mode, compiled, threads, shape, seconds)


def _describe(build: LutcBuild) -> dict:
    return {k: v for k, v in vars(build).items() if k != "compiled"}


def _markdown(report: dict, rows: Sequence[Row]) -> str:
    mach = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in mach["versions"].items())
    model = report["model"]
    lines = [
        f"# Whole-model benchmark: {Path(model['path']).name}",
        "",
        f"`{report['command']}`",
        "",
        f"{mach['date']} on {mach['cpu_model']} ({mach['usable_cpus']} usable CPUs, LLVM host cpu "
        f"`{mach['llvm_host_cpu']}`). Versions: {versions}.",
        "",
        f"Model: inputs {model['inputs']}, MatMulNBits bits {model['bits']}, {model['mib']:.1f} MiB. "
        f"lutc checked against ORT at accuracy_level 0; {report['repeat']} timed calls per runtime and case; "
        "ORT and lutc on the same intra-op threads (ORT inter-op 1).",
        "",
        markdown_table(rows),
        "",
        TABLE_NOTE,
    ]
    lines += [f"\nNote: {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def _bench_threads(args: argparse.Namespace, model: onnx.ModelProto, threads: int, built: list, notes: list) -> list:
    """Rows for one thread count: every shape, every build, against ORT's variants."""
    from ..runtime import set_threads

    path = Path(args.model)
    dynamic = [_build(path, mode, threads, mode) for mode in args.mode]
    if args.tuning_logs is not None:
        dynamic += [_build(path, mode, threads, f"{mode} tuned", tuning_logs=args.tuning_logs) for mode in args.mode]
    built += [_describe(b) for b in dynamic]
    first = model_feeds(model, *next(iter(args.shapes.values())), args.dims, seed=1)
    sessions = ort_variants(model, threads, first, notes)
    reference = ort_session(with_accuracy_level(model, 0), threads, basic=True)
    rows = []
    for name, (batch, seq) in args.shapes.items():
        feeds = model_feeds(model, batch, seq, args.dims)
        builds = list(dynamic)
        if args.static:
            shapes = {k: list(v.shape) for k, v in feeds.items()}
            static = [_build(path, mode, threads, f"{mode} static", shapes, name) for mode in args.mode]
            builds += static
            built += [_describe(b) for b in static]
        set_threads(threads)
        rows += bench_shape(builds, sessions, reference, feeds, args.repeat, threads=threads, shape=(name, batch, seq))
    return rows


def _model_summary(path: Path, model: onnx.ModelProto) -> dict:
    inits = {t.name for t in model.graph.initializer}
    graph_inputs = [v for v in model.graph.input if v.name not in inits]
    inputs = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph_inputs}
    return {"path": str(path), "inputs": inputs, "bits": sorted(weight_bits(model)), "mib": path.stat().st_size / 2**20}


def run_model(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Build, check, time; write ``model.json`` and ``model.md`` under ``args.out``; 1 if a check failed."""
    from ..frontend import load_onnx

    path = Path(args.model)
    model = load_onnx(path)
    notes: list[str] = []
    built: list[dict] = []  # build metadata; the compiled models of a thread count are dropped after it
    started = time.perf_counter()
    rows = [row for threads in args.threads for row in _bench_threads(args, model, threads, built, notes)]
    report = {
        "command": "python -m lutc.bench " + shlex.join(argv),
        "machine": machine_info(),
        "model": _model_summary(path, model),
        "threads": args.threads,
        "shapes": args.shapes,
        "modes": args.mode,
        "static": args.static,
        "repeat": args.repeat,
        "tolerance": TOLERANCE,
        "builds": built,
        "notes": list(dict.fromkeys(notes)),
        "rows": [r.to_json() for r in rows],
        "seconds": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model.json").write_text(json.dumps(report, indent=1) + "\n")
    text = _markdown(report, rows)
    (args.out / "model.md").write_text(text)
    print(text)
    print(f"wrote {args.out / 'model.json'} and model.md")
    return 0 if all(r.passed for r in rows) else 1
