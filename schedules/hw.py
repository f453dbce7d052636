"""Hardware constants the schedule rules rely on, per ISA, in one place."""

from __future__ import annotations

AVX2_VECTOR_BYTES = 32
"""One ymm register: 32 table lookups per ``vpshufb``."""

AVX2_MAX_EXACT_CHUNK = 16
"""Exact mode on AVX2: K bytes per micro-kernel call before the float tables spill registers."""

INT16_MAX = 32767
INT8_TABLE_MAX = 127
PAIR_LOOKUP_MAX = 2 * INT8_TABLE_MAX
"""``vpmaddubsw`` adds the two nibble lookups of one byte before they reach int16."""

CHUNK_CANDIDATES = (1, 2, 4, 8, 16, 32, 64, 128)
"""K bytes one lookup micro-kernel call covers (8 K elements each)."""


INT16_PLANE_GROUP = 4
"""Planes one int16 chain adds, weighted ``2**(p - first)`` within the chain (at most 15 per
byte). Wider codes (5-8 bits) take one chain per group of planes, each widened to int32 and
shifted by its first plane: ``2**7 * 254`` alone would fill an int16."""


def plane_groups(planes: int, size: int = INT16_PLANE_GROUP) -> tuple[range, ...]:
    """Consecutive planes in groups of ``size``, one per int16 chain by default:
    ``(range(0, 4), range(4, 8))`` for 8 planes."""
    return tuple(range(first, min(first + size, planes)) for first in range(0, planes, size))


def max_int16_chunk(planes: int) -> int:
    """Most K bytes an int16 chain of planes (:func:`plane_groups`) can take before it may overflow.

    Per byte and row a chain of ``c`` planes adds at most ``(2 * 127) * (2**c - 1)``.
    """
    per_byte = PAIR_LOOKUP_MAX * (2 ** min(planes, INT16_PLANE_GROUP) - 1)
    return max(c for c in CHUNK_CANDIDATES if c * per_byte <= INT16_MAX)


FLOAT_TILE_ROWS = {16: 4, 32: 8}
"""Rows of the float matmul register tile by vector register count: with 3 vectors of columns,
4 x 3 = 12 accumulators + 3 weight vectors + 1 broadcast fill AVX2's 16 registers; 8 x 3 fits 32."""

FLOAT_TILE_VECTORS = (3, 2, 1)
"""Vectors of columns per float matmul tile, most preferred first (the first that divides N)."""

ROW_ACCUMULATORS = 8
"""Independent FMA chains a one-row (GEMV) float kernel keeps: FMA latency (4 cycles) x 2 per cycle."""


def float_lanes(target) -> int:
    """float32 lanes of the widest vector register ``target`` allows (16 AVX-512, 8 AVX2, else 4)."""
    from tvm.target import codegen

    triple = str(target.attrs.get("mtriple", "")) or codegen.llvm_get_system_triple()
    if not triple.startswith(("x86_64", "i686", "i386")):
        return 4
    if codegen.target_has_features("avx512f", target):
        return 16
    return 8 if codegen.target_has_features("avx", target) else 4


def vector_registers(target) -> int:
    """Architectural vector registers: 32 on AVX-512 and AArch64, 16 on AVX2 / SSE."""
    return 32 if float_lanes(target) == 16 or "arm_cpu" in target.keys else 16


AVX512_MAX_FAST_CHUNK = 32
"""Fast mode on AVX-512: K bytes per micro-kernel call (int32 sums do not overflow; 8 table
register pairs plus the quads' temporaries fit the 32 zmm registers)."""

AVX512_MAX_EXACT_CHUNK = 8
"""Exact mode on AVX-512: two zmm float tables per K byte, 16 for 8 bytes."""

PREFETCH_BYTES = 1024
"""How far ahead in a tile's weight stream the lookup micro-kernels prefetch (``prefetcht0``).
Measured on a 2-core Intel Xeon (AVX-512, M = 1, 4096 x 4096, 1 thread): 2-bit cold 520 -> 390
µs and hot 253 -> 200 µs, 4-bit cold 888 -> 770-840 µs; 512 to 1536 bytes measured alike, 2 KiB
and more lose the 4-bit gain."""

CACHE_LINE = 64

NEON_MAX_EXACT_CHUNK = 4
"""Exact mode on NEON: four registers per float table, two tables per K byte; 4 bytes' tables
(32 registers) already exceed the register file."""
