"""Software prefetch of the packed weight stream (and of a row's next tables), for lookup micro-kernels.

A micro-kernel call reads ``chunk * planes * 32`` contiguous bytes of one tile. On its own, the
hardware prefetcher left a one-row GEMV at 65 % of the DRAM bandwidth (and slower than it
could be from L3); prefetching each cache line :data:`~lutc.schedules.hw.PREFETCH_BYTES` ahead
of the bytes a call reads closes most of that gap. Prefetches past the end of the weights are
harmless (they never fault).
"""

from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ...quant.layout import TILE_N
from ..hw import CACHE_LINE, PREFETCH_BYTES


def prefetch_lines(chunk: int, planes: int) -> int:
    """Cache lines one call reads: ``chunk * planes`` segments of 32 bytes."""
    return max(1, chunk * planes * TILE_N // CACHE_LINE)


def prefetch_line(w: tirx.Buffer, line, planes: int) -> tirx.PrimExpr:
    """Prefetch cache line ``line`` of the call's weight bytes, :data:`PREFETCH_BYTES` ahead."""
    ahead = PREFETCH_BYTES // (planes * TILE_N)  # K bytes
    segment = line * (CACHE_LINE // TILE_N)
    address = T.address_of(w[ahead + segment // planes, segment % planes, 0])
    return T.call_llvm_intrin("void", "llvm.prefetch.p0", address, 0, 3, 1)


def next_tables_lines(chunk: int, entries: int) -> int:
    """Cache lines of the tables one call reads: ``chunk * 2`` tables of ``entries`` bytes."""
    return max(1, chunk * 2 * entries // CACHE_LINE)


def prefetch_next_tables(tab: tirx.Buffer, line, chunk: int, entries: int) -> tirx.PrimExpr:
    """Prefetch cache line ``line`` of the row's tables for the next chunk (rows inside groups:
    the row's next group comes after every other row's turn on this one)."""
    address = T.address_of(tab[chunk * 2 + line * (CACHE_LINE // entries), 0])
    return T.call_llvm_intrin("void", "llvm.prefetch.p0", address, 0, 3, 1)
