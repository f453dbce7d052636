"""Short target names, the CPU features lutc's kernels care about, and whether a target runs here.

- ``"x86"``: the build machine's own x86 CPU, as LLVM names it (``-mcpu=<host>``), with the
  features the OS does not enable (a hypervisor may hide AVX-512) switched off.
- ``"x86-avx2"`` (x86-64-v3) and ``"x86-avx512"`` (x86-64-v4 plus VBMI, VBMI2 and VNNI:
  Zen 4, Ice Lake and later): explicit names for building for another machine.
- ``"llvm"``: the portable baseline.
- ``"arm"`` / ``"aarch64"``: a generic ARMv8.2-A CPU with NEON and dotprod (Cortex-A55/A75 and
  later); ``"arm-cortex-a76"`` (Raspberry Pi 5), ``"arm-neoverse-n1"`` / ``"arm-neoverse-v1"``
  (AWS Graviton 2 / 3), ``"arm-apple-m1"`` (Apple M1 under Linux, e.g. Asahi): named CPUs, so LLVM
  schedules for them. All are Linux ``aarch64-linux-gnu`` targets, built here and linked with
  ``aarch64-linux-gnu-gcc``.
- ``"cuda"`` (sm_80, A100), ``"cuda-sm80"``, ``"cuda-sm86"`` (RTX 30xx, A10), ``"cuda-sm89"``
  (RTX 40xx, L4, L40), ``"cuda-sm90"`` (H100, H200): NVIDIA GPUs, host code for x86-64 Linux.
  A CUDA target always names its architecture: TVM reads a bare ``Target("cuda")`` as sm_50.

A target's **ISA level** (:func:`isa_level`) is the best entry of :data:`ISA_LEVELS` whose
features it has; schedule rules and tuning-log tags go by it, not by the CPU name.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from tvm.target import Target, codegen


@dataclass(frozen=True)
class IsaLevel:
    """A set of CPU features lutc's kernels are written for, named ``<arch>-<name>``."""

    arch: str
    name: str
    features: tuple[str, ...]
    """LLVM feature names, all required."""

    @property
    def tag(self) -> str:
        return f"{self.arch}-{self.name}"


AVX2_FEATURES = ("avx2", "fma", "bmi2", "f16c")
AVX512_FEATURES = (
    *AVX2_FEATURES, "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512vbmi", "avx512vbmi2", "avx512vnni",
)  # fmt: skip
ISA_LEVELS: tuple[IsaLevel, ...] = (
    IsaLevel("x86_64", "avx512", AVX512_FEATURES),
    IsaLevel("x86_64", "avx2", AVX2_FEATURES),
    IsaLevel("aarch64", "neon-dotprod", ("neon", "dotprod")),
    IsaLevel("aarch64", "neon", ("neon",)),
)
"""Per architecture, best first; a target with none of its architecture's levels is ``generic``."""

CPUINFO_FLAG = {
    "avx512vbmi2": "avx512_vbmi2", "avx512vnni": "avx512_vnni", "neon": "asimd", "dotprod": "asimddp",
}  # fmt: skip
"""LLVM feature -> the flag Linux lists in ``/proc/cpuinfo`` (where the names differ)."""


NO_GATHER = ["+prefer-no-gather", "+prefer-no-scatter"]
"""LLVM tuning flags for AVX-512 targets: left free, LLVM's loop vectorizer turned strided loops
of the table precompute into ``vgather``/scatter code, 3x slower on Intel CPUs (whose gathers the
Downfall microcode slows down) than without; lutc's kernels use no gathers."""

ARM_GENERIC = {
    "kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "generic", "mattr": ["+v8.2a", "+neon", "+dotprod"],
}  # fmt: skip
"""ARMv8.2-A with NEON and the dot-product extension: every 64-bit ARM CPU since 2017 but the A53/A72."""
ARM_CPUS = ("cortex-a76", "neoverse-n1", "neoverse-v1", "apple-m1")
"""CPUs with a named ``arm-<cpu>`` target (LLVM's names); each implies its own features."""

