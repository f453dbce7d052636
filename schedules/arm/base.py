"""Applicability for ARM rules: LLVM AArch64 targets by their features."""

from __future__ import annotations

from tvm.target import Target

from ...targets import has_features, target_arch
from ..cpu.base import is_llvm_cpu


def is_aarch64(target: Target) -> bool:
    return is_llvm_cpu(target) and target_arch(target) == "aarch64"


def has_neon(target: Target) -> bool:
    """True when LLVM will accept NEON (Advanced SIMD) instructions for ``target``."""
    return is_aarch64(target) and has_features(target, ["neon"])
