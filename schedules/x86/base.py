"""Applicability for x86 rules: LLVM x86 targets by their features."""

from __future__ import annotations

from tvm.target import Target

from ...targets import has_features, target_arch
from ..cpu.base import is_llvm_cpu


def has_avx2(target: Target) -> bool:
    """True when LLVM will accept AVX2 instructions for ``target``."""
    if not is_llvm_cpu(target) or target_arch(target) not in ("x86_64", "i686", "i386"):
        return False
    return has_features(target, ["avx2"])
