"""AArch64 NEON lookup micro-kernels: ``tbl`` on 16-entry tables, on the shared packed layout.

A 32-row tile of the packed layout (:mod:`lutc.quant.layout`) is two NEON registers.

**Fast mode** (int8 tables). For each K byte and plane, the 16 bytes of a 16-row segment give
their low and high nibbles (``and``, ``ushr``); one ``tbl`` each looks them up in that byte's
two 16-entry tables (a symmetrized 8-entry table ``T`` is expanded to ``[T, -T]`` once per call).
``saddl``/``saddl2`` add the two lookups of a byte into int16, one int16 sum per plane over the
chunk; the planes are weighted by ``2**p`` (``shl``) once per chunk and widened into the int32
accumulator (``saddw``). The chunk is bounded by the int16 budget, as on AVX2
(:func:`lutc.schedules.hw.max_int16_chunk`).
llvm-mca counts about 10 vector instructions per 32 lookups in the hot loop (``python -m lutc.bench
mca``). ``sdot`` is not used: its int32 lanes hold four rows, so the lookups would first need a
byte transpose and ``tbl4`` lookups; not built or measured.

**Exact mode** (float32 tables). A 16-entry float table is 64 bytes: four registers, which one
``tbl4`` reads bytewise (a symmetrized table is expanded to ``[T, -T]`` by flipping sign bits).
The nibbles of 16 rows are scaled to byte offsets (``4 * n``) once, each row's offset is
replicated over its float's four bytes (a byte shuffle per 4 rows) and ``orr``-ed with
``0, 1, 2, 3``; one ``tbl4`` then returns four rows' floats. Within a chunk the sums are formed
in the x86 kernels' order: ``2**p * (T_low[lo] + T_high[hi])`` added K byte by K byte.
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ...kernels.intrin_desc import register_lookup_intrin
from ...kernels.spec import KernelSpec
from ...quant.layout import TILE_N
from ..cpu.vector_expr import chunk_sum, ramp
from ..hw import plane_groups

Q_BYTES = 16
"""One NEON q register: 16 int8 lookups per ``tbl``."""
SEGMENTS = TILE_N // Q_BYTES
"""16-row segments of a 32-row tile."""
ENTRIES = 16
FLOAT_LANES = 4
"""Rows of float sums per q register (and per ``tbl4`` lookup)."""
SIGN_BIT = -(2**31)


def _u8(value: int, lanes: int = Q_BYTES) -> tirx.PrimExpr:
    return tirx.Broadcast(tirx.const(value, "uint8"), lanes)


def _int8_table(tab: tirx.Buffer, row, half_tables: bool) -> tirx.PrimExpr:
    """The 16-entry int8 table of ``row``; a symmetrized (8-entry) one as ``[T, -T]``."""
    if not half_tables:
        return tab[row, ramp(0, ENTRIES)]
    half = tab[row, ramp(0, ENTRIES // 2)]
    negated = tirx.Broadcast(tirx.const(0, "int8"), ENTRIES // 2) - half
    return tirx.Shuffle([half, negated], list(range(ENTRIES)))


def _tbl(tables: list[tirx.PrimExpr], index: tirx.PrimExpr) -> tirx.PrimExpr:
    """``tbl`` with one (``tbl1``) or four (``tbl4``) 16-byte table registers."""
    name = {1: "llvm.aarch64.neon.tbl1", 4: "llvm.aarch64.neon.tbl4"}[len(tables)]
    return T.call_llvm_pure_intrin("int8x16", name, *tables, T.reinterpret("int8x16", index))


def _pair_sums(tab: tirx.Buffer, w: tirx.Buffer, kb: int, p: int, half_tables: bool) -> tirx.PrimExpr:
    """``T_low[lo] + T_high[hi]`` of byte ``kb``, plane ``p``, for the 32 rows, as int16x32:
    both 16-row segments share the two table registers."""
    low_table, high_table = _int8_table(tab, kb * 2, half_tables), _int8_table(tab, kb * 2 + 1, half_tables)
    sums = []
    for segment in range(SEGMENTS):
        byte = w[kb, p, ramp(segment * Q_BYTES, Q_BYTES)]
        low = _tbl([low_table], tirx.bitwise_and(byte, _u8(15)))
        high = _tbl([high_table], tirx.shift_right(byte, _u8(4)))
        sums.append(T.Cast("int16x16", low) + T.Cast("int16x16", high))
    return tirx.Shuffle(sums, list(range(TILE_N)))


def _fast_chunk(tab: tirx.Buffer, w: tirx.Buffer, spec: KernelSpec, chunk: int) -> tirx.PrimExpr:
    """The chunk's int32 sums of 32 rows: one int16 sum per plane, weighted once by ``2**p``
    (within its plane group, :func:`~lutc.schedules.hw.plane_groups`; a group past the first is
    widened, then shifted by its first plane)."""
    total = None
    for group in plane_groups(spec.planes):
        group_sum = None
        for p in group:
            plane_sum = None
            for kb in range(chunk):
                term = _pair_sums(tab, w, kb, p, spec.half_tables)
                plane_sum = term if plane_sum is None else plane_sum + term
            if p > group.start:
                plane_sum = tirx.shift_left(plane_sum, tirx.Broadcast(tirx.const(p - group.start, "int16"), TILE_N))
            group_sum = plane_sum if group_sum is None else group_sum + plane_sum
        widened = T.Cast("int32x32", group_sum)
        if group.start:
            widened = tirx.shift_left(widened, tirx.Broadcast(tirx.const(group.start, "int32"), TILE_N))
        total = widened if total is None else total + widened
    return total


def fast_impl(spec: KernelSpec, chunk: int) -> tirx.PrimFunc:
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
            acc[0:TILE_N] = acc[ramp(0, TILE_N)] + _fast_chunk(tab, w, spec, chunk)

    return impl


def _float_table(tab: tirx.Buffer, row, half_tables: bool) -> list[tirx.PrimExpr]:
    """The 16-entry float table of ``row`` as four 16-byte registers; ``[T, -T]`` when symmetrized."""
    quarters = [
        tab[row, ramp(FLOAT_LANES * i, FLOAT_LANES)] for i in range(ENTRIES // FLOAT_LANES // (1 + half_tables))
    ]
    if half_tables:
        sign = tirx.Broadcast(tirx.const(SIGN_BIT, "int32"), FLOAT_LANES)
        quarters += [T.reinterpret("float32x4", tirx.bitwise_xor(T.reinterpret("int32x4", q), sign)) for q in quarters]
    return [T.reinterpret("int8x16", q) for q in quarters]


BYTE_OFFSETS = tirx.Broadcast(tirx.const(0x03020100, "uint32"), FLOAT_LANES)
"""``0, 1, 2, 3`` in every int32 lane: the bytes of one float."""


def _float_lookups(table: list[tirx.PrimExpr], offsets: tirx.PrimExpr, quad: int) -> tirx.PrimExpr:
    """Rows ``4*quad .. 4*quad + 3`` of a 16-row segment, looked up at byte ``offsets`` (``4 * n``)."""
    replicated = tirx.Shuffle([offsets], [FLOAT_LANES * quad + i // FLOAT_LANES for i in range(Q_BYTES)])
    index = tirx.bitwise_or(replicated, T.reinterpret("uint8x16", BYTE_OFFSETS))
    return T.reinterpret("float32x4", _tbl(table, index))


def _exact_rows(tab: tirx.Buffer, w: tirx.Buffer, kb: int, p: int, quad: int, half_tables: bool) -> tirx.PrimExpr:
    """``2**p * (T_low[lo] + T_high[hi])`` for rows ``4*quad .. 4*quad + 3`` of the tile."""
    segment, local = divmod(quad, Q_BYTES // FLOAT_LANES)
    byte = w[kb, p, ramp(segment * Q_BYTES, Q_BYTES)]
    low = tirx.shift_left(tirx.bitwise_and(byte, _u8(15)), _u8(2))
    high = tirx.bitwise_and(tirx.shift_right(byte, _u8(2)), _u8(0x3C))
    both = _float_lookups(_float_table(tab, kb * 2, half_tables), low, local) + _float_lookups(
        _float_table(tab, kb * 2 + 1, half_tables), high, local
    )
    return both * tirx.Broadcast(tirx.Cast("float32", tirx.shift_left(1, p)), FLOAT_LANES)


def _exact_quad(tab: tirx.Buffer, w: tirx.Buffer, spec: KernelSpec, chunk: int, quad: int) -> tirx.PrimExpr:
    return chunk_sum(chunk, spec.planes, lambda kb, p: _exact_rows(tab, w, kb, p, quad, spec.half_tables))


def exact_impl(spec: KernelSpec, chunk: int) -> tirx.PrimFunc:
    planes, entries = spec.planes, spec.entries

    @T.prim_func(s_tir=True)
    def impl(
        tab: T.Buffer((chunk * 2, entries), "float32", offset_factor=1),
        w: T.Buffer((chunk, planes, TILE_N), "uint8", offset_factor=1),
        acc: T.Buffer((TILE_N,), "float32", offset_factor=1),
    ):
        with T.sblock("root"):
            T.reads(acc[0:TILE_N], w[0:chunk, 0:planes, 0:TILE_N], tab[0 : chunk * 2, 0:entries])
            T.writes(acc[0:TILE_N])
            sums = [_exact_quad(tab, w, spec, chunk, q) for q in range(TILE_N // FLOAT_LANES)]
            acc[0:TILE_N] = acc[ramp(0, TILE_N)] + tirx.Shuffle(sums, list(range(TILE_N)))

    return impl


def neon_intrin(spec: KernelSpec, chunk: int) -> str:
    """Register (once) and name the NEON micro-kernel for ``spec`` and ``chunk``."""
    return register_lookup_intrin("neon", spec, chunk, fast_impl if spec.mode == "fast" else exact_impl)
