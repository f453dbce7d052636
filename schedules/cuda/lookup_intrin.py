"""CUDA lookup micro-kernels: one thread, one output row, ``chunk`` K bytes of every plane.

**Fast mode** (int8 tables in shared memory). For one K byte and one half (low or high
nibble), the nibbles of up to four planes index the *same* 16-entry table (5-8 bit codes
take a second group of planes, its ``__dp4a`` sum shifted by 4). The four
table words are looked up together: ``prmt`` (``__byte_perm``) picks bytes by the low three
bits of each selector nibble, so one ``prmt`` on words 0-1 and one on words 2-3 give the
candidates from entries 0-7 and 8-15, and a third ``prmt`` picks between them on bit 3 (the
scheme of llama.cpp's ``get_int_from_table_16``). ``__dp4a`` with the bytes ``2**plane`` then
adds the plane-weighted lookups into the int32 accumulator. Half tables become
``[T, -T]`` with ``__vneg4``.

**Exact mode** (float32 tables in shared memory): one indexed shared load per nibble,
negated for half tables on bit 3, times ``2**plane``.

The description (:func:`lookup_desc`) is the ``lookup`` block for one output row,
built from the same :func:`~lutc.kernels.intrin_desc.lookup_term` as the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx
from tvm.script import tirx as T

from ...kernels.expr import NIBBLE
from ...kernels.intrin_desc import lookup_term
from ...kernels.spec import KernelSpec
from ..hw import plane_groups
from .base import DP4A_LANES

HALF_ENTRIES = 8
SELECT_HIGH = 0x8888
"""Bit 3 of each of the four selector nibbles."""
IDENTITY_SELECTOR = 0x3210


def _i32(value: int) -> tirx.PrimExpr:
    return tirx.const(value, "int32")


def _byte_perm(low: tirx.PrimExpr, high: tirx.PrimExpr, selector: tirx.PrimExpr) -> tirx.PrimExpr:
    """``__byte_perm``: result byte ``i`` is byte ``(selector >> 4i) & 7`` of ``high:low``.

    Typed ``uint32``, as CUDA declares it: :func:`lookup16` casts its result to ``int32``, or
    ``__dp4a(unsigned, int, int)`` would resolve to the ``dp4a.u32.s32`` overload TVM's preamble
    declares and read the int8 entries as 0..255."""
    return T.call_pure_extern("uint32", "__byte_perm", low, high, selector)


def _table_word(tab: tirx.Buffer, row, word: int) -> tirx.PrimExpr:
    """Entries ``4*word .. 4*word + 3`` of the int8 table ``row`` as one int32 (entry 0 lowest)."""
    return T.reinterpret("int32", tab[row, tirx.Ramp(word * 4, 1, 4)])


def _table_words(tab: tirx.Buffer, row, half_tables: bool) -> list[tirx.PrimExpr]:
    """The 16-entry table ``[T0..T15]`` in four words; a half table becomes ``[T, -T]``."""
    words = [_table_word(tab, row, i) for i in range(2 if half_tables else 4)]
    if half_tables:
        words += [T.call_pure_extern("int32", "__vneg4", word) for word in words]
    return words


def lookup16(words: list[tirx.PrimExpr], selector: tirx.PrimExpr) -> tirx.PrimExpr:
    """Four lookups into a 16-entry int8 table held in four words; ``selector`` holds the
    4-bit indices in its low four nibbles, result byte ``i`` is entry ``nibble i`` (an int32,
    so that ``__dp4a`` takes its bytes as signed)."""
    low = _byte_perm(words[0], words[1], selector)
    high = _byte_perm(words[2], words[3], selector)
    pick = tirx.bitwise_or(_i32(IDENTITY_SELECTOR), tirx.shift_right(tirx.bitwise_and(selector, _i32(SELECT_HIGH)), 1))
    return tirx.Cast("int32", _byte_perm(low, high, pick))


def selector(w: tirx.Buffer, kb, planes: range, half: int) -> tirx.PrimExpr:
    """Nibble ``half`` of byte ``kb`` of each plane, plane ``p`` at selector nibble ``p - planes.start``."""
    out = None
    for p in planes:
        byte = tirx.Cast("int32", w[kb, p, 0])
        index = tirx.bitwise_and(tirx.shift_right(byte, half * NIBBLE) if half else byte, _i32(15))
        slot = p - planes.start
        term = tirx.shift_left(index, _i32(NIBBLE * slot)) if slot else index
        out = term if out is None else tirx.bitwise_or(out, term)
    return out


def plane_weights(planes: int) -> int:
    """The ``__dp4a`` operand: byte ``p`` is ``2**p`` for each plane, zero above."""
    return sum((1 << p) << (8 * p) for p in range(planes))


def _fast_sum(tab: tirx.Buffer, w: tirx.Buffer, acc, spec: KernelSpec, chunk: int) -> tirx.PrimExpr:
    """``acc`` plus the chunk's sums: one ``__dp4a`` per (K byte, nibble) and group of four planes;
    a group past the first (5-8 bit codes) is shifted by its first plane."""
    total = acc
    for kb in range(chunk):
        for half in (0, 1):
            words = _table_words(tab, kb * 2 + half, spec.half_tables)
            for group in plane_groups(max(spec.planes, 1), DP4A_LANES):
                looked_up = lookup16(words, selector(w, kb, group, half))
                weights = _i32(plane_weights(len(group)))
                if not group.start:
                    total = T.call_pure_extern("int32", "__dp4a", looked_up, weights, total)
                    continue
                group_sum = T.call_pure_extern("int32", "__dp4a", looked_up, weights, _i32(0))
                total = total + tirx.shift_left(group_sum, _i32(group.start))
    return total


def _exact_term(tab: tirx.Buffer, w: tirx.Buffer, kb: int, p: int, half: int, half_tables: bool) -> tirx.PrimExpr:
    byte = tirx.Cast("int32", w[kb, p, 0])
    index = tirx.bitwise_and(tirx.shift_right(byte, half * NIBBLE) if half else byte, _i32(15))
    row = kb * 2 + half
    if not half_tables:
        value = tab[row, index]
    else:
        magnitude = tab[row, tirx.bitwise_and(index, _i32(HALF_ENTRIES - 1))]
        value = tirx.Select(tirx.bitwise_and(index, _i32(HALF_ENTRIES)) == 0, magnitude, -magnitude)
    return value * tirx.const(float(1 << p), "float32") if p else value


def _exact_sum(tab: tirx.Buffer, w: tirx.Buffer, acc, spec: KernelSpec, chunk: int) -> tirx.PrimExpr:
    total = acc
    for kb in range(chunk):
        for p in range(max(spec.planes, 1)):
            for half in (0, 1):
                total = total + _exact_term(tab, w, kb, p, half, spec.half_tables)
    return total


@dataclass(frozen=True)
class _Operands:
    """The micro-kernel's three buffers for ``spec``, ``chunk`` K bytes, ``rows`` activation rows and
    the weight layout ``vector`` (1: tile layout, read from global memory; more: vector layout,
    read from the registers the schedule loaded it into). Shapes keep the dims the kernel's
    buffer regions have non-unit extents in, in order: tensorize matches trailing dims."""

    spec: KernelSpec
    chunk: int
    rows: int = 1
    vector: int = 1

    @property
    def planes(self) -> int:
        return max(self.spec.planes, 1)

    @property
    def tab_shape(self) -> tuple[int, ...]:
        one = (self.chunk * 2, self.spec.entries)
        return (self.rows, *one) if self.rows > 1 else one

    @property
    def w_shape(self) -> tuple[int, ...]:
        return (self.planes, self.chunk) if self.vector > 1 else (self.chunk, self.planes, 1)

    @property
    def w_scope(self) -> str:
        return "local" if self.vector > 1 else "global"

    @property
    def acc_shape(self) -> tuple[int, ...]:
        return (self.rows, 1, 1, 1) if self.rows > 1 else (1,)

    def table(self, tab: tirx.Buffer, row):
        """Activation row ``row``'s tables, indexed ``[2 * kb + half, entry]``."""
        return _RowTables(tab, row) if self.rows > 1 else tab

    def weights(self, w: tirx.Buffer):
        """The weight bytes, indexed ``[kb, plane, 0]`` whatever the layout."""
        return _PlaneMajor(w) if self.vector > 1 else w


