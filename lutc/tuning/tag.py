"""The directory name of a target's tuning log (its backend's ``tuning_tag``)."""

from __future__ import annotations

from tvm.target import Target

from ..backend import tuning_tag


def target_tag(target: Target) -> str:
    """``llvm-x86_64-avx2``, ``llvm-x86_64-avx512``, ``llvm-aarch64-neon``, ``cuda-sm_90``, ...

    On a CPU the level (:func:`lutc.targets.isa_level`) names the features lutc's kernels use,
    not the CPU, so every AVX2 machine shares one log; a GPU's is its architecture. Thread count
    is not part of the tag either: a log holds the best schedule measured per kernel.
    """
    return tuning_tag(target)
