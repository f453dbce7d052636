"""The directory name of a target's tuning log: the target kind and its ISA level."""

from __future__ import annotations

from tvm.target import Target

from ..targets import isa_level


def target_tag(target: Target) -> str:
    """``kind-<arch>-<level>``, e.g. ``llvm-x86_64-avx2``, ``llvm-x86_64-avx512``, ``llvm-aarch64-neon``.

    The level (:func:`lutc.targets.isa_level`) names the features lutc's kernels use, not the
    CPU, so every AVX2 machine shares one log. Thread count is not part of the tag either: a log
    holds the best schedule measured per kernel.
    """
    return f"{target.kind.name}-{isa_level(target)}"
