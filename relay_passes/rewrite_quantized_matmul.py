"""LutcRewriteQuantizedMatmul: ``matmul(x, lut_dequantize(w))`` -> LUT precompute + matmul.

``w`` is a model weight (parameters of ``main`` keyed ``codes:<node>``, ``scales:<node>``,
``zeros:<node>``, :mod:`lutc.frontend.weight_params`): the matmul then reads new weight
parameters keyed ``packed.data:<node>``, ... (the weight in the kernel layout, packed when the
model's weights are loaded), and the logical ones are dropped. Constant arrays (modules built
by hand) are repacked into constants at compile time. Each rewritten or skipped weight is
recorded in the module attribute ``lutc.decisions`` (node -> reason), which ``lutc.build`` turns
into its summary.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..frontend.weight_params import LOGICAL_PARTS, split_key, weight_key, weight_var, weights_of, with_weights
from ..kernels.matmul import lut_matmul
from ..kernels.names import DEQUANTIZE_KERNEL, FORMAT_ATTR, NODE_ATTR, kernel_of
from ..kernels.precompute import lut_precompute
from ..kernels.spec import KernelSpec
from ..quant.formats import format_from_attr
from ..quant.layout import half_scaled, pack
from ..quant.weights import QuantizedWeight
from .calls import called_kernel

DECISIONS_ATTR = "lutc.decisions"
MATMUL = is_op("relax.matmul")(wildcard(), wildcard())


@dataclass(frozen=True)
class RewriteOptions:
    """What the rewrite produces: table mode, half tables, nodes to leave alone, whether the
    passes after it share tables and fold norms into precomputes (``fuse``), and half scales."""

    mode: Literal["exact", "fast"] = "fast"
    half_tables: bool = False
    keep_dequantize: frozenset[str] = frozenset()
    fuse: bool = True
    half_scales: bool = False
    """Kernels read float16 scales and offsets (``KernelSpec.half_scales``)."""


EXACT_MAX_BITS = 4
"""Widest codes exact mode runs as LUT kernels. The bit-serial sum weights plane ``i`` by
``2**(i - 1)``, so its float rounding grows with the width: on the builder's Qwen2.5 graph with an
8-bit LM head, exact-mode logits were 1e-4 (of max |logit|) from ORT's float GEMM, against 1e-6
for 4-bit layers. Fast mode's int8 tables sum exactly in integers and take any width."""


def _dequantize_call(mod: tvm.IRModule, expr: relax.Expr):
    """``(callee attrs, args)`` when ``expr`` calls ``lut_dequantize``, else ``None``."""
    if called_kernel(mod, expr) != DEQUANTIZE_KERNEL:
        return None
    return mod[expr.args[0]].attrs, list(expr.args[1].fields)


def _weight(attrs, args: list[tvm.ir.expr.Constant]) -> QuantizedWeight:
    arrays = [arg.value.numpy() for arg in args]
    return QuantizedWeight(format_from_attr(attrs[FORMAT_ATTR]), arrays[0], arrays[1], *arrays[2:])


def _packed_constants(spec: KernelSpec, attrs, args: list[tvm.ir.expr.Constant]) -> list[relax.Expr]:
    packed = pack(_weight(attrs, args))
    packed = half_scaled(packed) if spec.half_scales else packed
    return [relax.const(a) for a in (packed.data, packed.scales, packed.offsets) if a is not None]


