"""What the numbers were measured on: CPU, caches, library versions, date."""

from __future__ import annotations

import datetime
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ("lutc", "apache-tvm", "apache-tvm-ffi", "onnxruntime", "onnx", "numpy", "threadpoolctl", "matplotlib")
FLAGS = ("avx2", "fma", "bmi2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni")


def _cpuinfo() -> dict[str, str]:
    """The first processor's ``key: value`` lines of /proc/cpuinfo (empty off Linux)."""
    path = Path("/proc/cpuinfo")
    if not path.exists():
        return {}
    block = path.read_text().split("\n\n", 1)[0]
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines())}


def _cache_sizes() -> dict[str, str]:
    """Cache sizes of cpu0 by level and type, from sysfs."""
    sizes = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind = (index / "level").read_text().strip(), (index / "type").read_text().strip()
            sizes[f"L{level} {kind}"] = (index / "size").read_text().strip()
        except OSError:
            continue
    return sizes


def default_cold_mib() -> float:
    """Cold working set: 4x the L3 (so cyclic reads miss it), at least 64 MiB."""
    size = _cache_sizes().get("L3 Unified", "")
    units = {"K": 1 / 1024, "M": 1.0}
    l3_mib = float(size[:-1]) * units[size[-1]] if size[-1:] in units and size[:-1].isdigit() else 0.0
    return max(64.0, 4 * l3_mib)


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def machine_info() -> dict:
    """CPU model, cores, caches, SIMD flags, LLVM's host CPU, package versions and the date."""
    from tvm.target import codegen

    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_model": info.get("model name", platform.processor()),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "caches": _cache_sizes(),
        "simd_flags": {flag: flag in flags for flag in FLAGS},
        "llvm_host_cpu": codegen.llvm_get_system_cpu(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {package: _version(package) for package in PACKAGES},
    }
