"""Recognizing calls to lutc kernels in Relax, by the callee's ``lutc.kernel`` attribute."""

from __future__ import annotations

import tvm
from tvm import relax

from ..kernels.names import kernel_of

CALL_TIR = tvm.ir.Op.get("relax.call_tir")


def called_kernel(mod: tvm.IRModule, expr: relax.Expr) -> str | None:
    """The ``lutc.kernel`` tag of the PrimFunc ``expr`` calls through ``call_tir``, else ``None``."""
    if not isinstance(expr, relax.Call) or expr.op != CALL_TIR:
        return None
    return kernel_of(mod[expr.args[0]])
