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


def rebound(builder: relax.BlockBuilder, var: relax.Var, value: relax.Expr) -> relax.Var:
    """``value`` emitted in place of ``var``'s binding, as that binding was: a dataflow var, an
    output of a dataflow block, or a plain binding outside one (a graph with an ``If``)."""
    if isinstance(var, relax.DataflowVar) or not builder.current_block_is_dataflow():
        return builder.emit(value, name_hint=var.name)
    return builder.emit_output(value, name_hint=var.name)
