"""Passes return a new module: the functions a pass changed, replaced in a copy of its input.

TVM hands a Python pass the caller's module itself; ``mod[gvar] = func`` would change it under
the caller (a module kept to compare, a pipeline run twice).
"""

from __future__ import annotations

from collections.abc import Mapping

import tvm


def with_functions(mod: tvm.IRModule, functions: Mapping[tvm.ir.GlobalVar, tvm.ir.BaseFunc]) -> tvm.IRModule:
    """A copy of ``mod`` (attributes and global infos included) with ``functions`` in place of its
    own; ``mod`` itself when there are none."""
    if not functions:
        return mod
    updated = mod.clone()
    for gvar, func in functions.items():
        updated.update_func(gvar, func)
    return updated
