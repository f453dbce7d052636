"""``lut_matmul`` on CUDA: elongated tiles, one thread per output row, tables in shared memory.

Loop nest after scheduling::

    blockIdx.z = kb (K blocks), blockIdx.y = m, blockIdx.x = N / (32 * tiles)
      threadIdx.z = kz (K split), threadIdx.y = tile in block, threadIdx.x = r (row in tile)
        for go in groups / (kblocks * ksplit):       # group = (kb * per_block) + go * ksplit + kz
          for stage in group_bytes / stage_bytes:    # all threads copy the tables of the stage
            tables_shared[...] = tables[m, ...]      # ksplit groups, stage_bytes * 2 tables
            acc = 0 ; for chunk: acc = lookup micro-kernel(tables_shared, data, acc)
          y_rf[kz] += epilogue(acc)                  # the group's scale, offset and xsum
      y_kb[kb, m, n] = sum_kz y_rf[kz]               # cross-warp reduction
    second kernel, with k_blocks > 1 only:
      y[m, n] = sum_kb y_kb[kb, m, n]                # in order: deterministic

All ``32 * tiles`` output rows of a block read each table entry once from shared memory (a
broadcast), and the weights stream once per activation row. Decisions: tiles per block, K
split, lookup chunk and K blocks (structural), all ``sch.sample_categorical``. The default K
blocks come from the target's SM count (:func:`default_k_blocks`): a 4096 x 4096 w2g32 matmul at
M = 1 launches 32 x 16 = 512 blocks of 512 threads on sm_90 instead of 32.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.target import Target

from ...kernels.names import (
    DATA,
    LOOKUP_BLOCK,
    MATMUL_KERNEL,
    OUTPUT_BLOCK,
    PADDED_OUTPUT_BLOCK,
    TABLES,
)
from ...kernels.spec import KernelSpec
from ...quant.layout import TILE_N
from ...targets import cuda_sm_count
from ..base import Knobs, block_names, choose
from .base import (
    BLOCKS_PER_SM,
    DEFAULT_CHUNK,
    DEFAULT_K_SPLIT,
    DEFAULT_ROWS,
    DEFAULT_TILES,
    EXACT_MAX_ROWS,
    K_BLOCKS,
    K_SPLITS,
    LOOKUP_CHUNKS,
    MAX_THREADS,
    MIN_WARP_BYTES,
    ROWS_PER_BLOCK,
    TABLE_STAGE_BYTES,
    TILES_PER_BLOCK,
    WARP,
    CudaRule,
)
from .lookup_intrin import cuda_lookup_intrin


def _divisors(extent: int, candidates: tuple[int, ...]) -> list[int]:
    return [c for c in candidates if extent % c == 0]


def _default(candidates: list[int], preferred: int) -> int:
    fitting = [c for c in candidates if c <= preferred]
    return max(fitting) if fitting else min(candidates)


@dataclass(frozen=True)
class Grid:
    """One ``lut_matmul`` schedule's structural choices (see the module docstring)."""

    tiles: int = DEFAULT_TILES
    k_split: int = DEFAULT_K_SPLIT
    chunk: int = DEFAULT_CHUNK
    k_blocks: int = 1
    rows: int = 1
    """Activation rows a block runs against each weight chunk it loads (static M only)."""


def _table_bytes_per_k_byte(spec: KernelSpec, k_split: int, rows: int) -> int:
    """Shared-memory bytes a table stage takes per K byte: two tables for each warp's group and row."""
    return rows * k_split * 2 * spec.entries * (1 if spec.mode == "fast" else 4)


def _stage_bytes(spec: KernelSpec, grid: Grid) -> int:
    """K bytes per table stage: the largest multiple of ``chunk`` dividing a group whose
    ``k_split`` groups' tables for ``rows`` rows fit :data:`TABLE_STAGE_BYTES`."""
    per_byte = _table_bytes_per_k_byte(spec, grid.k_split, grid.rows)
    fitting = [b for b in range(grid.chunk, spec.group_bytes + 1, grid.chunk) if spec.group_bytes % b == 0]
    if spec.vector > 1:  # a stage holds whole vector slots, or part of one
        fitting = [b for b in fitting if b % spec.vector == 0 or spec.vector % b == 0]
    return max([b for b in fitting if b * per_byte <= TABLE_STAGE_BYTES], default=grid.chunk)


