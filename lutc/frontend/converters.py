"""lutc's converters for the ONNX shape idioms TVM 0.27's importer gets wrong.

Each converter takes ``(values, bb, inputs, attrs)`` and returns a Relax expression, or
``None`` to leave the node to TVM's converter. They compute on :class:`ShapeValue` s, so a
dim stays the symbol it is (``seq``, ``past + seq``) through ``Shape -> Gather -> Add ->
Unsqueeze -> Concat -> Reshape`` and ``Range``. The root causes they replace (README, Known
limits): ``ConstantOfShape`` of an empty shape, ``Range`` with a fresh length var, binary ops
of an ``int64[1]`` constant and a scalar losing the rank, ``Reshape`` of a scalar,
``Equal`` on shapes folded with structural equality, ``Concat`` of a shape and a tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tvm
from onnx import numpy_helper
from tvm import relax, tirx

from .shape_values import ShapeValue, ShapeValues, dim_analyzer, int_expr, prim_dtype

Converter = Callable[[ShapeValues, relax.BlockBuilder, list, dict], relax.Expr | None]


def _pairs(a: ShapeValue, b: ShapeValue) -> list[tuple[tirx.PrimExpr, tirx.PrimExpr]] | None:
    """Elementwise pairs of two scalar/1-D values under ONNX broadcasting; None if they clash."""
    if len(a.values) == len(b.values):
        return list(zip(a.values, b.values, strict=True))
    if len(a.values) == 1:
        return [(a.values[0], v) for v in b.values]
    if len(b.values) == 1:
        return [(v, b.values[0]) for v in a.values]
    return None


def _nonnegative(*values: tirx.PrimExpr) -> bool:
    analyzer = dim_analyzer(*values)
    return all(analyzer.can_prove(v >= 0) for v in values)


def _div(x: tirx.PrimExpr, y: tirx.PrimExpr) -> tirx.PrimExpr:
    """ONNX integer ``Div`` truncates; for non-negative dims that is floor division."""
    return tirx.floordiv(x, y) if _nonnegative(x, y) else tirx.truncdiv(x, y)


ARITHMETIC: dict[str, Callable[[tirx.PrimExpr, tirx.PrimExpr], tirx.PrimExpr]] = {
    "Add": lambda x, y: x + y,
    "Sub": lambda x, y: x - y,
    "Mul": lambda x, y: x * y,
    "Div": _div,
    "Mod": tirx.floormod,
    "Max": tirx.max,
    "Min": tirx.min,
}


def _arithmetic(op: str) -> Converter:
    def convert(values, bb, inputs, attrs):
        if len(inputs) != 2 or (op == "Mod" and attrs.get("fmod", 0)):
            return None
        a, b = values.read(inputs[0]), values.read(inputs[1])
        pairs = _pairs(a, b) if a is not None and b is not None else None
        if pairs is None:
            return None
        combine = ARITHMETIC[op]
        return values.emit(bb, ShapeValue(tuple(combine(x, y) for x, y in pairs), max(a.rank, b.rank), a.dtype))

    return convert


def _equal(values, bb, inputs, attrs):
    a, b = values.read(inputs[0]), values.read(inputs[1])
    pairs = _pairs(a, b) if a is not None and b is not None else None
    if pairs is None:
        return None
    analyzer = dim_analyzer(*(v for pair in pairs for v in pair))
    equal = [analyzer.can_prove(x == y) for x, y in pairs]
    differ = [analyzer.can_prove(x != y) for x, y in pairs]
    if not all(e or d for e, d in zip(equal, differ, strict=True)):  # decided at run time
        return relax.op.equal(values.as_tensor(bb, inputs[0]), values.as_tensor(bb, inputs[1]))
    result = np.array(equal)
    return relax.const(result.reshape(()) if max(a.rank, b.rank) == 0 else result, "bool")


def _where(values, bb, inputs, attrs):
    cond = inputs[0]
    if not isinstance(cond, tvm.ir.GenericConst) or cond.value.numpy().ndim > 1:
        return None
    a, b = values.read(inputs[1]), values.read(inputs[2])
    pairs = _pairs(a, b) if a is not None and b is not None else None
    flags = cond.value.numpy().reshape(-1)
    if pairs is None or len(flags) not in (1, len(pairs)):
        return None
    flags = np.broadcast_to(flags, (len(pairs),))
    chosen = tuple(x if flag else y for flag, (x, y) in zip(flags, pairs, strict=True))
    return values.emit(bb, ShapeValue(chosen, max(a.rank, b.rank, cond.value.numpy().ndim), a.dtype))


def _constant_indices(expr) -> np.ndarray | None:
    if isinstance(expr, tvm.ir.GenericConst) and expr.value.numpy().dtype.kind == "i":
        return expr.value.numpy()
    return None


def _gather(values, bb, inputs, attrs):
    data, indices = values.read(inputs[0]), _constant_indices(inputs[1])
    if data is None or data.rank != 1 or indices is None or indices.ndim > 1 or attrs.get("axis", 0) != 0:
        return None
    picked = tuple(data.values[int(i)] for i in indices.reshape(-1))
    return values.emit(bb, ShapeValue(picked, indices.ndim, data.dtype))


def _slice(values, bb, inputs, attrs):
    data = values.read(inputs[0])
    bounds = [_constant_indices(x) for x in inputs[1:5]]
    if data is None or data.rank != 1 or bounds[0] is None or bounds[1] is None:
        return None
    if (bounds[2] is not None and bounds[2].tolist() not in ([0], [-1])) or any(
        b is not None and b.size != 1 for b in bounds
    ):
        return None
    step = int(bounds[3][0]) if bounds[3] is not None else 1
    start, end = (int(b[0]) for b in bounds[:2])
    return values.emit(bb, ShapeValue(data.values[start:end:step], 1, data.dtype))


def _unsqueeze(values, bb, inputs, attrs):
    data = values.read(inputs[0])
    axes = _constant_indices(inputs[1]) if len(inputs) > 1 else np.array(attrs.get("axes", ()))
    if data is None or data.rank != 0 or axes is None or axes.reshape(-1).tolist() not in ([0], [-1]):
        return None
    return values.emit(bb, ShapeValue(data.values, 1, data.dtype))


def _squeeze(values, bb, inputs, attrs):
    data = values.read(inputs[0])
    if data is None or data.rank != 1 or len(data.values) != 1:
        return None
    return values.emit(bb, ShapeValue(data.values, 0, data.dtype))


def _reshape(values, bb, inputs, attrs):
    data, shape = values.read(inputs[0]), _constant_indices(inputs[1])
    if data is None or shape is None or shape.ndim != 1 or len(shape) > 1:
        return None
    if len(shape) == 0:
        return values.emit(bb, ShapeValue(data.values, 0, data.dtype)) if len(data.values) == 1 else None
    if int(shape[0]) not in (-1, len(data.values)):
        return None
    return values.emit(bb, ShapeValue(data.values, 1, data.dtype))


def _concat(values, bb, inputs, attrs):
    read = [values.read(x) for x in inputs]
    if all(v is not None and v.rank == 1 for v in read):
        return values.emit(bb, ShapeValue(tuple(e for v in read for e in v.values), 1, read[0].dtype))
    if all(v is None or v.is_constant for v in read):
        return None
    return relax.op.concat([values.as_tensor(bb, x) for x in inputs], axis=attrs.get("axis", 0))


def _cast(values, bb, inputs, attrs):
    from onnx.helper import tensor_dtype_to_np_dtype

    data = values.read(inputs[0])
    dtype = tensor_dtype_to_np_dtype(attrs["to"]).name
    if data is None:
        return None
    if dtype in ("int64", "int32"):
        return values.emit(bb, ShapeValue(data.values, data.rank, dtype))
    return relax.op.astype(values.as_tensor(bb, inputs[0]), dtype)


def _scalar(value: ShapeValue | None) -> tirx.PrimExpr | None:
    return value.values[0] if value is not None and len(value.values) == 1 else None


def _range(values, bb, inputs, attrs):
    """``arange`` with the symbolic length ``ceil((limit - start) / delta)``, not a fresh var."""
    start, limit, delta = (_scalar(values.read(_integral(x))) for x in inputs)
    if start is None or limit is None or delta is None:
        return None
    out_dtype = _dtype_of(inputs[0])
    out = relax.op.arange(start, limit, delta, "int64")
    return out if out_dtype == "int64" else relax.op.astype(out, out_dtype)


def _dtype_of(expr) -> str:
    if tvm.ir.is_prim_expr(expr):
        return prim_dtype(expr)
    return str(expr.ty.dtype)


def _integral(expr):
    """A float constant with integral values as int64 (``Range`` over floats of whole numbers)."""
    if isinstance(expr, tvm.ir.GenericConst):
        array = expr.value.numpy()
        if array.dtype.kind == "f" and array.size == 1 and float(array.reshape(-1)[0]).is_integer():
            return relax.const(array.astype(np.int64))
    return expr


def _constant_of_shape(values, bb, inputs, attrs):
    """ONNX ``value`` is a 1-element tensor; an empty shape means a scalar output."""
    value = numpy_helper.to_array(attrs["value"]).reshape(-1) if "value" in attrs else np.zeros(1, np.float32)
    fill = value.reshape(())
    shape = values.read(inputs[0])
    if shape is None:
        return relax.op.broadcast_to(relax.const(fill), relax.op.tensor_to_shape(inputs[0]))
    if shape.is_constant:
        return relax.const(np.full(shape.numpy().reshape(-1), fill, dtype=value.dtype))
    return relax.op.broadcast_to(relax.const(fill), relax.ShapeExpr([int_expr(v) for v in shape.values]))


SHAPE_CONVERTERS: dict[str, Converter] = {
    **{op: _arithmetic(op) for op in ARITHMETIC},
    "Equal": _equal,
    "Where": _where,
    "Gather": _gather,
    "Slice": _slice,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Reshape": _reshape,
    "Concat": _concat,
    "Cast": _cast,
    "Range": _range,
    "ConstantOfShape": _constant_of_shape,
}
"""Default-domain ops lutc converts when their inputs are shape values (else TVM's converter)."""

TVM_SHAPE_AWARE = frozenset(
    {"Reshape", "Resize", "ConstantOfShape", "Gather", "Slice", "Shape", "Expand", "Concat", "Equal", "Where"}
    | {"Cast", "CastLike", "Squeeze"}
)
"""Ops whose TVM converters take a ``ShapeExpr`` input (the list in TVM's ``_construct_nodes``)."""
