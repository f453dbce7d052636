"""Applicability for CPU rules: any target of kind ``llvm``."""

from __future__ import annotations

from tvm.target import Target

from ..base import LutRule


def is_llvm_cpu(target: Target) -> bool:
    return target.kind.name == "llvm"


class CpuRule(LutRule):
    """A rule for any LLVM CPU target."""

    def is_target_available(self, target: Target) -> bool:
        return is_llvm_cpu(target)
