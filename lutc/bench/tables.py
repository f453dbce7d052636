"""The markdown report: machine, roofline, overhead floors, the results table and notes."""

from __future__ import annotations

from collections.abc import Iterable

from .kernels import CaseResult, KernelsReport, Measurement
from .libs.base import FP32_TOL, INT8_ACT_TOL
from .libs.lut_kernels import FAST_TOL
from .report import label, lutc_libraries, ort_best, roofline_fraction, speedup
from .roofline import METHOD, best


def _us(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def cell(m: Measurement | None) -> str:
    """``min / median`` µs, or why there is no time."""
    if m is None:
        return "—"
    if m.status == "ok":
        return f"{_us(m.timing.min_us)} / {_us(m.timing.median_us)}"
    if m.status == "fail":
        return f"FAIL (err {m.check.rel_err:.1e})"
    return m.status


def _ratio(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _machine(report: KernelsReport) -> list[str]:
    mach, cfg = report.machine, report.config
    flags = ", ".join(f for f, on in mach["simd_flags"].items() if on)
    caches = ", ".join(f"{k} {v}" for k, v in mach["caches"].items())
    versions = ", ".join(f"{k} {v}" for k, v in mach["versions"].items())
    return [
        f"{mach['date']} on {mach['cpu_model']} ({mach['usable_cpus']} usable CPUs; LLVM host cpu "
        f"`{mach['llvm_host_cpu']}`; {flags}; {caches}).",
        "",
        f"Versions: {versions}. lutc targets: `{report.lutc_target}`. Run took {report.seconds:.0f} s.",
        "",
        f"Each cell is `min / median` µs per call over up to {cfg.policy.repeat} timed batches (about "
        f"{cfg.policy.min_time} s per library, case and mode); Python call overhead is included for every "
        f"library alike. Cold mode cycles weight copies so each library's working set exceeds {cfg.cold_mib} MiB.",
    ]


def _bandwidth(report: KernelsReport) -> list[str]:
    rows = []
    for threads in report.config.threads:
        pair = [best(list(report.bandwidth), kind, threads) for kind in ("cold", "hot")]
        rows.append([str(threads), *(f"{b.best_gbps:.1f} / {b.median_gbps:.1f}" if b else "—" for b in pair)])
    sizes = {b.kind: b.nbytes >> 20 for b in report.bandwidth}
    header = ["threads", f"cold: {sizes.get('cold')} MiB, GB/s best / median", f"hot: {sizes.get('hot')} MiB"]
    return [f"Method: {METHOD}. Best of the runs at the start and the end.", "", *_table(header, rows)]


def _floors(report: KernelsReport) -> list[str]:
    if report.floors is None:
        return []
    case = report.floors.case
    rows = [[label(m.library), cell(m)] for m in report.floors.measurements]
    shape = f"M=1, K=N={case.k}, w{case.bits}g{case.block}, hot, 1 thread"
    intro = f"Latency of a tiny case ({shape}): a bound on each library's per-call overhead."
    return [intro, "", *_table(["library", "min / median µs"], rows)]


def _lutc_libraries(report: KernelsReport) -> list[str]:
    """The lutc variants in the run, in table order (always fast and exact, for stable columns)."""
    return lutc_libraries(report.libraries)


def _fast_variants(report: KernelsReport) -> list[str]:
    return [lib for lib in _lutc_libraries(report) if lib.startswith("lutc-fast")]


def _result_row(result: CaseResult, mode: str, report: KernelsReport) -> list[str]:
    bws = list(report.bandwidth)
    ort = ort_best(result, mode)
    gains = [speedup(result, mode, lib) for lib in _fast_variants(report)]
    fracs = [_ratio(roofline_fraction(result, mode, bws, lib), ".0%") for lib in _lutc_libraries(report)]
    fast = [result.get(lib, mode) for lib in _fast_variants(report)]
    return [
        result.case.label,
        mode,
        *(cell(result.get(lib, mode)) for lib in report.libraries),
        *(f"{gain:.2f}x ({label(ort.library).split()[-1]})" if gain else "—" for gain in gains),
        " / ".join(_ratio(m.gbps if m else None, ".1f") for m in fast),
        " / ".join(fracs),
    ]


def _results(report: KernelsReport) -> list[str]:
    names = [label(lib).removeprefix("lutc ") for lib in _lutc_libraries(report)]
    fast = [label(lib) for lib in _fast_variants(report)]
    header = ["case", "mode", *(label(lib) for lib in report.libraries)]
    header += [f"{name} vs ORT best" for name in fast]
    header += [" / ".join(fast) + " GB/s", "roofline " + " / ".join(names)]
    rows = [_result_row(r, mode, report) for r in report.cases for mode in report.config.modes]
    return _table(header, rows)


def _notes(report: KernelsReport) -> list[str]:
    seen, lines = set(), []
    for result in report.cases:
        for m in result.measurements:
            if m.status in ("fail", "error") or "NO effect" in m.note or "NO tuning record" in m.note:
                key = (result.case, m.library, m.note)
                if key not in seen:
                    seen.add(key)
                    lines.append(f"- {result.case.label} {m.library}: {m.status} {m.note}".rstrip())
    return lines or ["- every check passed; no errors."]


DEFINITIONS = [
    "- **fast vs ORT best**: min latency of ORT's fastest MatMulNBits variant over lutc fast's (> 1: lutc is faster).",
    "- **GB/s**: the library's own weight bytes / min latency (lutc: `PackedWeight.nbytes`; ORT MatMulNBits: "
    "B + scales; fp32: 4·N·K; TVM default: its packed codes + scales).",
    "- **roofline**: lutc weight bytes / best read bandwidth (cold: DRAM, hot: L3) over measured min latency; "
    "100 % = weights read at full bandwidth.",
    f"- **checks** (relative norm error vs float64 `reference_matmul`): fp32 paths and lutc exact ≤ {FP32_TOL:g}; "
    f"lutc fast ≤ {FAST_TOL:g}; ORT accuracy_level=4 and LUT GEMM (int8 activations) ≤ {INT8_ACT_TOL:g}.",
]


def markdown(report: KernelsReport) -> str:
    sections = [
        ["# lutc kernel benchmark", "", *_machine(report)],
        ["## Read bandwidth (memory roofline)", "", *_bandwidth(report)],
        ["## Per-call overhead floor", "", *_floors(report)],
        ["## Results", "", *_results(report), "", *DEFINITIONS],
        ["## Notes", "", *_notes(report)],
    ]
    return "\n\n".join("\n".join(s) for s in sections) + "\n"