class _RowTables:
    """Row ``row`` of ``[rows, 2 * chunk, entries]`` shared tables, indexed like one row's tables."""

    def __init__(self, tab: tirx.Buffer, row) -> None:
        self.tab, self.row = tab, row

    def __getitem__(self, index):
        return self.tab[(self.row, *index)]


class _PlaneMajor:
    """Vector-layout weight bytes ``[plane, kb]`` indexed like the tile layout's ``[kb, plane, 0]``."""

    def __init__(self, w: tirx.Buffer) -> None:
        self.w = w

    def __getitem__(self, index):
        kb, plane, _ = index
        return self.w[plane, kb]


def _region(buf: tirx.Buffer) -> tirx.BufferRegion:
    return tirx.BufferRegion(buf, [tvm.ir.Range.from_min_extent(0, d) for d in buf.shape])


def _strides(shape: tuple[int, ...], names: str) -> list:
    """Symbolic strides for all but the last (unit-stride) dim."""
    return [tirx.Var(f"{names}{i}", "int32") for i in range(len(shape) - 1)] + [1]


def lookup_desc(ops: _Operands) -> tirx.PrimFunc:
    """The ``lookup`` block for one output row, ``ops.rows`` activation rows and ``ops.chunk`` K bytes:
    ``acc[i] += sum_{kb, plane, half, e} 2**plane * tab[i, 2*kb + half, e] * [p == e]``."""
    return _lookup_func(ops, describe=True)


