"""AVX-512 lookup micro-kernels: VBMI ``vpermb``/``vpermi2b`` + VNNI ``vpdpbusd`` on int8 tables,
``vpermps`` on float tables. Same packed layout as AVX2 (:mod:`lutc.quant.layout`).

**Fast mode** (int8 tables). The ``chunk * planes`` (K byte, plane) items of a chunk are taken
four at a time in memory order (a *quad*: 128 contiguous bytes, four 32-row segments). One
two-register byte shuffle per 16 rows (LLVM emits ``vpermt2b``) transposes a quad so that the
int32 lane of row ``r`` holds its four bytes. With an even plane count every quad stays within
an aligned pair of K bytes, whose four 16-entry tables fill one register (``vpermb``, index bits
0-5); odd plane counts take an aligned block of four K bytes, eight tables in a register pair
(``vpermi2b``, bits 0-6). A symmetrized table is expanded to ``[T, -T]`` once per register. The
lookup index is the nibble with the table's number in bits 4-6: ``(byte & 15) | sel`` (low
nibbles) and ``(byte >> 4) | sel`` (high), one ``vpternlogd`` (plus a shift) each. One lookup
gives 64 entries, and one ``vpdpbusd`` multiplies each by its plane weight ``2**p``, adds the
four of a row and accumulates into int32: no int16 stage, no flushes.

Per quad and 32 rows (256 lookups): 2 loads, 2 transposes, 4 index ops, 2 shifts, 4 lookups,
4 ``vpdpbusd``: 16 vector µops, 2 per 32 lookups (AVX2: about 5.5). Low and high nibbles
accumulate in separate chains to hide ``vpdpbusd``'s latency.

A chunk must hold whole quads inside their register's K bytes (:func:`fits`): any chunk for an
even plane count, a multiple of 4 bytes for an odd one.

**Exact mode** (float32 tables). A 16-entry float table fills one zmm register (a symmetrized
one is expanded to ``[T, -T]`` by flipping sign bits). Sixteen rows' bytes are widened to int32
and looked up with ``vpermps``, which reads only index bits 0-3: the low nibble needs no mask,
the high nibble one shift. Within a chunk the sums are formed in the AVX2 kernel's order.
"""

from __future__ import annotations

from collections.abc import Callable

from tvm import tirx
from tvm.script import tirx as T

from ...kernels.intrin_desc import register_lookup_intrin
from ...kernels.spec import KernelSpec
from ...quant.layout import TILE_N
from ..cpu.prefetch import prefetch_line, prefetch_lines
from ..cpu.vector_expr import chunk_sum, ramp

ZMM_BYTES = 64
ROWS = 16
"""Rows per zmm of int32 sums (and of float sums)."""
QUAD = 4
"""Bytes ``vpdpbusd`` adds into one int32 lane."""
BLOCK_BYTES = 4
"""K bytes whose eight 16-entry tables fill a register pair (128 bytes)."""
ENTRIES = 16


def fits(spec: KernelSpec, chunk: int) -> bool:
    """Whether the fast micro-kernel takes ``chunk`` K bytes of ``spec`` (whole quads in blocks)."""
    return spec.mode == "exact" or chunk % _span(spec) == 0