def decision(spec: KernelSpec) -> str:
    """What ``lutc.build``'s summary says of a matmul rewritten into ``spec``'s kernel."""
    extras = [" symmetrized"] * spec.half_tables + [" float16 scales"] * spec.half_scales
    return f"lut {spec.mode} {spec.fmt.name}{''.join(extras)}"


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, options: RewriteOptions):
        super().__init__(mod)
        self.mod, self.options, self.decisions = mod, options, {}
        self.keys: dict[relax.Var, str] = {}
        """The weights of ``main`` (as imported) and the packed ones this pass adds."""
        if "main" in [g.name_hint for g in mod.get_global_vars()]:
            self.keys.update(weights_of(mod["main"]))

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = self.visit_expr_post_order(call)
        if not MATMUL.match(call):
            return call
        x, weight = call.args
        found = _dequantize_call(self.mod, self.lookup_binding(weight) if isinstance(weight, relax.Var) else weight)
        if found is None:
            return call
        attrs, args = found
        node = str(attrs.get(NODE_ATTR, "?"))
        reason = self._skip_reason(node, attrs, args)
        if reason:
            self.decisions[node] = f"dequantize path: {reason}"
            return call
        try:
            spec = self._spec(x, attrs, args)
        except NotImplementedError as err:
            self.decisions[node] = f"dequantize path: {err}"
            return call
        self.decisions[node] = decision(spec)
        return self._emit_lut(x, spec, self._packed(spec, attrs, args))

    def _skip_reason(self, node: str, attrs, args) -> str:
        if node in self.options.keep_dequantize:
            return "kept by request"
        if FORMAT_ATTR not in attrs:
            return "no LUT kernel for this bit width"
        if self.options.mode == "exact" and format_from_attr(attrs[FORMAT_ATTR]).bits > EXACT_MAX_BITS:
            return f"exact mode runs codes of more than {EXACT_MAX_BITS} bits as a float matmul"
        if not all(isinstance(arg, tvm.ir.expr.Constant) for arg in args) and self._weight_node(args) is None:
            warnings.warn(f"{node}: quantized weight is neither a constant nor a model weight; it stays on the "
                          "dequantize path", stacklevel=2)  # fmt: skip
            return "weight is not a constant"
        return ""

    def _weight_node(self, args) -> str | None:
        """The node whose logical weight parameters ``args`` are (``codes:<node>``, ...), or None."""
        keys = [split_key(self.keys[arg]) if arg in self.keys else ("", "") for arg in args]
        names = {name for _, name in keys}
        expected = list(LOGICAL_PARTS[: len(args)])
        return names.pop() if len(names) == 1 and [kind for kind, _ in keys] == expected else None

    def _spec(self, x: relax.Expr, attrs, args) -> KernelSpec:
        shape = x.ty.shape
        if x.ty.dtype != "float32" or shape is None:
            raise NotImplementedError(f"activations are {x.ty.dtype} with shape {shape}; kernels take float32")
        rows = _static_rows(shape.values[:-1])
        n, k = (int(d) for d in args[0].ty.shape.values)
        fmt = format_from_attr(attrs[FORMAT_ATTR])
        options = self.options
        return KernelSpec(rows, n, k, fmt, mode=options.mode, half_tables=options.half_tables,
                          half_scales=options.half_scales)  # fmt: skip

    def _packed(self, spec: KernelSpec, attrs, args) -> list[relax.Expr]:
        """The packed weight's arrays: constants packed now, or new weight parameters packed at load."""
        node = self._weight_node(args)
        if node is None:
            return _packed_constants(spec, attrs, args)
        weights = []
        for part, (shape, dtype) in spec.weight_types().items():
            key = weight_key(f"packed.{part}", node)
            var = next((v for v, k in self.keys.items() if k == key), None) or weight_var(key, shape, dtype)
            self.keys[var] = key
            weights.append(var)
        return weights

    def _emit_lut(self, x: relax.Expr, spec: KernelSpec, weights: list[relax.Expr]) -> relax.Expr:
        leading = list(x.ty.shape.values[:-1])
        rows = _product(leading)
        flat = self.builder_.emit(relax.op.reshape(x, [rows, spec.k]))
        types = _table_types(spec, rows)
        precompute = self.builder_.add_func(lut_precompute(spec), "lut_precompute")
        tables = self.builder_.emit(relax.call_tir(precompute, [flat], types))
        args = [relax.TupleGetItem(tables, i) for i in range(len(types))] + weights
        matmul = self.builder_.add_func(lut_matmul(spec), "lut_matmul")
        out = self.builder_.emit(relax.call_tir(matmul, args, relax.TensorType((rows, spec.n), "float32")))
        return relax.op.reshape(out, [*leading, spec.n])


def _static_rows(dims) -> int | None:
    values = [int(d) if isinstance(d, tvm.tirx.IntImm) else None for d in dims]
    return None if None in values else int(np.prod(values, dtype=np.int64))


def _product(dims) -> tvm.tirx.PrimExpr:
    total = tvm.tirx.const(1, "int64")
    for dim in dims:
        total = total * dim
    return tvm.sym.Analyzer().simplify(total)


def _table_types(spec: KernelSpec, rows) -> list[relax.TensorType]:
    return [
        relax.TensorType((rows, spec.table_groups, spec.entries), spec.table_dtype),
        relax.TensorType((rows, spec.n_groups), "float32"),
        relax.TensorType((rows, spec.n_groups), "float32"),
        relax.TensorType((rows,), "float32"),
    ]


def _without_unused_dequantize(mod: tvm.IRModule) -> tvm.IRModule:
    """Drop ``lut_dequantize`` kernels no Relax function calls any more (and their constants)."""
    used = {
        gvar.name_hint
        for func in mod.functions.values()
        if isinstance(func, relax.Function)
        for gvar in relax.analysis.all_global_vars(func)
    }
    kept = {
        gvar: func
        for gvar, func in mod.functions_items()
        if gvar.name_hint in used or kernel_of(func) != DEQUANTIZE_KERNEL
    }
    return tvm.IRModule(kept, attrs=mod.attrs)


@tvm.transform.module_pass(opt_level=0, name="LutcRewriteQuantizedMatmul")
class LutcRewriteQuantizedMatmul:
    """Rewrite constant quantized matmuls into LUT kernels (see the module docstring)."""

    def __init__(self, options: RewriteOptions | None = None):
        self.options = options or RewriteOptions()

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rewriter = _Rewriter(mod, self.options)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                new = rewriter.visit_expr(func)
                if gvar.name_hint == "main" and rewriter.keys:
                    new = with_weights(new, rewriter.keys, keep_unused=True)
                rewriter.builder_.update_func(gvar, new)
        out = _without_unused_dequantize(relax.transform.DeadCodeElimination()(rewriter.builder_.get()))
        if rewriter.keys:  # the logical weights of rewritten matmuls are dead now
            out["main"] = with_weights(out["main"], weights_of(out["main"]))
        previous = dict(mod.attrs[DECISIONS_ATTR]) if mod.attrs and DECISIONS_ATTR in mod.attrs else {}
        return out.with_attr(DECISIONS_ATTR, {**previous, **rewriter.decisions})
