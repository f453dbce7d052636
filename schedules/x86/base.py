"""Applicability for x86 rules: LLVM x86 targets by their features."""

from __future__ import annotations

from tvm.target import Target

from ...targets import AVX512_FEATURES, has_features, target_arch
from ..cpu.base import is_llvm_cpu


def _is_x86(target: Target) -> bool:
    return is_llvm_cpu(target) and target_arch(target) in ("x86_64", "i686", "i386")


def has_avx2(target: Target) -> bool:
    """True when LLVM will accept AVX2 instructions for ``target``."""
    return _is_x86(target) and has_features(target, ["avx2"])


def has_avx512(target: Target) -> bool:
    """True when ``target`` has every feature of lutc's AVX-512 level (VBMI and VNNI included)."""
    return _is_x86(target) and has_features(target, AVX512_FEATURES)
