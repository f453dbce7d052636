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

**Rows inside groups** (fast mode, :func:`lanes_fit`): one register holds the low nibble's table
in its low lane and the high nibble's in its high lane, and each index register holds, for 8
rows, the low nibbles of two planes in its low lane and their high nibbles in its high lane,
plane pairs interleaved. One ``vpshufb`` then looks up 32 entries that ``vpmaddubsw`` sums by
``(2**p, 2**(p+1))`` with no ``vpunpck`` per activation row; the index registers depend on the
weights only, so LLVM computes them once per group for every row. The two lanes' sums are added
once per chunk. A call also prefetches the row's tables of the next chunk. Zen 3, one core: the
hot loop is 151 instructions per row and group against 182 (llvm-mca: 39.5 against 52.6 cycles);
measured, 4096 x 4096 4-bit M = 16 1.04x, the 1 B model's 16-token prompt 1.17x (1 thread) and
1.11-1.18x (2 threads), its 128-token prompt 1.13x.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ...kernels.intrin_desc import register_lookup_intrin
from ...kernels.spec import KernelSpec
from ...quant.layout import TILE_N
from ..cpu.prefetch import next_tables_lines, prefetch_line, prefetch_lines, prefetch_next_tables
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


def _int8_impl(spec: KernelSpec, chunk: int, sums, lines: int, prefetch) -> tirx.PrimFunc:
    """A fast micro-kernel: ``lines`` prefetches ``prefetch(tab, w, line)``, then ``acc +=
    sums(tab, w, spec, chunk)`` (the chunk's int32 sums of 32 rows, in row order)."""
    planes, entries = spec.planes, spec.entries

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
                T.evaluate(prefetch(tab, w, line))
            acc[0:TILE_N] = acc[ramp(0, TILE_N)] + sums(tab, w, spec, chunk)

    return impl


def fast_impl(spec: KernelSpec, chunk: int, prefetch: bool = False) -> tirx.PrimFunc:
    """The one-row fast micro-kernel, prefetching the weight stream when ``prefetch``."""
    lines = prefetch_lines(chunk, spec.planes) if prefetch else 0
    return _int8_impl(spec, chunk, _fast_chunk, lines, lambda _tab, w, line: prefetch_line(w, line, spec.planes))


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


def lanes_fit(spec: KernelSpec, chunk: int, group_bytes: int) -> bool:
    """Whether the rows-inside micro-kernel serves ``spec``: fast mode, planes that pair within
    each int16 chain (2, 4, 6 or 8), and a chunk covering the whole group, so the index
    registers are computed once per group (``group_bytes``) rather than once per row."""
    even = all(len(group) % 2 == 0 for group in plane_groups(spec.planes))
    return spec.mode == "fast" and even and chunk == group_bytes


def _lane_table(tab: tirx.Buffer, kb, half_tables: bool) -> tirx.PrimExpr:
    """The tables of K byte ``kb``: the low nibble's in the low lane, the high nibble's in the
    high lane (a half table becomes ``[T, -T]``)."""
    if not half_tables:
        return tirx.Shuffle([tab[kb * 2, ramp(0, LANE)], tab[kb * 2 + 1, ramp(0, LANE)]], list(range(TILE_N)))
    low, high = tab[kb * 2, ramp(0, HALF_ROWS)], tab[kb * 2 + 1, ramp(0, HALF_ROWS)]
    zero = tirx.Broadcast(tirx.const(0, "int8"), HALF_ROWS)
    return tirx.Shuffle([low, zero - low, high, zero - high], list(range(TILE_N)))


