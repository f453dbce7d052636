"""LutcVectorWeights: ``lut_matmul`` calls read their weight in the vector layout (GPUs).

Each ``lut_matmul`` call in the tile layout gets the kernel of the same spec with ``vector`` set
(:func:`lutc.quant.layout.vector_bytes` of its weight groups) and reads ``data`` in the vector
layout (where a vector width divides its weight groups; else it keeps the tile layout): a
constant is converted now (:func:`~lutc.quant.layout.to_vector_layout`); a model weight
goes through a reshape and a transpose (:func:`~lutc.quant.layout.vector_transform`) that
:class:`~lutc.relay_passes.LutcLiftWeights` lifts out of ``main``, so the weights are converted
once, when they are made. The CUDA backend runs it before scheduling; CPUs keep the tile layout.
"""

from __future__ import annotations

import dataclasses

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..kernels.matmul import lut_matmul
from ..kernels.names import MATMUL_KERNEL, SPEC_ATTR
from ..kernels.spec import KernelSpec
from ..quant.layout import VECTOR_WIDTHS, to_vector_layout, vector_bytes, vector_transform
from .calls import called_kernel, rebound

DATA_ARG = 4
"""``data``'s position among ``lut_matmul``'s arguments: the four table outputs come first."""


def vector_spec(spec: KernelSpec) -> KernelSpec:
    """``spec`` reading its weight in the vector layout; ``spec`` itself where no vector width
    divides its groups (a per-channel format whose padded K is an odd number of bytes)."""
    if not any(spec.group_bytes % v == 0 for v in VECTOR_WIDTHS):
        return spec
    return dataclasses.replace(spec, vector=vector_bytes(spec.group_bytes))


@mutator
class _Vectorizer(PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.mod = mod
        self.kernels: dict[str, tvm.ir.GlobalVar] = {}

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        call = binding.value
        if called_kernel(self.mod, call) != MATMUL_KERNEL:
            super().visit_var_binding_(binding)
            return
        spec = KernelSpec.from_attr(self.mod[call.args[0]].attrs[SPEC_ATTR])
        target = vector_spec(spec) if spec.vector == 1 else spec
        if target is spec:
            super().visit_var_binding_(binding)
            return
        args = [self.visit_expr(arg) for arg in call.args[1].fields]
        args[DATA_ARG] = self._vector_data(args[DATA_ARG], target.vector)
        if target.tag not in self.kernels:
            self.kernels[target.tag] = self.builder_.add_func(lut_matmul(target), "lut_matmul")
        value = relax.call_tir(self.kernels[target.tag], args, call.ty)
        self.set_var_remap(binding.var, rebound(self.builder_, binding.var, value))

    def _vector_data(self, data: relax.Expr, vector: int) -> relax.Expr:
        if isinstance(data, tvm.ir.expr.Constant):
            return relax.const(to_vector_layout(data.value.numpy(), vector))
        shape = tuple(int(d) for d in data.ty.shape.values)
        reshape, axes = vector_transform(shape, vector)
        return self.builder_.emit(relax.op.permute_dims(relax.op.reshape(data, reshape), list(axes)))


@tvm.transform.module_pass(opt_level=0, name="LutcVectorWeights")
class LutcVectorWeights:
    """Give every ``lut_matmul`` call its weight in the vector layout (see the module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        vectorizer = _Vectorizer(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                vectorizer.builder_.update_func(gvar, vectorizer.visit_expr(func))
        return relax.transform.DeadCodeElimination()(vectorizer.builder_.get())
