"""AVX2 lookup micro-kernels: ``vpshufb`` on int8 tables, ``vpermps`` on float tables.

**Fast mode** (int8 tables). Per K byte and plane, one 32-byte load holds the indices of 32
rows for two tables (low and high nibble). Each table is broadcast to both 128-bit lanes and
looked up with one ``vpshufb`` (32 lookups). ``vpunpck{l,h}bw`` pairs the two lookups of each
row and ``vpmaddubsw`` adds them, times ``2**plane``, into int16: 32 rows sit in two int16
registers, rows ``{0-7, 16-23}`` and ``{8-15, 24-31}``. After a chunk of at most
:func:`~lutc.schedules.hw.max_int16_chunk` bytes, the int16 sums are widened into the
int32 accumulator in row order. Codes of 5-8 bits keep one int16 chain per group of four
planes (:func:`~lutc.schedules.hw.plane_groups`), weighted within the group and shifted by
its first plane once widened.

**Exact mode** (float32 tables). Indices are widened to int32 eight rows at a time and looked
up with ``vpermps`` (8 entries per register): full tables blend the lookups of both halves on
index bit 3, symmetrized tables flip the sign bit instead.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ...kernels.intrin_desc import register_lookup_intrin
from ...kernels.spec import KernelSpec
from ...quant.layout import TILE_N
from ..cpu.prefetch import prefetch_line, prefetch_lines
from ..cpu.vector_expr import chunk_sum, ramp
from ..hw import plane_groups

LANE = 16
HALF_ROWS = 8


def _u8(value: int, lanes: int = TILE_N) -> tirx.PrimExpr:
    return tirx.Broadcast(tirx.const(value, "uint8"), lanes)


def _table32(tab: tirx.Buffer, row: tirx.PrimExpr, half_tables: bool) -> tirx.PrimExpr:
    """The 16-entry int8 table of ``row`` in both lanes; a half table becomes ``[T, -T]``."""
    if not half_tables:
        table = tab[row, ramp(0, LANE)]
        return tirx.Shuffle([table, table], list(range(TILE_N)))
    half = tab[row, ramp(0, HALF_ROWS)]
    negated = tirx.Broadcast(tirx.const(0, "int8"), HALF_ROWS) - half
    return tirx.Shuffle([half, negated, half, negated], list(range(TILE_N)))


def _pshufb(table: tirx.PrimExpr, index: tirx.PrimExpr) -> tirx.PrimExpr:
    return T.call_llvm_pure_intrin("int8x32", "llvm.x86.avx2.pshuf.b", table, T.reinterpret("int8x32", index))


def _lookups(tab: tirx.Buffer, w: tirx.Buffer, kb, p, half_tables: bool) -> tuple[tirx.PrimExpr, tirx.PrimExpr]:
    """Lookups of the low and high nibbles of ``w[kb, p, 0:32]``."""
    byte = w[kb, p, ramp(0, TILE_N)]
    low = _pshufb(_table32(tab, kb * 2, half_tables), tirx.bitwise_and(byte, _u8(15)))
    high = _pshufb(_table32(tab, kb * 2 + 1, half_tables), tirx.shift_right(byte, _u8(4)))
    return low, high


def _paired_sum(low: tirx.PrimExpr, high: tirx.PrimExpr, plane: int, upper: int) -> tirx.PrimExpr:
    """``2**plane * (low + high)`` for rows ``{8u..8u+7, 16+8u..16+8u+7}`` as int16x16 (``plane``
    counted from its chain's first)."""
    order = [lane * LANE + upper * HALF_ROWS + j for lane in (0, 1) for j in range(HALF_ROWS)]
    pairs = tirx.Shuffle([low, high], [x for i in order for x in (i, TILE_N + i)])
    weight = tirx.Broadcast(tirx.Cast("uint8", tirx.shift_left(1, plane)), TILE_N)
    return T.call_llvm_pure_intrin("int16x16", "llvm.x86.avx2.pmadd.ub.sw", weight, pairs)


def _int16_terms(tab: tirx.Buffer, w: tirx.Buffer, kb: int, p: int, first: int, half_tables: bool) -> tirx.PrimExpr:
    """Both paired sums of one byte and plane (weighted ``2**(p - first)``) as int16x32:
    element ``16u + 8*lane + j`` is row ``16*lane + 8u + j``."""
    low, high = _lookups(tab, w, kb, p, half_tables)
    weight = p - first
    return tirx.Shuffle([_paired_sum(low, high, weight, 0), _paired_sum(low, high, weight, 1)], list(range(TILE_N)))


ROW_ORDER = [16 * u + 8 * lane + j for lane in (0, 1) for u in (0, 1) for j in range(HALF_ROWS)]
"""``ROW_ORDER[row]`` is the element of :func:`_int16_terms` that holds ``row``."""


def _fast_chunk(tab: tirx.Buffer, w: tirx.Buffer, spec: KernelSpec, chunk: int) -> tirx.PrimExpr:
    """The chunk's int32 sums of 32 rows, in row order: one int16 chain per plane group, widened once."""
    total = None
    for group in plane_groups(spec.planes):
        chain = chunk_sum(chunk, group, lambda kb, p, g=group: _int16_terms(tab, w, kb, p, g.start, spec.half_tables))
        widened = tirx.Shuffle([T.Cast("int32x32", chain)], ROW_ORDER)
        if group.start:
            widened = tirx.shift_left(widened, tirx.Broadcast(tirx.const(group.start, "int32"), TILE_N))
        total = widened if total is None else total + widened
    return total


def fast_impl(spec: KernelSpec, chunk: int, prefetch: bool = False) -> tirx.PrimFunc:
    planes, entries = spec.planes, spec.entries
    lines = prefetch_lines(chunk, planes) if prefetch else 0

    @T.prim_func(s_tir=True)
    def impl(
        tab: T.Buffer((chunk * 2, entries), "int8", offset_factor=1),
        w: T.Buffer((chunk, planes, TILE_N), "uint8", offset_factor=1),
        acc: T.Buffer((TILE_N,), "int32", offset_factor=1),
    ):
        with T.sblock("root"):
            T.reads(acc[0:TILE_N], w[0:chunk, 0:planes, 0:TILE_N], tab[0 : chunk * 2, 0:entries])
            T.writes(acc[0:TILE_N])
            for line in T.unroll(lines):
                T.evaluate(prefetch_line(w, line, planes))
            acc[0:TILE_N] = acc[ramp(0, TILE_N)] + _fast_chunk(tab, w, spec, chunk)

    return impl


def _float_lookup(tab: tirx.Buffer, row, index: tirx.PrimExpr, half_tables: bool) -> tirx.PrimExpr:
    """``vpermps`` lookup of eight int32 indices into the float table of ``row``."""
    sign_bit = tirx.shift_left(index, tirx.Broadcast(tirx.const(28, "int32"), HALF_ROWS))
    low = T.call_llvm_pure_intrin("float32x8", "llvm.x86.avx2.permps", tab[row, ramp(0, HALF_ROWS)], index)
    if half_tables:
        mask = tirx.bitwise_and(sign_bit, tirx.Broadcast(tirx.const(-(2**31), "int32"), HALF_ROWS))
        return T.reinterpret("float32x8", tirx.bitwise_xor(T.reinterpret("int32x8", low), mask))
    high = T.call_llvm_pure_intrin("float32x8", "llvm.x86.avx2.permps", tab[row, ramp(HALF_ROWS, HALF_ROWS)], index)
    return T.call_llvm_pure_intrin(
        "float32x8", "llvm.x86.avx.blendv.ps.256", low, high, T.reinterpret("float32x8", sign_bit)
    )


def _exact_rows(tab: tirx.Buffer, w: tirx.Buffer, kb, p, q, half_tables: bool) -> tirx.PrimExpr:
    """``2**p * (T_low[lo] + T_high[hi])`` for rows ``8q .. 8q+7``."""
    index = T.Cast("int32x8", w[kb, p, ramp(0, HALF_ROWS) + q * HALF_ROWS])
    high_index = tirx.shift_right(index, tirx.Broadcast(tirx.const(4, "int32"), HALF_ROWS))
    both = _float_lookup(tab, kb * 2, index, half_tables) + _float_lookup(tab, kb * 2 + 1, high_index, half_tables)
    return both * tirx.Broadcast(tirx.Cast("float32", tirx.shift_left(1, p)), HALF_ROWS)


def _exact_chunk(tab: tirx.Buffer, w: tirx.Buffer, spec: KernelSpec, chunk: int, q: int) -> tirx.PrimExpr:
    return chunk_sum(chunk, spec.planes, lambda kb, p: _exact_rows(tab, w, kb, p, q, spec.half_tables))


def exact_impl(spec: KernelSpec, chunk: int, prefetch: bool = False) -> tirx.PrimFunc:
    planes, entries = spec.planes, spec.entries
    lines = prefetch_lines(chunk, planes) if prefetch else 0

    @T.prim_func(s_tir=True)
    def impl(
        tab: T.Buffer((chunk * 2, entries), "float32", offset_factor=1),
        w: T.Buffer((chunk, planes, TILE_N), "uint8", offset_factor=1),
        acc: T.Buffer((TILE_N,), "float32", offset_factor=1),
    ):
        with T.sblock("root"):
            T.reads(acc[0:TILE_N], w[0:chunk, 0:planes, 0:TILE_N], tab[0 : chunk * 2, 0:entries])
            T.writes(acc[0:TILE_N])
            for line in T.unroll(lines):
                T.evaluate(prefetch_line(w, line, planes))
            acc[0:8] = acc[ramp(0, 8)] + _exact_chunk(tab, w, spec, chunk, 0)
            acc[8:16] = acc[ramp(8, 8)] + _exact_chunk(tab, w, spec, chunk, 1)
            acc[16:24] = acc[ramp(16, 8)] + _exact_chunk(tab, w, spec, chunk, 2)
            acc[24:32] = acc[ramp(24, 8)] + _exact_chunk(tab, w, spec, chunk, 3)

    return impl


def avx2_intrin(spec: KernelSpec, chunk: int, prefetch: bool = False) -> str:
    """Register (once) and name the AVX2 micro-kernel for ``spec`` and ``chunk``, prefetching the
    weight stream when ``prefetch``."""
    impl = fast_impl if spec.mode == "fast" else exact_impl
    return register_lookup_intrin("avx2", spec, chunk, impl, prefetch=prefetch)
