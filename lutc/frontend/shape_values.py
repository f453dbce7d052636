"""Integer shape values known symbolically during import (``batch``, ``seq + past``, ...).

Exporters compute reshape targets, mask sizes and positions from ``Shape`` at run time. TVM
0.27's importer carries such values as ``ShapeExpr`` (1-D), bare PrimExprs (scalars) or
constants, and loses them at the seams (README, Known limits). lutc's converters
(:mod:`lutc.frontend.converters`) keep one representation instead: a :class:`ShapeValue`, a
scalar or 1-D list of PrimExprs, emitted as a real int64 tensor (1-D) or PrimExpr (scalar)
and remembered by :class:`ShapeValues` so that later shape ops see the symbols, not an
opaque tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.sym.analyzer import Analyzer, ConstIntBound

MAX_SHAPE_VALUE_LENGTH = 16
"""Longest int constant treated as a shape value (a rank), not as data."""

INT_DTYPES = ("int64", "int32")


@dataclass(frozen=True, eq=False)
class ShapeValue:
    """An int64/int32 scalar (``rank == 0``) or vector of PrimExprs."""

    values: tuple[tirx.PrimExpr, ...]
    rank: int
    dtype: str = "int64"

    @property
    def is_constant(self) -> bool:
        return all(isinstance(v, tirx.IntImm) for v in self.values)

    def numpy(self) -> np.ndarray:
        array = np.array([int(v.value) for v in self.values], dtype=self.dtype)
        return array.reshape(()) if self.rank == 0 else array


def prim_dtype(expr: tirx.PrimExpr) -> str:
    return str(expr.ty.dtype)


def int_expr(value) -> tirx.PrimExpr:
    """An int64 PrimExpr for a Python/numpy int or a PrimExpr of any int dtype."""
    if isinstance(value, int | np.integer):
        return tirx.IntImm("int64", int(value))
    return value if prim_dtype(value) == "int64" else tirx.Cast("int64", value)


def simplify(value: tirx.PrimExpr) -> tirx.PrimExpr:
    return Analyzer().simplify(value)


def dim_analyzer(*exprs: tirx.PrimExpr) -> Analyzer:
    """An analyzer that knows every variable of ``exprs`` is a dim, hence ``>= 0``."""
    analyzer = Analyzer()
    for expr in exprs:
        for var in tirx.analysis.undefined_vars(expr):
            analyzer.update(var, ConstIntBound(0, ConstIntBound.POS_INF), override=True)
    return analyzer


class ShapeValues:
    """The shape values of one import: reading any input form, emitting one form."""

    def __init__(self) -> None:
        self._known: dict[relax.Expr, ShapeValue] = {}

    def read(self, expr) -> ShapeValue | None:
        """The symbolic value of ``expr`` if it is a small int tensor, a shape or a PrimExpr."""
        if expr is None:
            return None
        if isinstance(expr, relax.Expr) and expr in self._known:
            return self._known[expr]
        if isinstance(expr, relax.ShapeExpr):
            return ShapeValue(tuple(int_expr(v) for v in expr.values), 1)
        if isinstance(expr, tvm.ir.GenericConst):
            array = expr.value.numpy()
            if array.dtype.name not in INT_DTYPES or array.ndim > 1 or array.size > MAX_SHAPE_VALUE_LENGTH:
                return None
            return ShapeValue(tuple(int_expr(v) for v in array.reshape(-1)), array.ndim, array.dtype.name)
        if tvm.ir.is_prim_expr(expr) and prim_dtype(expr) in INT_DTYPES:
            return ShapeValue((int_expr(expr),), 0, prim_dtype(expr))
        return None

    def emit(self, bb: relax.BlockBuilder, value: ShapeValue) -> relax.Expr:
        """A constant, a PrimExpr (scalar) or a remembered int tensor (vector) for ``value``."""
        value = ShapeValue(tuple(simplify(v) for v in value.values), value.rank, value.dtype)
        if value.is_constant:
            return relax.const(value.numpy(), value.dtype)
        if value.rank == 0:
            scalar = value.values[0]
            return scalar if value.dtype == "int64" else tirx.Cast(value.dtype, scalar)
        tensor = relax.op.shape_to_tensor(relax.ShapeExpr(list(value.values)))
        if value.dtype != "int64":
            tensor = relax.op.astype(tensor, value.dtype)
        var = bb.emit(tensor)
        self._known[var] = value
        return var

    def as_shape(self, expr) -> relax.Expr:
        """``expr`` as a ``ShapeExpr`` if it is a remembered vector (for TVM's shape-aware converters)."""
        value = self._known.get(expr) if isinstance(expr, relax.Expr) else None
        return relax.ShapeExpr(list(value.values)) if value is not None and value.rank == 1 else expr

    def as_tensor(self, bb: relax.BlockBuilder, expr) -> relax.Expr:
        """``expr`` as an int tensor if it is a symbolic scalar or a ``ShapeExpr`` (for the other converters)."""
        value = self.read(expr) if isinstance(expr, relax.ShapeExpr) or tvm.ir.is_prim_expr(expr) else None
        if value is None or value.is_constant:
            return relax.const(value.numpy(), value.dtype) if value is not None else expr
        tensor = relax.op.shape_to_tensor(relax.ShapeExpr(list(value.values)))
        tensor = relax.op.reshape(tensor, ()) if value.rank == 0 else tensor
        var = bb.emit(tensor if value.dtype == "int64" else relax.op.astype(tensor, value.dtype))
        self._known[var] = value
        return var