CUDA_ARCHS = ("sm80", "sm86", "sm89", "sm90")
"""GPU architectures with a named ``cuda-<arch>`` target; ``"cuda"`` is the first."""
CUDA_HOST = {"kind": "llvm", "mtriple": "x86_64-linux-gnu"}
MIN_CUDA_ARCH = 61
"""sm_61 (Pascal): the oldest GPU with ``dp4a``."""
CUDA_SM_COUNTS = {61: 30, 70: 80, 75: 72, 80: 108, 86: 84, 89: 128, 90: 132}
"""Streaming multiprocessors of the largest usual GPU of each compute capability (GTX 1080 Ti,
V100, RTX 2080 Ti, A100, RTX 3090, RTX 4090, H100/H200): schedule defaults size their grids by
it. A smaller GPU of the same architecture (A10: 72, L4: 58) gets more blocks per SM than planned."""


def _cuda(arch: str) -> dict:
    return {"kind": "cuda", "arch": f"sm_{arch.removeprefix('sm')}", "host": CUDA_HOST}


NAMED_TARGETS: dict[str, dict] = {
    "x86-avx2": {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64-v3"},
    "x86-avx512": {
        "kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64-v4",
        "mattr": ["+avx512vbmi", "+avx512vbmi2", "+avx512vnni", *NO_GATHER],
    },
    "llvm": {"kind": "llvm"},
    "arm": ARM_GENERIC,
    "aarch64": ARM_GENERIC,
    **{f"arm-{cpu}": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": cpu} for cpu in ARM_CPUS},
    "cuda": _cuda(CUDA_ARCHS[0]),
    **{f"cuda-{arch}": _cuda(arch) for arch in CUDA_ARCHS},
}  # fmt: skip
"""Fixed targets; ``"x86"`` is computed for the build machine (:func:`host_x86_target`)."""

TARGET_NAMES = ("x86", *NAMED_TARGETS)


def _arch(triple: str) -> str:
    arch = triple.split("-")[0]
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


def target_arch(target: Target) -> str:
    """``x86_64``, ``aarch64``, ...: the target's triple, else the host's."""
    return _arch(str(target.attrs.get("mtriple", "") or "") or str(codegen.llvm_get_system_triple()))


def host_arch() -> str:
    return _arch(platform.machine().lower())


@functools.cache
def host_cpu_flags() -> frozenset[str]:
    """The CPU flags Linux reports (``flags`` on x86, ``Features`` on ARM); empty if unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def has_features(target: Target, features) -> bool:
    return all(codegen.target_has_features(f, target) for f in features)


def isa_level(target: Target) -> str:
    """``x86_64-avx512``, ``x86_64-avx2``, ``aarch64-neon``, ... or ``<arch>-generic``."""
    arch = target_arch(target)
    if target.kind.name == "llvm":
        for level in ISA_LEVELS:
            if level.arch == arch and has_features(target, level.features):
                return level.tag
    return f"{arch}-generic"


def converts_half(target: Target) -> bool:
    """Whether ``target`` converts float16 to float32 in hardware (x86 F16C, any AArch64, every CUDA
    GPU lutc targets): its kernels read half scales as fast as float32 ones (lutc.quant.layout,
    "Half scales")."""
    if target.kind.name == "cuda":
        return True
    if target.kind.name != "llvm":
        return False
    arch = target_arch(target)
    return arch == "aarch64" or (arch == "x86_64" and has_features(target, ["f16c"]))


def missing_on_host(target: Target) -> list[str]:
    """What this machine lacks to run code built for ``target`` (empty: it runs here).

    Checks the architecture and the features of every ISA level of the target's architecture
    that the target has; a host whose flags cannot be read is trusted.
    """
    arch, here = target_arch(target), host_arch()
    if arch != here:
        return [f"an {arch} CPU (this machine is {here})"]
    flags = host_cpu_flags()
    if not flags or target.kind.name != "llvm":
        return []
    wanted = {f for level in ISA_LEVELS if level.arch == arch for f in level.features if has_features(target, [f])}
    return sorted(f for f in wanted if CPUINFO_FLAG.get(f, f) not in flags)


def cross_compiler(target: Target) -> str | None:
    """``<triple>-gcc`` when ``target`` is not for this machine's architecture, else ``None``."""
    triple = str(target.attrs.get("mtriple", "") or "")
    if not triple or target_arch(target) == host_arch():
        return None
    return f"{triple}-gcc"


@functools.cache
def host_x86_target() -> dict:
    """The build machine's CPU as a target dict: LLVM's name for it, minus hidden features."""
    if host_arch() != "x86_64":
        raise ValueError(f"target 'x86' means this machine's CPU, which is {host_arch()}; name 'x86-avx2' or "
                         "'x86-avx512' to build for another machine")  # fmt: skip
    cpu = str(codegen.llvm_get_system_cpu())
    config = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": cpu}
    if cpu in ("", "generic") or not codegen.llvm_is_valid_cpu(cpu, "x86_64-linux-gnu"):
        config["mcpu"] = "x86-64"
    flags = host_cpu_flags()
    if not flags:  # nothing to go by: trust LLVM's view of the CPU
        return config
    llvm_target = Target(config)
    hidden = [f for f in AVX512_FEATURES if has_features(llvm_target, [f]) and CPUINFO_FLAG.get(f, f) not in flags]
    mattr = [f"-{f}" for f in hidden]
    if has_features(llvm_target, ["avx512f"]) and "avx512f" not in hidden:
        mattr += NO_GATHER
    if mattr:
        config["mattr"] = mattr
    return config


def resolve_target(target: str | dict | Target, threads: int | None = None) -> Target:
    """A TVM ``Target`` from a short name (:data:`TARGET_NAMES`), a JSON dict or a ``Target``."""
    if isinstance(target, Target):
        return _with_cuda_arch(target)
    if isinstance(target, str):
        if target not in TARGET_NAMES:
            raise ValueError(f"unknown target {target!r}; use one of {sorted(TARGET_NAMES)}, a JSON dict or a Target")
        target = dict(host_x86_target() if target == "x86" else NAMED_TARGETS[target])
    if not isinstance(target, dict):
        raise ValueError(f"target must be a name, a dict or a tvm Target; got {type(target).__name__}")
    config = dict(target)
    if config.get("kind") == "llvm":
        config.setdefault("num-cores", threads or os.cpu_count() or 1)
    try:
        built = Target(config)
    except Exception as err:
        raise ValueError(f"invalid target {config}: {err}") from None
    return _with_cuda_arch(built)


def compute_capability(arch: str) -> int:
    """``80`` for ``sm_80``, ``90`` for ``sm_90a``: a CUDA arch's major and minor version."""
    return int("".join(c for c in arch if c.isdigit()) or 0)


def cuda_sm_count(target: Target) -> int:
    """:data:`CUDA_SM_COUNTS` for ``target``'s arch (the nearest older one listed)."""
    capability = compute_capability(str(target.attrs.get("arch", "") or ""))
    known = [c for c in CUDA_SM_COUNTS if c <= capability]
    return CUDA_SM_COUNTS[max(known) if known else min(CUDA_SM_COUNTS)]


def _with_cuda_arch(target: Target) -> Target:
    """``target``, unless it is a CUDA target below sm_61, which is what TVM makes of one that
    names no ``arch`` (sm_50); lutc's kernels need sm_61's ``dp4a``."""
    arch = str(target.attrs.get("arch", "") or "") if target.kind.name == "cuda" else ""
    if arch and compute_capability(arch) < MIN_CUDA_ARCH:
        names = ["cuda", *(f"cuda-{a}" for a in CUDA_ARCHS)]
        raise ValueError(f"CUDA target arch {arch} (TVM's default when none is given) is older than sm_61; "
                         f"use one of {names} or give \"arch\", e.g. \"sm_90\"")  # fmt: skip
    return target
