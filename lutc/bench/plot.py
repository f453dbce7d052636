"""The PNG: lutc fast's speedup over ORT's fastest MatMulNBits, per case, hot and cold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from .kernels import KernelsReport
from .report import speedup

COLORS = {"hot": "tab:orange", "cold": "tab:blue"}


def plot_speedups(report: KernelsReport, path: Path) -> None:
    """Horizontal grouped bars (a row per case, a bar per mode) on a log axis, with a line at 1x.

    Draws on a bare ``Figure`` (Agg canvas): no pyplot, no global backend change.
    """
    modes = report.config.modes
    cases = [r for r in report.cases if any(speedup(r, mode) for mode in modes)]
    fig = Figure(figsize=(9.0, max(3.0, 0.2 * len(cases) * len(modes) + 1.5)), layout="constrained")
    ax = fig.subplots()
    if not cases:
        ax.text(0.5, 0.5, "no case where both lutc fast and ORT MatMulNBits ran", ha="center", va="center")
        ax.set_axis_off()
    else:
        rows, height = np.arange(len(cases))[::-1], 0.8 / len(modes)
        for i, mode in enumerate(modes):
            values = [speedup(r, mode) or np.nan for r in cases]
            offset = ((len(modes) - 1) / 2 - i) * height
            bars = ax.barh(rows + offset, values, height, label=mode, color=COLORS.get(mode))
            ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=2)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_yticks(rows, [r.case.label for r in cases], fontsize=7)
        ax.set_ylim(-0.6, len(cases) - 0.4)
        ax.set_xlabel("ORT best min latency / lutc fast min latency (log scale)")
        ax.legend(title="weights", loc="lower right")
    ax.set_title("lutc fast mode vs ORT's fastest MatMulNBits (> 1: lutc faster)")
    fig.savefig(path, dpi=120)
