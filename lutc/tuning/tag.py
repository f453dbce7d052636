"""The directory name of a target's tuning log: kind, CPU and features."""

from __future__ import annotations

import re

from tvm.target import Target, codegen


def target_tag(target: Target) -> str:
    """``kind-cpu[+feature...]``, e.g. ``llvm-x86-64-v3`` or ``llvm-aarch64+neon``.

    The CPU is ``mcpu``, else the architecture of ``mtriple``, else the host CPU LLVM sees.
    Thread count is not part of the tag: a log holds the best schedule measured per kernel.
    """
    attrs = target.attrs
    cpu = str(attrs.get("mcpu", "") or "")
    triple = str(attrs.get("mtriple", "") or "")
    if not cpu:
        cpu = triple.split("-")[0] if triple else str(codegen.llvm_get_system_cpu())
    features = sorted(str(f) for f in attrs.get("mattr", []) or [])
    tag = "-".join([target.kind.name, cpu]) + "".join(f if f.startswith(("+", "-")) else f"+{f}" for f in features)
    return re.sub(r"[^A-Za-z0-9._+-]", "_", tag)
