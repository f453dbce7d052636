"""lutc's backends: one module per target family, in the shape of TVM's
``relax/backend/<target>/pipeline.py``.

Each family module (:mod:`.cpu`, :mod:`.cuda`) gives the phases after the LUT rewrite and the
tuning log (``phases``: name -> passes, in order; :func:`lutc.pipeline.phases` puts them after its
own), the device its code runs on (``device``), the directory name of its tuning logs
(``tuning_tag``), what its code needs in words (``level``) and what a machine lacks to run
its code (``missing_on_host``).
:func:`backend_of` picks the module by the target's kind; nothing above this layer asks which
kind of target it has.
"""

from __future__ import annotations

from types import ModuleType

import tvm
from tvm.target import Target

from . import cpu, cuda

FAMILIES: tuple[ModuleType, ...] = (cpu, cuda)


def backend_of(target: Target) -> ModuleType:
    """The backend module of ``target``'s kind; ``NotImplementedError`` for any other kind."""
    for family in FAMILIES:
        if target.kind.name in family.KINDS:
            return family
    kinds = sorted(k for family in FAMILIES for k in family.KINDS)
    raise NotImplementedError(f"lutc builds for target kinds {kinds}; got {target.kind.name!r}")


def device_of(target: Target, session=None) -> tvm.runtime.Device:
    """The device code built for ``target`` runs on, here or in an RPC ``session``."""
    return backend_of(target).device(target, session)


def level(target: Target) -> str:
    """What code built for ``target`` needs, in words: ``x86_64-avx2``, ``cuda-sm_90``, ..."""
    return backend_of(target).level(target)


def tuning_tag(target: Target) -> str:
    """The directory of ``target``'s tuning log: ``llvm-x86_64-avx2``, ``cuda-sm_90``, ..."""
    return backend_of(target).tuning_tag(target)


def missing_on_host(target: Target) -> list[str]:
    """What this machine lacks to run code built for ``target`` (empty: it runs here)."""
    return backend_of(target).missing_on_host(target)


def generated_source(module: tvm.runtime.Module, kind: str) -> str:
    """The source of every ``kind`` module (``"cuda"``: CUDA C) ``module`` imports, at any depth."""
    parts = [module.inspect_source()] if module.kind == kind else []
    parts += [generated_source(m, kind) for m in module.imports]
    return "\n".join(p for p in parts if p)


__all__ = ["FAMILIES", "backend_of", "device_of", "generated_source", "level", "missing_on_host", "tuning_tag"]
