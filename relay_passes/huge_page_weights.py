"""LutcHugePageWeights: the LUT kernels' weight constants move, together, onto huge pages.

The Relax VM reads constants where they are, so a constant's memory is the memory the kernel
streams. A decode step reads every weight once from DRAM; on 4 KiB pages each page costs a
TLB miss and restarts the hardware prefetcher, and each weight's scales (a few bytes per group)
a DRAM latency. All packed codes, scales and offsets of the module are copied into one region
advised to use 2 MiB pages (:func:`lutc.runtime.huge_page_tensors`); values do not change.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.ir.expr import Constant
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..kernels.matmul import MATMUL_KERNEL
from ..runtime import huge_page_tensors
from .calls import called_kernel


def weight_constants(mod: tvm.IRModule) -> list[Constant]:
    """The distinct constants passed to ``lut_matmul`` calls, in order of appearance."""
    found: list[Constant] = []

    def visit(expr) -> None:
        if called_kernel(mod, expr) == MATMUL_KERNEL:
            for arg in expr.args[1].fields:
                if isinstance(arg, Constant) and not any(arg.same_as(c) for c in found):
                    found.append(arg)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return found


@mutator
class _Replacer(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, pairs: list[tuple[Constant, Constant]]):
        super().__init__(mod)
        self.pairs = pairs

    def visit_generic_const_(self, op: Constant) -> relax.Expr:
        return next((new for old, new in self.pairs if old.same_as(op)), op)


@tvm.transform.module_pass(opt_level=0, name="LutcHugePageWeights")
class LutcHugePageWeights:
    """Copy the LUT weight constants into one huge-page region (see the module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        constants = weight_constants(mod)
        if not constants:
            return mod
        tensors = huge_page_tensors(*(c.value.numpy() for c in constants))
        replacer = _Replacer(mod, [(c, relax.const(t)) for c, t in zip(constants, tensors, strict=True)])
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                replacer.builder_.update_func(gvar, replacer.visit_expr(func))
        return replacer.builder_.get()
