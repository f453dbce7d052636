"""Portable lookup micro-kernels: plain scalar TIR, correct on any LLVM CPU target."""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ...kernels.expr import nibble, plane_weight
from ...kernels.intrin_desc import register_lookup_intrin
from ...kernels.spec import KernelSpec
from ...quant.layout import TILE_N


def _entry(tab: tirx.Buffer, row: tirx.PrimExpr, index: tirx.PrimExpr, spec: KernelSpec) -> tirx.PrimExpr:
    """``tab[row, index]``, or ``±tab[row, index & 7]`` for symmetrized tables."""
    value = tirx.Cast(spec.acc_dtype, tab[row, index if not spec.half_tables else tirx.bitwise_and(index, 7)])
    if not spec.half_tables:
        return value
    return tirx.Select(tirx.bitwise_and(index, 8) == 0, value, tirx.const(0, spec.acc_dtype) - value)


def portable_impl(spec: KernelSpec, chunk: int) -> tirx.PrimFunc:
    planes, entries, table_dtype, acc_dtype = spec.planes, spec.entries, spec.table_dtype, spec.acc_dtype

    @T.prim_func(s_tir=True)
    def impl(
        tab: T.Buffer((chunk * 2, entries), table_dtype, offset_factor=1),
        w: T.Buffer((chunk, planes, TILE_N), "uint8", offset_factor=1),
        acc: T.Buffer((TILE_N,), acc_dtype, offset_factor=1),
    ):
        with T.sblock("root"):
            T.reads(acc[0:TILE_N], w[0:chunk, 0:planes, 0:TILE_N], tab[0 : chunk * 2, 0:entries])
            T.writes(acc[0:TILE_N])
            for kb, p, h, r in T.grid(chunk, planes, 2, TILE_N):
                acc[r] = acc[r] + plane_weight(_entry(tab, kb * 2 + h, nibble(w[kb, p, r], h), spec), p, acc_dtype)

    return impl


def portable_intrin(spec: KernelSpec, chunk: int) -> str:
    """Register (once) and name the portable micro-kernel for ``spec`` and ``chunk``."""
    return register_lookup_intrin("portable", spec, chunk, portable_impl)
