"""LutcLiftWeights: work on the weights alone out of ``main``, into stages run once.

Work that reads only weights would run on every call: a ``Transpose`` of a tied embedding, the
reshape an embedding lookup reads, the dequantize path's weights, and the default schedules'
rewrite of a float matmul's weight into another layout (``layout_rewrite_preproc``). TVM's
``LiftTransformParams`` moves it into a function lutc names ``main_weights_<i>``, taken out of the
model into a module of its own (:data:`STAGES_ATTR`) that the builder compiles for this machine's
CPU and runs once when the weights are made. The CPU and CUDA backends lift twice: before legalization (Relax ops,
so the default schedules see a transposed weight as a weight) and after the default schedules
(their layout rewrites). ``main`` then takes the transformed weights: their keys in
:data:`~lutc.frontend.weight_params.WEIGHTS_ATTR` become ``transformed:<digest>`` (a digest of
how they are computed, equal for equal work in two builds), and each stage carries the keys it
takes. The weights stay separate parameters of ``main`` (TVM's ``BundleModelParams`` would save
about 11 us a call at 300 weights, but a tuple argument cannot cross TVM's RPC).
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
STAGES_ATTR = "lutc.weight_stages"
"""Module attribute: an IRModule of the weight stages and the kernels they call, taken out of the
model: the builder compiles it for this machine's CPU, so weights are made where the model is
built, whatever its target (a CUDA or ARM build on an x86 machine without a GPU)."""


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


def weight_stages(mod: tvm.IRModule) -> tvm.IRModule | None:
    """The module of ``mod``'s lifted weight stages and the kernels they call, if any."""
    return mod.attrs[STAGES_ATTR] if mod.attrs is not None and STAGES_ATTR in mod.attrs else None


def stages(mod: tvm.IRModule) -> list[str]:
    """The names of the weight stages of ``mod`` (a model's module or its stages' module), in order."""
    held = weight_stages(mod) or mod
    names = [gvar.name_hint for gvar in held.get_global_vars() if gvar.name_hint.startswith(STAGE_PREFIX)]
    return sorted(names, key=lambda name: int(name[len(STAGE_PREFIX) :]))


def _moved_out(mod: tvm.IRModule, lifted: str, name: str) -> tvm.IRModule:
    """``mod`` without the lifted function, which joins the stages' module (:data:`STAGES_ATTR`) as
    ``name``, with the kernels it calls (the same global vars), no longer taking ``num_input``."""
    func = mod[lifted]
    functions = dict(weight_stages(mod).functions_items()) if weight_stages(mod) is not None else {}
    for gvar in relax.analysis.all_global_vars(func):
        functions[gvar] = mod[gvar]
    functions[tvm.ir.GlobalVar(name)] = func.with_attr("global_symbol", name).without_attr("num_input")
    del mod[lifted]
    mod = relax.transform.DeadCodeElimination(["main"])(mod)
    return mod.with_attr(STAGES_ATTR, tvm.IRModule(functions))


@tvm.transform.module_pass(opt_level=0, name="LutcLiftWeights")
class LutcLiftWeights:
    """Lift work on the weights alone out of ``main`` into the next weight stage (module docstring)."""

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
            mod = _moved_out(mod, lifted, f"{STAGE_PREFIX}{len(stages(mod))}")
        return mod
