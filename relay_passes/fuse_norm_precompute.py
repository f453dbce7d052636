"""LutcFuseNormPrecompute: a table precompute whose activation is an RMSNorm computes the norm.

``normed = rms_norm(v, w)`` (``v`` possibly ``x + skip``, as ``SkipSimplifiedLayerNormalization``
and ``SimplifiedLayerNormalization`` import) feeding only a ``lut_precompute`` becomes one
kernel call that takes ``v`` (or ``x`` and ``skip``) and ``w``: one kernel less per norm and no
normalized activation tensor. The sum ``x + skip`` stays where the graph needs it (the residual
stream), a plain add that ``FuseOps`` merges into the next layer's add. Norms with other users,
norms over another axis or with a weight of another shape are left as they are. The norm's
now unused bindings are left to ``DeadCodeElimination``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..kernels.names import NORM_ATTR, PRECOMPUTE_KERNEL, SPEC_ATTR
from ..kernels.precompute import FusedNorm, lut_precompute
from ..kernels.spec import KernelSpec
from .calls import called_kernel, rebound

RMS_NORM = tvm.ir.Op.get("relax.nn.rms_norm")
RESHAPE = tvm.ir.Op.get("relax.reshape")
ADD = tvm.ir.Op.get("relax.add")


def _use_counts(func: relax.Function) -> Counter:
    counts: Counter = Counter()
    relax.analysis.post_order_visit(func, lambda e: counts.update([e]) if isinstance(e, relax.Var) else None)
    return counts


def _same_type(a: relax.Expr, b: relax.Expr) -> bool:
    return isinstance(a.ty, relax.TensorType) and bool(tvm_ffi.structural_equal(a.ty, b.ty))


@dataclass(frozen=True)
class _Fusion:
    """A precompute call's replacement: the norm's inputs (``x``, or ``x`` and ``skip``) and weight."""

    parts: tuple[relax.Expr, ...]
    weight: relax.Expr
    norm: FusedNorm


class _Planner:
    """Finds the precompute calls of one function whose activation is an RMSNorm used only there."""

    def __init__(self, mod: tvm.IRModule, func: relax.Function):
        self.mod = mod
        self.values = relax.analysis.get_var2val(func)
        self.uses = _use_counts(func)

    def plan(self) -> dict[relax.Var, _Fusion]:
        found = {}
        for var, value in self.values.items():
            fusion = self._fusion(value) if called_kernel(self.mod, value) == PRECOMPUTE_KERNEL else None
            if fusion is not None:
                found[var] = fusion
        return found

    def _sole_call(self, expr: relax.Expr, op: tvm.ir.Op) -> relax.Call | None:
        """The call to ``op`` bound to the var ``expr``, if the var has exactly one use."""
        if not isinstance(expr, relax.Var) or self.uses[expr] != 1:
            return None
        value = self.values.get(expr)
        return value if isinstance(value, relax.Call) and value.op == op else None

    def _norm_of(self, call: relax.Call) -> relax.Call | None:
        """The ``rms_norm`` over the last axis with a float32 ``[K]`` weight that alone feeds ``call``."""
        (flat,) = call.args[1].fields
        reshape = self._sole_call(flat, RESHAPE)
        norm = self._sole_call(reshape.args[0] if reshape is not None else flat, RMS_NORM)
        if norm is None:
            return None
        data, weight = norm.args
        rank = len(data.ty.shape.values)
        axes = [int(a) % rank for a in norm.attrs.axes]
        weight_shape = list(weight.ty.shape.values) if isinstance(weight.ty, relax.TensorType) else []
        if axes != [rank - 1] or data.ty.dtype != "float32" or weight.ty.dtype != "float32" or len(weight_shape) != 1:
            return None
        return norm if tvm_ffi.structural_equal(weight_shape[0], data.ty.shape.values[-1]) else None

    def _fusion(self, call: relax.Call) -> _Fusion | None:
        attrs = self.mod[call.args[0]].attrs
        norm = self._norm_of(call) if NORM_ATTR not in attrs and SPEC_ATTR in attrs else None
        if norm is None:
            return None
        data, weight = norm.args
        source = self.values.get(data) if isinstance(data, relax.Var) else None
        skip = isinstance(source, relax.Call) and source.op == ADD and all(_same_type(a, data) for a in source.args)
        parts = tuple(source.args) if skip else (data,)
        return _Fusion(parts, weight, FusedNorm(float(norm.attrs.epsilon), skip))


@mutator
class _Fuser(PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.mod = mod
        self.plan: dict[relax.Var, _Fusion] = {}

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        fusion = self.plan.get(binding.var)
        if fusion is None:
            super().visit_var_binding_(binding)
            return
        call = binding.value
        spec = KernelSpec.from_attr(self.mod[call.args[0]].attrs[SPEC_ATTR])
        shape = call.args[1].fields[0].ty.shape
        flat = [self.builder_.emit(relax.op.reshape(self.visit_expr(p), shape)) for p in fusion.parts]
        gvar = self.builder_.add_func(lut_precompute(spec, fusion.norm), "lut_precompute")
        value = relax.call_tir(gvar, [*flat, self.visit_expr(fusion.weight)], list(call.ty.fields))
        self.set_var_remap(binding.var, rebound(self.builder_, binding.var, value))


@tvm.transform.module_pass(opt_level=0, name="LutcFuseNormPrecompute")
class LutcFuseNormPrecompute:
    """Fold RMSNorms into the table precompute they feed (see the module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        fuser = _Fuser(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                fuser.plan = _Planner(mod, func).plan()
                if fuser.plan:
                    fuser.builder_.update_func(gvar, fuser.visit_expr(func))
        return fuser.builder_.get()
