"""Weights as parameters of ``main``: the inputs come first (``num_input`` of them), then one
parameter per weight, whose **key** (in the function attribute :data:`WEIGHTS_ATTR`) says what
it holds and how to compute it (:mod:`lutc.weights` reads them):

- ``initializer:<name>``: an ONNX initializer as stored;
- ``codes:<node>``, ``scales:<node>``, ``zeros:<node>``: a quantized node's weight in lutc's
  logical layout (what ``lut_dequantize`` reads);
- ``packed.data:<node>``, ``packed.scales:<node>``, ``packed.offsets:<node>``: the same weight in
  the packed kernel layout (what ``lut_matmul`` reads);
- ``transformed:<digest>``: a weight the default schedules rewrote into another layout
  (:class:`lutc.relay_passes.LutcLiftWeights`), computed at load time by ``main_transform_params``.

The model's bytes never enter the IR: a weight is a typed parameter and a key.
"""

from __future__ import annotations

import re

from tvm import relax

WEIGHTS_ATTR = "lutc.weights"
"""Attribute of a function taking weights: the key of each parameter after ``num_input``, in order."""

LOGICAL_PARTS = ("codes", "scales", "zeros")
PACKED_PARTS = ("packed.data", "packed.scales", "packed.offsets")


def weight_key(kind: str, name: str) -> str:
    return f"{kind}:{name}"


def split_key(key: str) -> tuple[str, str]:
    """``(kind, name)`` of a weight key."""
    kind, _, name = key.partition(":")
    return kind, name


def weight_var(key: str, shape, dtype: str) -> relax.Var:
    """A parameter for the weight ``key`` (its name only for reading the IR)."""
    return relax.Var("w_" + re.sub(r"\W+", "_", key).strip("_"), relax.TensorType(shape, dtype))


def num_inputs(func: relax.Function) -> int:
    attrs = func.attrs
    return int(attrs["num_input"]) if attrs is not None and "num_input" in attrs else len(func.params)


def weights_of(func: relax.Function) -> dict[relax.Var, str]:
    """The function's weight parameters and their keys, in order (empty when it takes none)."""
    attrs = func.attrs
    keys = [str(k) for k in attrs[WEIGHTS_ATTR]] if attrs is not None and WEIGHTS_ATTR in attrs else []
    params = list(func.params)[num_inputs(func) :]
    if len(keys) != len(params):
        raise ValueError(f"{len(params)} weight parameters but {len(keys)} keys in {WEIGHTS_ATTR}")
    return dict(zip(params, keys, strict=True))


def with_weights(func: relax.Function, weights: dict[relax.Var, str], *, keep_unused: bool = False) -> relax.Function:
    """``func`` taking its inputs then those of ``weights`` its body reads (``keep_unused``: all)."""
    used = set(relax.analysis.free_vars(func.body))
    kept = {var: key for var, key in weights.items() if keep_unused or var in used}
    inputs = list(func.params)[: num_inputs(func)]
    new = relax.Function(inputs + list(kept), func.body, func.ret_ty, func.is_pure, func.attrs, func.span)
    return new.with_attrs({"num_input": len(inputs), WEIGHTS_ATTR: list(kept.values())})