def _lane_indices(w: tirx.Buffer, kb, p: int) -> list[tirx.PrimExpr]:
    """Index registers of planes ``p, p+1`` for rows ``8q .. 8q+7``, ``q`` = 0..3: the low lane
    holds ``(low(p), low(p+1))`` per row, the high lane ``(high(p), high(p+1))``."""
    first, second = w[kb, p, ramp(0, TILE_N)], w[kb, p + 1, ramp(0, TILE_N)]
    indices = []
    for q in range(4):
        rows = range(q * HALF_ROWS, (q + 1) * HALF_ROWS)
        both = tirx.Shuffle([first, second], [x for r in rows for x in (r, TILE_N + r)])
        low, high = tirx.bitwise_and(both, _u8(15, LANE)), tirx.shift_right(both, _u8(4, LANE))
        indices.append(tirx.Shuffle([low, high], list(range(TILE_N))))
    return indices


def _lane_terms(tab: tirx.Buffer, w: tirx.Buffer, kb, p: int, first: int, half_tables: bool) -> list[tirx.PrimExpr]:
    """``2**(p-first) * T(p) + 2**(p+1-first) * T(p+1)`` of the low (low lane) and high (high
    lane) nibbles of rows ``8q .. 8q+7``, as four int16x16."""
    table = _lane_table(tab, kb, half_tables)
    low, high = _u8(2 ** (p - first), LANE), _u8(2 ** (p + 1 - first), LANE)
    weight = tirx.Shuffle([low, high], [x for j in range(LANE) for x in (j, LANE + j)])
    return [
        T.call_llvm_pure_intrin("int16x16", "llvm.x86.avx2.pmadd.ub.sw", weight, _pshufb(table, index))
        for index in _lane_indices(w, kb, p)
    ]


def _lanes_chunk(tab: tirx.Buffer, w: tirx.Buffer, spec: KernelSpec, chunk: int) -> tirx.PrimExpr:
    """The chunk's int32 sums of 32 rows, in row order: per plane group, four int16 chains (8 rows
    each, lanes apart) whose lanes are added once, then widened."""
    total = None
    for group in plane_groups(spec.planes):
        chains = [None] * 4
        for kb in range(chunk):
            for p in group[::2]:
                for q, term in enumerate(_lane_terms(tab, w, kb, p, group.start, spec.half_tables)):
                    chains[q] = term if chains[q] is None else chains[q] + term
        halves = []
        for a, b in ((chains[0], chains[1]), (chains[2], chains[3])):
            low = tirx.Shuffle([a, b], [*range(HALF_ROWS), *range(LANE, LANE + HALF_ROWS)])
            high = tirx.Shuffle([a, b], [*range(HALF_ROWS, LANE), *range(LANE + HALF_ROWS, TILE_N)])
            halves.append(T.Cast("int32x16", low + high))
        widened = tirx.Shuffle(halves, list(range(TILE_N)))
        if group.start:
            widened = tirx.shift_left(widened, tirx.Broadcast(tirx.const(group.start, "int32"), TILE_N))
        total = widened if total is None else total + widened
    return total


def lanes_impl(spec: KernelSpec, chunk: int, rows_inside: bool = True) -> tirx.PrimFunc:
    """The fast micro-kernel for rows inside groups (module docstring); it prefetches the row's
    tables of the next chunk."""
    lines = next_tables_lines(chunk, spec.entries)
    return _int8_impl(
        spec, chunk, _lanes_chunk, lines, lambda tab, _w, line: prefetch_next_tables(tab, line, chunk, spec.entries)
    )


def avx2_intrin(spec: KernelSpec, chunk: int, prefetch: bool = False, rows_inside: bool = False) -> str:
    """Register (once) and name the AVX2 micro-kernel for ``spec`` and ``chunk``, prefetching the
    weight stream when ``prefetch``; ``rows_inside``: the rows-inside kernel (callers check
    :func:`lanes_fit`)."""
    if rows_inside:
        return register_lookup_intrin("avx2", spec, chunk, lanes_impl, rows_inside=True)
    impl = fast_impl if spec.mode == "fast" else exact_impl
    return register_lookup_intrin("avx2", spec, chunk, impl, prefetch=prefetch)
