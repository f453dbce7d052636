"""Tensor-intrinsic descriptions of the ``lookup`` stage, one chunk of K bytes for 32 rows.

A schedule splits the byte loop of ``lookup`` into chunks and tensorizes the chunk with a
target micro-kernel whose description is :func:`lookup_desc`. A micro-kernel is described by
the :class:`~lutc.kernels.spec.KernelSpec` of its ``lut_matmul`` (planes, table entries and
types, group bytes); its registered name keeps only those.
"""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from ..quant.layout import TILE_N
from .expr import nibble, one_hot_lookup, plane_weight
from .spec import KernelSpec


def lookup_term(entry, byte, plane, half, e, spec: KernelSpec) -> tirx.PrimExpr:
    """One term of the lookup sum; ``plane`` is ``None`` for single-plane formats."""
    term = one_hot_lookup(entry, nibble(byte, half), e, spec.half_tables, spec.acc_dtype)
    return term if plane is None else plane_weight(term, plane, spec.acc_dtype)


def lookup_desc(spec: KernelSpec, chunk: int, rows: int = 1) -> tirx.PrimFunc:
    """``acc[r] += sum_{byte < chunk, plane, half, e} 2**plane * tab[2*byte + half, e] * [p == e]``.

    Loops of extent one vanish during scheduling, so a single-plane format has no plane loop
    and ``chunk`` must be at least 2. ``rows > 1``: the same for ``rows`` activation rows at
    once (``tab[i, ...]`` and ``acc[i, r]``, strided), sharing each weight byte.
    """
    if chunk < 2:
        raise ValueError(f"lookup chunks cover at least 2 bytes; got {chunk}")
    if rows > 1:
        return _multi_row_desc(spec, chunk, rows)
    return _multi_plane_desc(spec, chunk) if spec.planes > 1 else _single_plane_desc(spec, chunk)


def _multi_plane_desc(spec: KernelSpec, chunk: int) -> tirx.PrimFunc:
    planes, entries, table_dtype, acc_dtype = spec.planes, spec.entries, spec.table_dtype, spec.acc_dtype

    @T.prim_func(s_tir=True)
    def desc(
        tab: T.Buffer((chunk * 2, entries), table_dtype, offset_factor=1),
        w: T.Buffer((chunk, planes, TILE_N), "uint8", offset_factor=1),
        acc: T.Buffer((TILE_N,), acc_dtype, offset_factor=1),
    ):
        with T.sblock("root"):
            T.reads(acc[0:TILE_N], w[0:chunk, 0:planes, 0:TILE_N], tab[0 : chunk * 2, 0:entries])
            T.writes(acc[0:TILE_N])
            for kb, p, h, e, r in T.grid(chunk, planes, 2, entries, TILE_N):
                with T.sblock("update"):
                    vr, vkb, vp, vh, ve = T.axis.remap("SRRRR", [r, kb, p, h, e])
                    acc[vr] = acc[vr] + lookup_term(tab[vkb * 2 + vh, ve], w[vkb, vp, vr], vp, vh, ve, spec)

    return desc


def _single_plane_desc(spec: KernelSpec, chunk: int) -> tirx.PrimFunc:
    entries, table_dtype, acc_dtype = spec.entries, spec.table_dtype, spec.acc_dtype

    @T.prim_func(s_tir=True)
    def desc(
        tab: T.Buffer((chunk * 2, entries), table_dtype, offset_factor=1),
        w: T.Buffer((chunk, 1, TILE_N), "uint8", offset_factor=1),
        acc: T.Buffer((TILE_N,), acc_dtype, offset_factor=1),
    ):
        with T.sblock("root"):
            T.reads(acc[0:TILE_N], w[0:chunk, 0, 0:TILE_N], tab[0 : chunk * 2, 0:entries])
            T.writes(acc[0:TILE_N])
            for kb, h, e, r in T.grid(chunk, 2, entries, TILE_N):
                with T.sblock("update"):
                    vr, vkb, vh, ve = T.axis.remap("SRRR", [r, kb, h, e])
                    acc[vr] = acc[vr] + lookup_term(tab[vkb * 2 + vh, ve], w[vkb, 0, vr], None, vh, ve, spec)

    return desc


