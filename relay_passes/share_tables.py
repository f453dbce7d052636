"""LutcShareTables: matmuls that read the same activation share one table precompute.

Q/K/V (and gate/up) projections read one normalized activation. After the rewrite each has
its own ``lut_precompute`` call; equal calls (same kernel, same activation, after looking
through the flattening reshape) are merged into the first, so the tables are built once.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..kernels.precompute import PRECOMPUTE_KERNEL
from .calls import called_kernel, rebound


@mutator
class _Sharer(PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.mod = mod
        self.first: dict[tuple, relax.Var] = {}

    def _key(self, value: relax.Expr) -> tuple | None:
        """(kernel, activation source, reshape) for a precompute call, else ``None``."""
        if called_kernel(self.mod, value) != PRECOMPUTE_KERNEL:
            return None
        (flat,) = value.args[1].fields
        source = self.lookup_binding(flat) if isinstance(flat, relax.Var) else None
        if isinstance(source, relax.Call) and source.op == tvm.ir.Op.get("relax.reshape"):
            return (value.args[0], source.args[0], tvm_ffi.structural_hash(source.args[1]))
        return (value.args[0], flat, 0)

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = self.visit_expr(binding.value)
        key = self._key(value)
        if key is not None and key in self.first:
            self.set_var_remap(binding.var, self.first[key])
            return
        new_var = rebound(self.builder_, binding.var, value)
        self.set_var_remap(binding.var, new_var)
        if key is not None:
            self.first[key] = new_var


@tvm.transform.module_pass(opt_level=0, name="LutcShareTables")
class LutcShareTables:
    """Merge equal ``lut_precompute`` calls (see the module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        sharer = _Sharer(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                sharer.builder_.update_func(gvar, sharer.visit_expr(func))
        return sharer.builder_.get()
