"""Applicability for x86 rules: an LLVM x86 target whose CPU has AVX2."""

from __future__ import annotations

from tvm.target import Target, codegen

from ..cpu.base import CpuRule, is_llvm_cpu


def has_avx2(target: Target) -> bool:
    """True when LLVM will accept AVX2 instructions for ``target``."""
    if not is_llvm_cpu(target):
        return False
    triple = str(target.attrs.get("mtriple", "")) or codegen.llvm_get_system_triple()
    if not triple.startswith(("x86_64", "i686", "i386")):
        return False
    return bool(codegen.target_has_features("avx2", target))


class X86Rule(CpuRule):
    """A rule for x86 CPUs with AVX2."""

    def is_target_available(self, target: Target) -> bool:
        return has_avx2(target)