def _multi_row_desc(spec: KernelSpec, chunk: int, rows: int) -> tirx.PrimFunc:
    planes, entries, table_dtype, acc_dtype = spec.planes, spec.entries, spec.table_dtype, spec.acc_dtype

    @T.prim_func(s_tir=True)
    def multi_plane(tab_handle: T.handle, w_handle: T.handle, acc_handle: T.handle):
        row_stride, group_stride = T.int32(), T.int32()
        acc_stride, acc_tile, acc_group = T.int32(), T.int32(), T.int32()
        tab = T.match_buffer(tab_handle, (rows, chunk * 2, entries), table_dtype, offset_factor=1,
                             strides=[row_stride, group_stride, 1])  # fmt: skip
        w = T.match_buffer(w_handle, (chunk, planes, TILE_N), "uint8", offset_factor=1)
        acc = T.match_buffer(acc_handle, (rows, 1, 1, TILE_N), acc_dtype, offset_factor=1,
                             strides=[acc_stride, acc_tile, acc_group, 1])  # fmt: skip
        with T.sblock("root"):
            T.reads(acc[0:rows, 0, 0, 0:TILE_N], w[0:chunk, 0:planes, 0:TILE_N], tab[0:rows, 0 : chunk * 2, 0:entries])
            T.writes(acc[0:rows, 0, 0, 0:TILE_N])
            for i, kb, p, h, e, r in T.grid(rows, chunk, planes, 2, entries, TILE_N):
                with T.sblock("update"):
                    vi, vr, vkb, vp, vh, ve = T.axis.remap("SSRRRR", [i, r, kb, p, h, e])
                    acc[vi, 0, 0, vr] = acc[vi, 0, 0, vr] + lookup_term(
                        tab[vi, vkb * 2 + vh, ve], w[vkb, vp, vr], vp, vh, ve, spec
                    )

    @T.prim_func(s_tir=True)
    def single_plane(tab_handle: T.handle, w_handle: T.handle, acc_handle: T.handle):
        row_stride, group_stride = T.int32(), T.int32()
        acc_stride, acc_tile, acc_group = T.int32(), T.int32(), T.int32()
        tab = T.match_buffer(tab_handle, (rows, chunk * 2, entries), table_dtype, offset_factor=1,
                             strides=[row_stride, group_stride, 1])  # fmt: skip
        w = T.match_buffer(w_handle, (chunk, 1, TILE_N), "uint8", offset_factor=1)
        acc = T.match_buffer(acc_handle, (rows, 1, 1, TILE_N), acc_dtype, offset_factor=1,
                             strides=[acc_stride, acc_tile, acc_group, 1])  # fmt: skip
        with T.sblock("root"):
            T.reads(acc[0:rows, 0, 0, 0:TILE_N], w[0:chunk, 0, 0:TILE_N], tab[0:rows, 0 : chunk * 2, 0:entries])
            T.writes(acc[0:rows, 0, 0, 0:TILE_N])
            for i, kb, h, e, r in T.grid(rows, chunk, 2, entries, TILE_N):
                with T.sblock("update"):
                    vi, vr, vkb, vh, ve = T.axis.remap("SSRRR", [i, r, kb, h, e])
                    acc[vi, 0, 0, vr] = acc[vi, 0, 0, vr] + lookup_term(
                        tab[vi, vkb * 2 + vh, ve], w[vkb, 0, vr], None, vh, ve, spec
                    )

    return multi_plane if planes > 1 else single_plane


def register_lookup_intrin(family: str, spec: KernelSpec, chunk: int, impl, **options) -> str:
    """Register (once) the micro-kernel ``impl(spec, chunk, **options)`` of ``family`` for
    tensorize; return its name. Options a family may take: ``rows`` (activation rows per call)
    ``prefetch`` (prefetch the weight stream ahead) and ``rows_inside`` (the micro-kernel for rows
    inside groups); defaults (1, False, False) are left out of the name and the call."""
    defaults = {"rows": 1, "prefetch": False, "rows_inside": False}
    options = {k: v for k, v in options.items() if v != defaults[k]}
    name = f"lutc_{family}_lookup_{spec.mode}_p{spec.planes}_e{spec.entries}_c{chunk}"
    name += "".join(f"_r{v}" if k == "rows" else f"_{k}" for k, v in sorted(options.items()))
    rows = options.get("rows", 1)
    try:
        TensorIntrin.get(name)
    except Exception:
        TensorIntrin.register(name, lookup_desc(spec, chunk, rows), impl(spec, chunk, **options))
    return name
