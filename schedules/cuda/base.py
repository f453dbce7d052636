"""Applicability and hardware constants for the CUDA rules, in one place."""

from __future__ import annotations

from tvm.target import Target

from ..base import LutRule

WARP = 32
"""Threads per warp: one thread per output row of a 32-row weight tile."""

MAX_THREADS = 512
"""Most threads a lutc CUDA block uses (the hardware allows 1024; 512 keeps 64+ registers)."""

MAX_REGISTERS = 64
"""Registers per thread a lutc kernel may use: 64 x 512 threads = 32 K of the 64 K per SM."""

SHARED_BYTES = 48 * 1024
"""Static shared memory per block (more needs a dynamic allocation and an opt-in)."""

TABLE_STAGE_BYTES = 16 * 1024
"""Shared memory for one stage of staged tables: a third of :data:`SHARED_BYTES`, so two or
three blocks fit an SM (164-228 KiB on sm_80 / sm_90)."""

TILES_PER_BLOCK = (1, 2, 4, 8)
"""Weight tiles (32 output rows each, ``threadIdx.y``) a block covers; they share each table read."""

K_SPLITS = (1, 2, 4, 8)
"""Warps (``threadIdx.z``) that split a tile's weight groups, reduced across threads at the end."""

DEFAULT_TILES = 4
DEFAULT_K_SPLIT = 4

LOOKUP_CHUNKS = (2, 4, 8)
"""K bytes one tensorized lookup covers per thread."""

DEFAULT_CHUNK = 4

DP4A_LANES = 4
"""int8 products ``__dp4a`` sums: one byte lane per bit plane (a group of at most 4 planes)."""


def is_cuda(target: Target) -> bool:
    return target.kind.name == "cuda"


class CudaRule(LutRule):
    """A rule for any CUDA target (``dp4a`` and ``prmt`` need sm_61 or later)."""

    def is_target_available(self, target: Target) -> bool:
        return is_cuda(target)
