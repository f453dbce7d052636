"""Derived numbers (speedups, GB/s, roofline) and the JSON, markdown and PNG outputs."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .kernels import CaseResult, KernelsReport, Measurement
from .roofline import METHOD, Bandwidth, best

ORT_NBITS = ("ort-nbits-acc4", "ort-nbits-lut")
LUTC = ("lutc-fast", "lutc-fast-half-scales", "lutc-fast-any-m", "lutc-fast-tuned", "lutc-exact")
OPTIONAL_LUTC = ("lutc-fast-half-scales", "lutc-fast-any-m", "lutc-fast-tuned")
"""Variants that have a column only when they ran (``--half-scales``, ``--any-m``, ``--tuned``)."""
LABELS = {
    "lutc-fast": "lutc fast",
    "lutc-fast-half-scales": "lutc fast half-scales",
    "lutc-fast-any-m": "lutc fast any-M",
    "lutc-fast-tuned": "lutc fast tuned",
    "lutc-exact": "lutc exact",
    "ort-nbits-acc4": "ORT NBits acc4",
    "ort-nbits-lut": "ORT NBits LUT",
    "ort-fp32": "ORT fp32",
    "tvm-default": "TVM default",
    "numpy-fp32": "numpy fp32",
}


def label(library: str) -> str:
    """The table label: ``lutc-fast@x86-avx2`` (a comparison target) reads ``lutc fast x86-avx2``."""
    name, _, target = library.partition("@")
    text = LABELS.get(name, name)
    return f"{text} {target}" if target else text


def lutc_libraries(libraries) -> list[str]:
    """lutc's variants: the main ones (always fast and exact, for stable columns), then those of
    comparison targets, in run order."""
    main = [lib for lib in LUTC if lib in libraries or lib not in OPTIONAL_LUTC]
    return main + [lib for lib in libraries if lib.startswith("lutc-") and "@" in lib]


def ort_best(result: CaseResult, mode: str) -> Measurement | None:
    """ORT's fastest MatMulNBits variant (by min latency) that ran and passed its check."""
    ran = [m for name in ORT_NBITS if (m := result.get(name, mode)) and m.timing]
    return min(ran, key=lambda m: m.timing.min_us, default=None)


def speedup(result: CaseResult, mode: str, library: str = "lutc-fast") -> float | None:
    """ORT's best min latency over ``library``'s min latency."""
    ours, ort = result.get(library, mode), ort_best(result, mode)
    return ort.timing.min_us / ours.timing.min_us if ours and ours.timing and ort else None


def roofline_us(result: CaseResult, mode: str, bandwidths: list[Bandwidth]) -> float | None:
    """lutc's weight bytes over the best read bandwidth of this mode (cold: DRAM, hot: L3) and threads."""
    bw = best(bandwidths, mode, result.case.threads)
    return result.lutc_bytes / bw.best_gbps / 1e3 if bw else None


def roofline_fraction(result: CaseResult, mode: str, bandwidths: list[Bandwidth], library: str) -> float | None:
    """Roofline time of ``library``'s own weight bytes over its measured min time: 1.0 means reading
    the weights at full bandwidth."""
    roof, ours = roofline_us(result, mode, bandwidths), result.get(library, mode)
    if not (roof and ours and ours.timing):
        return None
    return roof * (ours.weight_bytes or result.lutc_bytes) / result.lutc_bytes / ours.timing.min_us


def summary(result: CaseResult, mode: str, bandwidths: list[Bandwidth]) -> dict:
    """The derived numbers of one case and mode."""
    ort = ort_best(result, mode)
    return {
        "ort_best": ort.library if ort else None,
        "speedup_fast_vs_ort_best": speedup(result, mode),
        "speedup_exact_vs_ort_best": speedup(result, mode, "lutc-exact"),
        "speedup_tuned_vs_ort_best": speedup(result, mode, "lutc-fast-tuned"),
        "speedup_any_m_vs_ort_best": speedup(result, mode, "lutc-fast-any-m"),
        "speedup_half_scales_vs_ort_best": speedup(result, mode, "lutc-fast-half-scales"),
        "roofline_us": roofline_us(result, mode, bandwidths),
        "roofline_fraction": {
            lib: roofline_fraction(result, mode, bandwidths, lib) for lib in lutc_libraries(result.libraries())
        },
    }


# ------------------------------------------------------------------------------ JSON


def _measurement_json(m: Measurement) -> dict:
    return asdict(m) | {"gbps": m.gbps, "check_passed": m.check.passed if m.check else None}


def _case_json(result: CaseResult, bandwidths: list[Bandwidth]) -> dict:
    modes = dict.fromkeys(m.mode for m in result.measurements)
    return {
        "case": asdict(result.case),
        "lutc_weight_bytes": result.lutc_bytes,
        "measurements": [_measurement_json(m) for m in result.measurements],
        "derived": {mode: summary(result, mode, bandwidths) for mode in modes},
    }


def to_json(report: KernelsReport) -> dict:
    """Every raw number, the derived ones, the machine and the configuration."""
    bandwidths = list(report.bandwidth)
    return {
        "machine": report.machine,
        "config": asdict(report.config) | {"libraries": list(report.libraries), "lutc_target": report.lutc_target},
        "roofline": {"method": METHOD, "bandwidth": [asdict(b) for b in report.bandwidth]},
        "overhead_floors": _case_json(report.floors, bandwidths) if report.floors else None,
        "cases": [_case_json(r, bandwidths) for r in report.cases],
        "seconds": report.seconds,
    }


def write_json(report: KernelsReport, path: Path) -> None:
    path.write_text(json.dumps(to_json(report), indent=1) + "\n")