def _load_width(spec: KernelSpec, stage_bytes: int) -> int:
    """Bytes of one vectorized weight load: the largest power of two up to 16 dividing the run of
    contiguous bytes a thread copies per slot (all planes of a slot, or a stage's part of one plane)."""
    run = spec.planes * spec.vector if stage_bytes % spec.vector == 0 else stage_bytes
    return max(w for w in (1, 2, 4, 8, 16) if run % w == 0)


class LutMatmulCuda(CudaRule):
    """``lut_matmul`` for fast and exact mode, any (or dynamic) M; see the module docstring."""

    kernel = MATMUL_KERNEL

    def applies(self, func: tirx.PrimFunc, target: Target) -> bool:
        if not super().applies(func, target):
            return False
        spec = KernelSpec.from_func(func)
        return bool(_divisors(spec.group_bytes, LOOKUP_CHUNKS))

    def structural_choices(self, func: tirx.PrimFunc, target: Target) -> dict[str, list[int]]:
        spec = KernelSpec.from_func(func)
        return {
            "tiles": _divisors(spec.n_tiles, TILES_PER_BLOCK),
            "k_split": [s for s in _divisors(spec.n_groups, K_SPLITS) if s * WARP <= MAX_THREADS],
            "chunk": _divisors(spec.vector if spec.vector > 1 else spec.group_bytes, LOOKUP_CHUNKS),
            "k_blocks": _divisors(spec.n_groups, K_BLOCKS),
            "rows": _row_choices(spec),
        }

    def register_intrinsics(self, func: tirx.PrimFunc, target: Target) -> None:
        spec, choices = KernelSpec.from_func(func), self.structural_choices(func, target)
        for chunk in choices["chunk"]:
            for rows in choices["rows"]:
                cuda_lookup_intrin(spec, chunk, rows)

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, target: Target, knobs: Knobs) -> None:
        spec = KernelSpec.from_func(func)
        schedule_lut_matmul_cuda(sch, spec, self.grid(func, target, knobs, sch))

    def grid(self, func: tirx.PrimFunc, target: Target, knobs: Knobs, sch: s_tir.Schedule | None = None) -> Grid:
        """The schedule's choices: pinned, sampled (with ``sch``) or the defaults, each made to fit."""
        spec, choices = KernelSpec.from_func(func), self.structural_choices(func, target)

        def pick(name: str, default: int) -> int:
            if sch is not None:
                return choose(sch, name, choices[name], default, knobs)
            pinned = knobs.pinned_value(name)
            return default if pinned is None else pinned

        tiles = pick("tiles", _default(choices["tiles"], DEFAULT_TILES))
        k_split = pick("k_split", _default(choices["k_split"], DEFAULT_K_SPLIT))
        k_split = min(k_split, MAX_THREADS // (tiles * WARP))  # powers of two: still a divisor
        chunk = pick("chunk", _default(choices["chunk"], DEFAULT_CHUNK))
        rows = pick("rows", _default(choices["rows"], DEFAULT_ROWS if spec.mode == "fast" else 1))
        rows = _fitting_rows(spec, k_split, chunk, rows)
        k_blocks = pick("k_blocks", default_k_blocks(spec, tiles, k_split, rows, cuda_sm_count(target)))
        return Grid(tiles, k_split, chunk, _fitting_k_blocks(spec, k_split, k_blocks), rows)


def _row_choices(spec: KernelSpec) -> list[int]:
    """Rows a block may run: divisors of a static M, at most :data:`EXACT_MAX_ROWS` in exact mode."""
    if spec.m is None:
        return [1]
    return [r for r in _divisors(spec.m, ROWS_PER_BLOCK) if spec.mode == "fast" or r <= EXACT_MAX_ROWS]


def _fitting_rows(spec: KernelSpec, k_split: int, chunk: int, rows: int) -> int:
    """The most rows up to ``rows`` whose smallest table stage (one chunk) fits :data:`TABLE_STAGE_BYTES`."""
    fits = [
        r
        for r in _row_choices(spec)
        if r <= rows and chunk * _table_bytes_per_k_byte(spec, k_split, r) <= TABLE_STAGE_BYTES
    ]
    return max([1, *fits])


def _fitting_k_blocks(spec: KernelSpec, k_split: int, k_blocks: int) -> int:
    """The largest of :data:`K_BLOCKS` up to ``k_blocks`` that splits the groups evenly with ``k_split``."""
    return max(b for b in K_BLOCKS if b <= k_blocks and spec.n_groups % (b * k_split) == 0)


def default_k_blocks(spec: KernelSpec, tiles: int, k_split: int, rows: int, sm_count: int) -> int:
    """The fewest K blocks that launch :data:`BLOCKS_PER_SM` blocks per SM, each warp keeping at
    least :data:`MIN_WARP_BYTES` K bytes. A dynamic M counts as many rows (a prompt): 1."""
    if spec.m is None:
        return 1
    blocks = spec.n_tiles // tiles * (spec.m // rows)
    warp_bytes = {b: spec.n_groups // (b * k_split) * spec.group_bytes for b in K_BLOCKS}
    usable = [b for b in K_BLOCKS if spec.n_groups % (b * k_split) == 0 and warp_bytes[b] >= MIN_WARP_BYTES]
    enough = [b for b in usable if blocks * b >= BLOCKS_PER_SM * sm_count]
    return min(enough) if enough else max(usable, default=1)


def _epilogue_block(sch: s_tir.Schedule) -> s_tir.SBlockRV:
    return sch.get_sblock(PADDED_OUTPUT_BLOCK if PADDED_OUTPUT_BLOCK in block_names(sch) else OUTPUT_BLOCK)


def schedule_lut_matmul_cuda(sch: s_tir.Schedule, spec: KernelSpec, grid: Grid) -> None:
    """Bind, stage and tensorize ``lut_matmul`` (see the module docstring)."""
    epilogue = _epilogue_block(sch)
    if grid.k_blocks > 1:
        epilogue = _split_across_blocks(sch, epilogue, grid.k_blocks)
        kb, m, n, group = sch.get_loops(epilogue)
        sch.bind(kb, "blockIdx.z")
    else:
        m, n, group = sch.get_loops(epilogue)
    shared_rows = grid.rows > 1
    if shared_rows:
        m, m_rows = sch.split(m, [None, grid.rows])
    bx, ty, tx = sch.split(n, [None, grid.tiles, TILE_N])
    if grid.k_split > 1:
        go, kz = sch.split(group, [None, grid.k_split])
        partial = sch.rfactor(kz, factor_axis=0)
        loops = sch.get_loops(partial)
        m, bx, ty, tx, go, kz = (loops[-7], *loops[-5:]) if shared_rows else loops[-6:]
        sch.reorder(m, bx, kz, ty, tx, go, *([loops[-6]] if shared_rows else []))
        sch.bind(kz, "threadIdx.z")
        sch.set_scope(partial, 0, "local")
    else:
        partial, go = epilogue, group
        if shared_rows:
            sch.reorder(m, bx, ty, tx, go, m_rows)
    sch.bind(m, "blockIdx.y")
    sch.bind(bx, "blockIdx.x")
    sch.bind(ty, "threadIdx.y")
    sch.bind(tx, "threadIdx.x")
    if grid.k_split > 1:
        _final_reduction(sch, epilogue, bx, grid)
    _crop(sch, epilogue, bx)
    lookup = sch.get_sblock(LOOKUP_BLOCK)
    sch.set_scope(lookup, 0, "local")
    sch.compute_at(lookup, go)
    _stage_and_tensorize(sch, spec, lookup, grid)
    sch.decompose_reduction(partial, go)


def _split_across_blocks(sch: s_tir.Schedule, epilogue: s_tir.SBlockRV, k_blocks: int) -> s_tir.SBlockRV:
    """Split the group sum across ``blockIdx.z``: a new block writes each K block's partial sums to a
    global scratch ``[k_blocks, M, N_pad]``; ``epilogue`` adds them in order (deterministic) in a
    second kernel. Returns the partial block, its loops ``(kb, m, n, group)``."""
    m, n, group = sch.get_loops(epilogue)
    kb, _ = sch.split(group, [k_blocks, None])
    partial = sch.rfactor(kb, factor_axis=0)
    m, n, kb = sch.get_loops(partial)[:3]
    sch.reorder(kb, m, n)
    _bind_block_sum(sch, epilogue)
    return partial


def _bind_block_sum(sch: s_tir.Schedule, total: s_tir.SBlockRV) -> None:
    """The second kernel: one thread per output adds the ``k_blocks`` partials (and crops)."""
    m, n, _ = sch.get_loops(total)
    n_tiles = int(sch.get(n).extent) // TILE_N
    bx, tx = sch.split(n, [None, TILE_N * max(_divisors(n_tiles, TILES_PER_BLOCK))])
    sch.bind(m, "blockIdx.y")
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    if sch.get(total).name_hint == PADDED_OUTPUT_BLOCK:
        sch.set_scope(total, 0, "local")
        sch.reverse_compute_at(sch.get_sblock(OUTPUT_BLOCK), tx)


def _final_reduction(sch: s_tir.Schedule, epilogue: s_tir.SBlockRV, bx: s_tir.LoopRV, grid: Grid) -> None:
    """``y[m, n] = sum_kz y_rf[kz, m, n]`` across ``threadIdx.z``, one thread per output (and row)."""
    sch.reverse_compute_at(epilogue, bx)
    # In y_rf's axis order, kz, (m: a unit loop unless a block runs several rows, then dropped), n.
    kz, *rows, n = sch.get_loops(epilogue)[-(3 if grid.rows > 1 else 2) :]
    if int(sch.get(n).extent) != grid.tiles * TILE_N or int(sch.get(kz).extent) != grid.k_split:
        raise RuntimeError("unexpected loop order after reverse_compute_at of the final reduction")
    ty, tx = sch.split(n, [None, TILE_N])
    sch.reorder(*rows, ty, tx, kz)  # the cross-thread reduction loop must be innermost
    sch.bind(kz, "threadIdx.z")
    sch.bind(ty, "threadIdx.y")
    sch.bind(tx, "threadIdx.x")


def _crop(sch: s_tir.Schedule, epilogue: s_tir.SBlockRV, bx: s_tir.LoopRV) -> None:
    """With ``y_pad``: keep the block's padded outputs in shared memory, crop them into ``y``."""
    if sch.get(epilogue).name_hint != PADDED_OUTPUT_BLOCK:
        return
    sch.set_scope(epilogue, 0, "shared")
    crop = sch.get_sblock(OUTPUT_BLOCK)
    sch.reverse_compute_at(crop, bx)
    n = sch.get_loops(crop)[-1]
    ty, tx = sch.split(n, [None, TILE_N])
    sch.bind(ty, "threadIdx.y")
    sch.bind(tx, "threadIdx.x")


def _stage_and_tensorize(sch: s_tir.Schedule, spec: KernelSpec, lookup: s_tir.SBlockRV, grid: Grid) -> None:
    """Copy each stage's tables to shared memory with all threads; tensorize the lookup chunks
    (each for all of the block's rows: the row loop goes under the chunk loop)."""
    loops = sch.get_loops(lookup)
    byte_index = len(loops) - (4 if spec.planes > 1 else 3)  # LOOKUP_LOOPS end with byte, (plane), half, entry
    byte = loops[byte_index]
    stage_bytes = _stage_bytes(spec, grid)
    stage, inner = sch.split(byte, [None, stage_bytes])
    chunks, body = sch.split(inner, [None, grid.chunk])
    if grid.rows > 1:
        rows = loops[byte_index - 1]
        sch.reorder(stage, chunks, rows)
        body, stage_depth = rows, byte_index - 1
    else:
        stage_depth = byte_index
    if spec.vector > 1:
        _load_weights(sch, spec, lookup, stage, stage_depth, stage_bytes)
    shared = sch.cache_read(lookup, TABLES, "shared")
    sch.compute_at(shared, stage)
    fused = sch.fuse(*sch.get_loops(shared)[stage_depth + 1 :])
    _, z, y, x = sch.split(fused, [None, grid.k_split, grid.tiles, TILE_N])
    sch.bind(z, "threadIdx.z")
    sch.bind(y, "threadIdx.y")
    sch.bind(x, "threadIdx.x")
    sch.decompose_reduction(lookup, stage)
    sch.tensorize(body, cuda_lookup_intrin(spec, grid.chunk, grid.rows))


def _load_weights(
    sch: s_tir.Schedule, spec: KernelSpec, lookup: s_tir.SBlockRV, stage: s_tir.LoopRV, depth: int, stage_bytes: int
) -> None:
    """Vector layout: each thread copies its row's bytes of the stage into registers with loads of
    up to 16 bytes (``uint4``), then looks up from there."""
    local = sch.cache_read(lookup, DATA, "local")
    sch.compute_at(local, stage)
    fused = sch.fuse(*sch.get_loops(local)[depth + 1 :])
    _, lanes = sch.split(fused, [None, _load_width(spec, stage_bytes)])
    sch.vectorize(lanes)
