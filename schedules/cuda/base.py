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

K_BLOCKS = (1, 2, 4, 8, 16)
"""Blocks (``blockIdx.z``) that split a tile's weight groups; a second kernel adds their partial
sums in a fixed order (deterministic, no atomics)."""

BLOCKS_PER_SM = 2
"""Blocks per SM the default grid aims for: the default ``k_blocks`` is the smallest that launches
``BLOCKS_PER_SM * SMs`` blocks (:func:`lutc.targets.cuda_sm_count`), so that while one block waits
on its tables or its last loads another streams; a 4096-row matmul at M = 1 has only 32 blocks of
128 rows otherwise, a quarter of an H100's 132 SMs."""

MIN_WARP_BYTES = 8
"""K bytes (per plane) each warp keeps at least when ``k_blocks`` splits K, for the per-block
fixed costs (staging its tables, the epilogue, the partial write): two 32-element groups, one
group of 64 or more."""

ROWS_PER_BLOCK = (1, 2, 4, 8)
"""Activation rows (M) a block runs against each weight chunk a thread loads: the chunk's bytes
are held in registers and index every row's tables, so at M = 16 the weights stream M / rows
times instead of M. Static M only (a dynamic M is not known to divide)."""

DEFAULT_ROWS = 4
"""Four rows: four accumulators (and with a K split four partial sums) per thread, which keeps a
fast-mode thread within :data:`MAX_REGISTERS` (ptxas, sm_80, M = 16: 49-64 registers at 4 rows for
w2g32 and w4g128a; 2 rows 32-40); their tables take four times the shared memory per stage."""

EXACT_MAX_ROWS = 2
"""Exact mode (float32 tables) offers at most two rows a block and defaults to one: with full tables
four rows took 95-127 registers (w4g128a), eight 80 with half tables; two rows 32-40, but 100 for
8-bit codes with full tables at the default chunk."""

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