def _bytes_constant(values: list[int], dtype: str = "uint8") -> tirx.PrimExpr:
    """A 64-byte vector repeating the four bytes ``values`` in every int32 lane."""
    word = sum(v << (8 * i) for i, v in enumerate(values))
    return T.reinterpret(f"{dtype}x{ZMM_BYTES}", tirx.Broadcast(tirx.const(word, "uint32"), ZMM_BYTES // QUAD))


def _concat(parts: list[tirx.PrimExpr], lanes: int) -> tirx.PrimExpr:
    return tirx.Shuffle(parts, list(range(lanes * len(parts))))


TableLoad = Callable[[int, int], "tirx.PrimExpr"]
"""``load(group, lanes)``: the first ``lanes`` entries of one table of the chunk (one row's)."""


def _row_tables(tab: tirx.Buffer, row: int | None) -> TableLoad:
    """Table loads of a one-row buffer ``tab[group, e]`` (``row`` None) or of ``tab[row, group, e]``."""
    if row is None:
        return lambda group, lanes: tab[group, ramp(0, lanes)]
    return lambda group, lanes: tab[row, group, ramp(0, lanes)]


def _full_tables(load: TableLoad, first: int, count: int, half_tables: bool) -> tirx.PrimExpr:
    """The ``count`` 16-entry int8 tables from group ``first`` as one vector of ``16 * count``
    bytes; a symmetrized (8-entry) table ``T`` becomes ``[T, -T]``."""
    if not half_tables:
        return _concat([load(first + t, ENTRIES) for t in range(count)], ENTRIES)
    half = ENTRIES // 2
    halves = _concat([load(first + t, half) for t in range(count)], half)
    negated = tirx.Broadcast(tirx.const(0, "int8"), half * count) - halves
    order = [(half * count if e >= half else 0) + t * half + e % half for t in range(count) for e in range(ENTRIES)]
    return tirx.Shuffle([halves, negated], order)


def _span(spec: KernelSpec) -> int:
    """K bytes one table register set covers: 2 (four tables, one register) when every quad
    stays within an aligned pair of K bytes (an even plane count), else 4 (a register pair)."""
    return 2 if spec.planes % 2 == 0 else BLOCK_BYTES


def _tables(load: TableLoad, block: int, spec: KernelSpec) -> tuple[tirx.PrimExpr, ...]:
    """The table registers of the ``block``-th span of K bytes: four 16-entry tables each."""
    first = block * _span(spec) * 2
    return tuple(_full_tables(load, first + 4 * i, 4, spec.half_tables) for i in range(_span(spec) // 2))


def _quad_items(quad: int, planes: int) -> list[tuple[int, int]]:
    """The (K byte, plane) items of quad ``quad``, in memory order."""
    return [divmod(QUAD * quad + i, planes) for i in range(QUAD)]


def _transposed(w: tirx.Buffer, items: list[tuple[int, int]], half: int) -> tirx.PrimExpr:
    """Rows ``16*half .. 16*half + 15`` of a quad, the four bytes of row ``r`` in int32 lane ``r``."""
    segments = [w[kb, p, ramp(0, TILE_N)] for kb, p in items]
    first, second = _concat(segments[:2], TILE_N), _concat(segments[2:], TILE_N)
    order = [TILE_N * i + ROWS * half + r for r in range(ROWS) for i in range(QUAD)]
    return tirx.Shuffle([first, second], order)


def _lookup(tables: tuple[tirx.PrimExpr, ...], index: tirx.PrimExpr) -> tirx.PrimExpr:
    """64 lookups: ``vpermb`` from one register (index bits 0-5), ``vpermi2b`` from two (0-6)."""
    index = T.reinterpret("int8x64", index)
    if len(tables) == 1:
        return T.call_llvm_pure_intrin("int8x64", "llvm.x86.avx512.permvar.qi.512", tables[0], index)
    return T.call_llvm_pure_intrin("int8x64", "llvm.x86.avx512.vpermi2var.qi.512", tables[0], index, tables[1])


def _dot(acc: tirx.PrimExpr, weights: tirx.PrimExpr, lookups: tirx.PrimExpr) -> tirx.PrimExpr:
    """``acc[lane] += sum_i weights[4 lane + i] * lookups[4 lane + i]`` (u8 x s8 -> int32)."""
    return T.call_llvm_pure_intrin("int32x16", "llvm.x86.avx512.vpdpbusd.512", acc, weights, lookups)


def _quad_lookups(spec: KernelSpec, w: tirx.Buffer, quad: int, half: int):
    """What every row shares for one quad and 16 rows: ``(block, weights, low index, high index)``."""
    items = _quad_items(quad, spec.planes)
    span = _span(spec)
    groups = [2 * (kb % span) for kb, _ in items]
    data = _transposed(w, items, half)
    nibble = tirx.bitwise_and(data, _bytes_constant([15] * QUAD))
    low = tirx.bitwise_or(nibble, _bytes_constant([g << 4 for g in groups]))
    high = tirx.bitwise_or(
        tirx.shift_right(data, tirx.Broadcast(tirx.const(4, "uint8"), ZMM_BYTES)),
        _bytes_constant([(g + 1) << 4 for g in groups]),
    )
    return items[0][0] // span, _bytes_constant([1 << p for _, p in items], "int8"), low, high


def _fast_half(load: TableLoad, w: tirx.Buffer, spec: KernelSpec, chunk: int, half: int, acc: tirx.PrimExpr):
    """``acc`` plus the chunk's sums of rows ``16*half ..``: low and high nibbles in two chains."""
    low_chain, high_chain = acc, tirx.Broadcast(tirx.const(0, "int32"), ROWS)
    registers: dict[int, tuple[tirx.PrimExpr, ...]] = {}
    for quad in range(chunk * spec.planes // QUAD):
        block, weights, low, high = _quad_lookups(spec, w, quad, half)
        if block not in registers:
            registers[block] = _tables(load, block, spec)
        low_chain = _dot(low_chain, weights, _lookup(registers[block], low))
        high_chain = _dot(high_chain, weights, _lookup(registers[block], high))
    return low_chain + high_chain


def _check_fits(spec: KernelSpec, chunk: int) -> None:
    if not fits(spec, chunk):
        raise ValueError(f"the AVX-512 fast micro-kernel takes no {chunk}-byte chunk of {spec.planes} planes")


def fast_impl(spec: KernelSpec, chunk: int, prefetch: bool = False) -> tirx.PrimFunc:
    planes, entries = spec.planes, spec.entries
    _check_fits(spec, chunk)
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
            acc[0:16] = _fast_half(_row_tables(tab, None), w, spec, chunk, 0, acc[ramp(0, ROWS)])
            acc[16:32] = _fast_half(_row_tables(tab, None), w, spec, chunk, 1, acc[ramp(ROWS, ROWS)])

    return impl


def fast_rows_impl(spec: KernelSpec, chunk: int, rows: int, prefetch: bool = False) -> tirx.PrimFunc:
    """The fast micro-kernel for ``rows`` activation rows: the loop over rows is unrolled, and
    LLVM shares each quad's loads, transposes and indices between the rows (only the lookups
    and ``vpdpbusd`` are per row)."""
    planes, entries = spec.planes, spec.entries
    _check_fits(spec, chunk)
    lines = prefetch_lines(chunk, planes) if prefetch else 0

    @T.prim_func(s_tir=True)
    def impl(tab_handle: T.handle, w_handle: T.handle, acc_handle: T.handle):
        row_stride, group_stride = T.int32(), T.int32()
        acc_stride, acc_tile, acc_group = T.int32(), T.int32(), T.int32()
        tab = T.match_buffer(tab_handle, (rows, chunk * 2, entries), "int8", offset_factor=1,
                             strides=[row_stride, group_stride, 1])  # fmt: skip
        w = T.match_buffer(w_handle, (chunk, planes, TILE_N), "uint8", offset_factor=1)
        acc = T.match_buffer(acc_handle, (rows, 1, 1, TILE_N), "int32", offset_factor=1,
                             strides=[acc_stride, acc_tile, acc_group, 1])  # fmt: skip
        with T.sblock("root"):
            T.reads(acc[0:rows, 0, 0, 0:TILE_N], w[0:chunk, 0:planes, 0:TILE_N], tab[0:rows, 0 : chunk * 2, 0:entries])
            T.writes(acc[0:rows, 0, 0, 0:TILE_N])
            for line in T.unroll(lines):
                T.evaluate(prefetch_line(w, line, planes))
            for i in T.unroll(rows):
                acc[i, 0, 0, 0:16] = _fast_half(_row_tables(tab, i), w, spec, chunk, 0, acc[i, 0, 0, ramp(0, ROWS)])
                acc[i, 0, 0, 16:32] = _fast_half(_row_tables(tab, i), w, spec, chunk, 1, acc[i, 0, 0, ramp(ROWS, ROWS)])

    return impl


SIGN_BIT = -(2**31)


def _float_table(tab: tirx.Buffer, row, half_tables: bool) -> tirx.PrimExpr:
    """The 16-entry float table of ``row``; a symmetrized one as ``[T, -T]`` (sign bits flipped)."""
    if not half_tables:
        return tab[row, ramp(0, ENTRIES)]
    half = tab[row, ramp(0, ENTRIES // 2)]
    flipped = tirx.bitwise_xor(T.reinterpret("int32x8", half), tirx.Broadcast(tirx.const(SIGN_BIT, "int32"), 8))
    return tirx.Shuffle([half, T.reinterpret("float32x8", flipped)], list(range(ENTRIES)))


def _permps(table: tirx.PrimExpr, index: tirx.PrimExpr) -> tirx.PrimExpr:
    return T.call_llvm_pure_intrin("float32x16", "llvm.x86.avx512.permvar.sf.512", table, index)


def _exact_rows(tab: tirx.Buffer, w: tirx.Buffer, kb, p, half: int, half_tables: bool) -> tirx.PrimExpr:
    """``2**p * (T_low[lo] + T_high[hi])`` for rows ``16*half .. 16*half + 15``."""
    index = T.Cast("int32x16", w[kb, p, ramp(half * ROWS, ROWS)])
    high_index = tirx.shift_right(index, tirx.Broadcast(tirx.const(4, "int32"), ROWS))
    low = _permps(_float_table(tab, kb * 2, half_tables), index)
    both = low + _permps(_float_table(tab, kb * 2 + 1, half_tables), high_index)
    return both * tirx.Broadcast(tirx.Cast("float32", tirx.shift_left(1, p)), ROWS)


def _exact_chunk(tab: tirx.Buffer, w: tirx.Buffer, spec: KernelSpec, chunk: int, half: int) -> tirx.PrimExpr:
    return chunk_sum(chunk, spec.planes, lambda kb, p: _exact_rows(tab, w, kb, p, half, spec.half_tables))


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
            acc[0:16] = acc[ramp(0, ROWS)] + _exact_chunk(tab, w, spec, chunk, 0)
            acc[16:32] = acc[ramp(ROWS, ROWS)] + _exact_chunk(tab, w, spec, chunk, 1)

    return impl


def avx512_intrin(spec: KernelSpec, chunk: int, rows: int = 1, prefetch: bool = False) -> str:
    """Register (once) and name the AVX-512 micro-kernel for ``spec``, ``chunk`` and ``rows``
    (several rows: fast mode only), prefetching the weight stream when ``prefetch``."""
    if rows > 1:
        return register_lookup_intrin("avx512", spec, chunk, fast_rows_impl, rows=rows, prefetch=prefetch)
    impl = fast_impl if spec.mode == "fast" else exact_impl
    return register_lookup_intrin("avx512", spec, chunk, impl, prefetch=prefetch)
