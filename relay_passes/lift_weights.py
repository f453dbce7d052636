"""LutcLiftWeights: weight preprocessing out of ``main``, the weights bundled into one parameter.

Work that reads only weights would run on every call: a ``Transpose`` of a tied embedding, the
reshape an embedding lookup reads, the dequantize path's weights, and the default schedules'
rewrite of a float matmul's weight into another layout (``layout_rewrite_preproc``). TVM's
``LiftTransformParams`` moves it into a function lutc names ``main_weights_<i>`` and runs once
when the weights are made. The CPU and CUDA backends lift twice: before legalization (Relax ops,
so the default schedules see a transposed weight as a weight) and after the default schedules
(their layout rewrites), then bundle. ``main`` then takes the transformed weights: their keys in
:data:`~lutc.frontend.weight_params.WEIGHTS_ATTR` become ``transformed:<digest>`` (a digest of
how they are computed, equal for equal work in two builds), and each stage carries the keys it
takes. ``BundleModelParams`` passes the weights as one tuple (one VM argument instead of
hundreds: 11 us less per call at 300 weights).
"""

from __future__ import annotations

import hashlib

import tvm
import tvm_ffi
from tvm import relax

from ..frontend.weight_params import WEIGHTS_ATTR, weight_key, weights_of

TRANSFORM_SUFFIX = "_transform_params"
STAGE_PREFIX = "main_weights_"
"""Lifted weight preprocessing: ``main_weights_0``, ``main_weights_1``, ... run in that order, each
taking the previous one's outputs (or the model's weights) as one tuple."""


def _bindings(func: relax.Function) -> dict[relax.Var, relax.Expr]:
    found: dict[relax.Var, relax.Expr] = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            found[binding.var] = binding.value
    return found


def _describe(expr: relax.Expr, bound: dict, mod: tvm.IRModule, keys: list[str]) -> str:
    """A canonical text of how ``expr`` is computed from the weights ``keys`` (equal for equal work
    in two builds): keys, ops with their attributes, kernels by structural hash, shapes, constants."""
    if isinstance(expr, relax.Var):
        return _describe(bound[expr], bound, mod, keys) if expr in bound else "weights"
    if isinstance(expr, relax.TupleGetItem):
        inner = expr.tuple_value
        if isinstance(inner, relax.Var) and inner not in bound:
            return keys[expr.index]
        return f"{_describe(inner, bound, mod, keys)}[{expr.index}]"
    if isinstance(expr, relax.Call):
        callee = expr.op
        name = str(tvm_ffi.structural_hash(mod[callee])) if isinstance(callee, tvm.ir.GlobalVar) else str(callee)
        args = ", ".join(_describe(arg, bound, mod, keys) for arg in expr.args)
        return f"{name}({args}){expr.attrs if expr.attrs is not None else ''}"
    if isinstance(expr, relax.Tuple):
        return "(" + ", ".join(_describe(field, bound, mod, keys) for field in expr.fields) + ")"
    if isinstance(expr, tvm.ir.GlobalVar):
        return str(tvm_ffi.structural_hash(mod[expr]))
    return str(tvm_ffi.structural_hash(expr))


def transformed_keys(mod: tvm.IRModule, transform: relax.Function, keys: list[str]) -> list[str]:
    """The key of each output of ``transform`` (taking the weights ``keys`` as one tuple): the
    source's key where it passes a weight through, else ``transformed:<digest>`` of how it is
    computed (:func:`_describe`)."""
    bound = _bindings(transform)
    output = transform.body.body
    while isinstance(output, relax.Var) and output in bound:
        output = bound[output]
    if not isinstance(output, relax.Tuple):  # the weights passed through as they are
        return keys
    result = []
    for field in output.fields:
        text = _describe(field, bound, mod, keys)
        passthrough = text in keys
        result.append(text if passthrough else weight_key("transformed", hashlib.sha1(text.encode()).hexdigest()[:16]))
    return result


def _renamed(mod: tvm.IRModule, old: str, new: str) -> tvm.IRModule:
    """``mod`` (a module of this pass's own) with function ``old`` called ``new`` and no longer taking
    ``num_input`` (nothing calls it: lutc runs it from the VM)."""
    func = mod[old]
    del mod[old]
    mod[new] = func.with_attr("global_symbol", new).without_attr("num_input")
    return mod


def stages(mod: tvm.IRModule) -> list[str]:
    """The names of the weight stages lifted so far, in the order they run."""
    names = [gvar.name_hint for gvar in mod.get_global_vars() if gvar.name_hint.startswith(STAGE_PREFIX)]
    return sorted(names, key=lambda name: int(name[len(STAGE_PREFIX) :]))


@tvm.transform.module_pass(opt_level=0, name="LutcLiftWeights")
class LutcLiftWeights:
    """Lift weight preprocessing out of ``main`` into the next weight stage; ``bundle``: then pass the
    weights as one tuple (see the module docstring)."""

    def __init__(self, bundle: bool = False):
        self.bundle = bundle

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        names = [gvar.name_hint for gvar in mod.get_global_vars()]
        if "main" not in names or WEIGHTS_ATTR not in (mod["main"].attrs or {}):
            return mod
        keys = list(weights_of(mod["main"]).values())
        mod = relax.transform.LiftTransformParams()(mod)
        lifted = "main" + TRANSFORM_SUFFIX
        if lifted in [gvar.name_hint for gvar in mod.get_global_vars()]:
            transform = mod[lifted]
            mod["main"] = mod["main"].with_attr(WEIGHTS_ATTR, transformed_keys(mod, transform, keys))
            mod[lifted] = transform.with_attr(WEIGHTS_ATTR, keys)
            mod = _renamed(mod, lifted, f"{STAGE_PREFIX}{len(stages(mod))}")
        return relax.transform.BundleModelParams()(mod) if self.bundle else mod
