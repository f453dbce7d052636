"""Short target names and how they map to TVM targets."""

from __future__ import annotations

import os

from tvm.target import Target

NAMED_TARGETS: dict[str, dict] = {
    "x86": {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64-v3"},
    "x86-avx2": {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64-v3"},
    "llvm": {"kind": "llvm"},
    "arm": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]},
}
"""``x86`` means AVX2, FMA and BMI2 (``x86-64-v3``), whatever the build machine has beyond
that, so a module built here runs on every AVX2 machine. ``llvm`` is the portable baseline."""


def resolve_target(target: str | dict | Target, threads: int | None = None) -> Target:
    """A TVM ``Target`` from a short name, a JSON dict or a ``Target``."""
    if isinstance(target, Target):
        return target
    if isinstance(target, str):
        if target not in NAMED_TARGETS:
            raise ValueError(f"unknown target {target!r}; use one of {sorted(NAMED_TARGETS)}, a JSON dict or a Target")
        target = dict(NAMED_TARGETS[target])
    if not isinstance(target, dict):
        raise ValueError(f"target must be a name, a dict or a tvm Target; got {type(target).__name__}")
    config = dict(target)
    if config.get("kind") == "llvm":
        config.setdefault("num-cores", threads or os.cpu_count() or 1)
    try:
        return Target(config)
    except Exception as err:
        raise ValueError(f"invalid target {config}: {err}") from None
