"""Hardware constants the schedule rules rely on, in one place."""

from __future__ import annotations

AVX2_VECTOR_BYTES = 32
"""One ymm register: 32 table lookups per ``vpshufb``."""

INT16_MAX = 32767
INT8_TABLE_MAX = 127
PAIR_LOOKUP_MAX = 2 * INT8_TABLE_MAX
"""``vpmaddubsw`` adds the two nibble lookups of one byte before they reach int16."""

CHUNK_CANDIDATES = (1, 2, 4, 8, 16, 32, 64, 128)
"""K bytes one lookup micro-kernel call covers (8 K elements each)."""


def max_int16_chunk(planes: int) -> int:
    """Most K bytes an int16 accumulator of all planes can take before it may overflow.

    Per byte and row the planes add at most ``(2 * 127) * (2**planes - 1)``.
    """
    per_byte = PAIR_LOOKUP_MAX * (2**planes - 1)
    return max(c for c in CHUNK_CANDIDATES if c * per_byte <= INT16_MAX)
