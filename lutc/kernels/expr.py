"""TIR expressions shared by the logical kernels and the tensor-intrinsic descriptions.

A schedule's micro-kernel replaces a loop nest only if its description matches the kernel's
expression node for node, so both are built from these helpers.
"""

from __future__ import annotations

from tvm import tirx

NIBBLE = 4


def nibble(byte: tirx.PrimExpr, half: tirx.PrimExpr) -> tirx.PrimExpr:
    """Index ``half`` (0 = low nibble, 1 = high) of a uint8 weight byte, as int32."""
    shifted = tirx.shift_right(byte, tirx.Cast("uint8", half * NIBBLE))
    return tirx.Cast("int32", tirx.bitwise_and(shifted, tirx.const(15, "uint8")))


def plane_weight(value: tirx.PrimExpr, plane: tirx.PrimExpr, acc_dtype: str) -> tirx.PrimExpr:
    """``value * 2**plane`` in the accumulator type (a shift for int32)."""
    if acc_dtype == "int32":
        return tirx.shift_left(tirx.Cast("int32", value), plane)
    return tirx.Cast("float32", value) * tirx.Cast("float32", tirx.shift_left(1, plane))


def one_hot_lookup(
    table_entry: tirx.PrimExpr, index: tirx.PrimExpr, entry: tirx.PrimExpr, half_tables: bool, acc_dtype: str
) -> tirx.PrimExpr:
    """``table[index]`` written as one term of ``sum_e [index == e] * table[e]``.

    Symmetrized tables hold 8 entries: the term is ``table[index & 7]``, negated when bit 3 is
    set. Writing the lookup as a one-hot sum keeps buffer indices free of loaded data, which
    tensorization needs.
    """
    zero = tirx.const(0, acc_dtype)
    value = tirx.Cast(acc_dtype, table_entry)
    if not half_tables:
        return tirx.Select(index == entry, value, zero)
    signed = tirx.Select(tirx.bitwise_and(index, 8) == 0, value, zero - value)
    return tirx.Select(tirx.bitwise_and(index, 7) == entry, signed, zero)