def lookup_impl(ops: _Operands) -> tirx.PrimFunc:
    """The micro-kernel (module docstring). With several rows and the tile layout, the chunk's weight
    bytes are first copied to registers (``held``), once for every row's tables."""
    return _lookup_func(ops, describe=False)


def _lookup_func(ops: _Operands, describe: bool) -> tirx.PrimFunc:
    """:func:`lookup_desc` or :func:`lookup_impl`: the same operands, the loops or the micro-kernel."""
    spec, rows, chunk, planes, multi = ops.spec, ops.rows, ops.chunk, ops.planes, ops.spec.planes > 1
    entries, term = spec.entries, lookup_term
    body = _fast_sum if spec.mode == "fast" else _exact_sum
    copies = rows > 1 and ops.vector == 1

    @T.prim_func(s_tir=True)
    def func(tab_handle: T.handle, w_handle: T.handle, acc_handle: T.handle):
        tab = T.match_buffer(tab_handle, ops.tab_shape, spec.table_dtype, offset_factor=1,
                             strides=_strides(ops.tab_shape, "ts"), scope="shared")  # fmt: skip
        w = T.match_buffer(w_handle, ops.w_shape, "uint8", offset_factor=1, strides=_strides(ops.w_shape, "ws"),
                           scope=ops.w_scope)  # fmt: skip
        acc = T.match_buffer(acc_handle, ops.acc_shape, spec.acc_dtype, offset_factor=1,
                             strides=_strides(ops.acc_shape, "as"), scope="local")  # fmt: skip
        with T.sblock("root"):
            T.reads(_region(acc), _region(w), _region(tab))
            T.writes(_region(acc))
            if describe and rows > 1 and multi:
                for i, kb, p, h, e in T.grid(rows, chunk, planes, 2, entries):
                    with T.sblock("update"):
                        vi, vkb, vp, vh, ve = T.axis.remap("SRRRR", [i, kb, p, h, e])
                        acc[vi, 0, 0, 0] = acc[vi, 0, 0, 0] + term(
                            ops.table(tab, vi)[vkb * 2 + vh, ve], ops.weights(w)[vkb, vp, 0], vp, vh, ve, spec
                        )
            elif describe and rows > 1:
                for i, kb, h, e in T.grid(rows, chunk, 2, entries):
                    with T.sblock("update"):
                        vi, vkb, vh, ve = T.axis.remap("SRRR", [i, kb, h, e])
                        acc[vi, 0, 0, 0] = acc[vi, 0, 0, 0] + term(
                            ops.table(tab, vi)[vkb * 2 + vh, ve], ops.weights(w)[vkb, 0, 0], None, vh, ve, spec
                        )
            elif describe and multi:
                for kb, p, h, e in T.grid(chunk, planes, 2, entries):
                    with T.sblock("update"):
                        vkb, vp, vh, ve = T.axis.remap("RRRR", [kb, p, h, e])
                        acc[0] = acc[0] + term(tab[vkb * 2 + vh, ve], ops.weights(w)[vkb, vp, 0], vp, vh, ve, spec)
            elif describe:
                for kb, h, e in T.grid(chunk, 2, entries):
                    with T.sblock("update"):
                        vkb, vh, ve = T.axis.remap("RRR", [kb, h, e])
                        acc[0] = acc[0] + term(tab[vkb * 2 + vh, ve], ops.weights(w)[vkb, 0, 0], None, vh, ve, spec)
            elif copies:
                held = T.alloc_buffer((chunk, planes, 1), "uint8", scope="local")
                for kb, p in T.grid(chunk, planes):
                    held[kb, p, 0] = w[kb, p, 0]
                for i in T.unroll(rows):
                    acc[i, 0, 0, 0] = body(ops.table(tab, i), held, acc[i, 0, 0, 0], spec, chunk)
            elif rows > 1:
                for i in T.unroll(rows):
                    acc[i, 0, 0, 0] = body(ops.table(tab, i), ops.weights(w), acc[i, 0, 0, 0], spec, chunk)
            else:
                acc[0] = body(tab, ops.weights(w), acc[0], spec, chunk)

    return func


def cuda_lookup_intrin(spec: KernelSpec, chunk: int, rows: int = 1) -> str:
    """Register (once) and name the CUDA micro-kernel for ``spec`` (its weight layout included),
    ``chunk`` and ``rows`` activation rows."""
    name = f"lutc_cuda_lookup_{spec.mode}_p{spec.planes}_e{spec.entries}_c{chunk}"
    name += (f"_r{rows}" if rows > 1 else "") + (f"_v{spec.vector}" if spec.vector > 1 else "")
    try:
        s_tir.TensorIntrin.get(name)
    except Exception:
        ops = _Operands(spec, chunk, rows, spec.vector)
        s_tir.TensorIntrin.register(name, lookup_desc(ops), lookup_impl(ops))
    return name
