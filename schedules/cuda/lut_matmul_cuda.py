"""``lut_matmul`` on CUDA: elongated tiles, one thread per output row, tables in shared memory.

Loop nest after scheduling::

    blockIdx.y = m, blockIdx.x = N / (32 * tiles)
      threadIdx.z = kz (K split), threadIdx.y = tile in block, threadIdx.x = r (row in tile)
        for go in groups / ksplit:                   # group = go * ksplit + kz
          for stage in group_bytes / stage_bytes:    # all threads copy the tables of the stage
            tables_shared[...] = tables[m, ...]      # ksplit groups, stage_bytes * 2 tables
            acc = 0 ; for chunk: acc = lookup micro-kernel(tables_shared, data, acc)
          y_rf[kz] += epilogue(acc)                  # the group's scale, offset and xsum
      y[m, n] = sum_kz y_rf[kz]                      # cross-warp reduction

All ``32 * tiles`` output rows of a block read each table entry once from shared memory (a
broadcast), and the weights stream once per activation row. Decisions: tiles per block, K
split and lookup chunk (structural), all ``sch.sample_categorical``.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from ...kernels.names import (
    LOOKUP_BLOCK,
    MATMUL_KERNEL,
    OUTPUT_BLOCK,
    PADDED_OUTPUT_BLOCK,
    TABLES,
)
from ...kernels.spec import KernelSpec
from ...quant.layout import TILE_N
from ..base import Knobs, block_names, choose
from .base import (
    DEFAULT_CHUNK,
    DEFAULT_K_SPLIT,
    DEFAULT_TILES,
    K_SPLITS,
    LOOKUP_CHUNKS,
    MAX_THREADS,
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


def _stage_bytes(spec: KernelSpec, k_split: int, chunk: int) -> int:
    """K bytes per table stage: the largest multiple of ``chunk`` dividing a group whose
    ``k_split`` groups' tables fit :data:`TABLE_STAGE_BYTES`."""
    per_byte = k_split * 2 * spec.entries * (1 if spec.mode == "fast" else 4)
    fitting = [b for b in range(chunk, spec.group_bytes + 1, chunk) if spec.group_bytes % b == 0]
    return max([b for b in fitting if b * per_byte <= TABLE_STAGE_BYTES], default=chunk)


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
        tiles = _divisors(spec.n_tiles, TILES_PER_BLOCK)
        splits = [s for s in _divisors(spec.n_groups, K_SPLITS) if s * WARP <= MAX_THREADS]
        return {"tiles": tiles, "k_split": splits, "chunk": _divisors(spec.group_bytes, LOOKUP_CHUNKS)}

    def register_intrinsics(self, func: tirx.PrimFunc, target: Target) -> None:
        spec = KernelSpec.from_func(func)
        for chunk in _divisors(spec.group_bytes, LOOKUP_CHUNKS):
            cuda_lookup_intrin(spec, chunk)

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, target: Target, knobs: Knobs) -> None:
        spec, choices = KernelSpec.from_func(func), self.structural_choices(func, target)
        tiles = choose(sch, "tiles", choices["tiles"], _default(choices["tiles"], DEFAULT_TILES), knobs)
        splits = choices["k_split"]
        k_split = choose(sch, "k_split", splits, _default(splits, DEFAULT_K_SPLIT), knobs)
        k_split = min(k_split, MAX_THREADS // (tiles * WARP))  # powers of two: still a divisor
        chunk = choose(sch, "chunk", choices["chunk"], _default(choices["chunk"], DEFAULT_CHUNK), knobs)
        schedule_lut_matmul_cuda(sch, spec, tiles, k_split, chunk)


def _epilogue_block(sch: s_tir.Schedule) -> s_tir.SBlockRV:
    return sch.get_sblock(PADDED_OUTPUT_BLOCK if PADDED_OUTPUT_BLOCK in block_names(sch) else OUTPUT_BLOCK)


def schedule_lut_matmul_cuda(sch: s_tir.Schedule, spec: KernelSpec, tiles: int, k_split: int, chunk: int) -> None:
    """Bind, stage and tensorize ``lut_matmul`` (see the module docstring)."""
    epilogue = _epilogue_block(sch)
    m, n, group = sch.get_loops(epilogue)
    bx, ty, tx = sch.split(n, [None, tiles, TILE_N])
    if k_split > 1:
        go, kz = sch.split(group, [None, k_split])
        partial = sch.rfactor(kz, factor_axis=0)
        m, bx, ty, tx, go, kz = sch.get_loops(partial)
        sch.reorder(m, bx, kz, ty, tx, go)
        sch.bind(kz, "threadIdx.z")
        sch.set_scope(partial, 0, "local")
    else:
        partial, go = epilogue, group
    sch.bind(m, "blockIdx.y")
    sch.bind(bx, "blockIdx.x")
    sch.bind(ty, "threadIdx.y")
    sch.bind(tx, "threadIdx.x")
    if k_split > 1:
        _final_reduction(sch, epilogue, bx, tiles)
    _crop(sch, epilogue, bx)
    lookup = sch.get_sblock(LOOKUP_BLOCK)
    sch.set_scope(lookup, 0, "local")
    sch.compute_at(lookup, go)
    _stage_and_tensorize(sch, spec, lookup, tiles, k_split, chunk)
    sch.decompose_reduction(partial, go)


def _final_reduction(sch: s_tir.Schedule, epilogue: s_tir.SBlockRV, bx: s_tir.LoopRV, tiles: int) -> None:
    """``y[m, n] = sum_kz y_rf[kz, m, n]`` across ``threadIdx.z``, one thread per output."""
    sch.reverse_compute_at(epilogue, bx)
    kz, n = sch.get_loops(epilogue)[-2:]  # in y_rf's axis order; m's loop is a unit loop, dropped
    if int(sch.get(n).extent) != tiles * TILE_N:
        raise RuntimeError("unexpected loop order after reverse_compute_at of the final reduction")
    ty, tx = sch.split(n, [None, TILE_N])
    sch.reorder(ty, tx, kz)  # the cross-thread reduction loop must be innermost
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


def _stage_and_tensorize(
    sch: s_tir.Schedule, spec: KernelSpec, lookup: s_tir.SBlockRV, tiles: int, k_split: int, chunk: int
) -> None:
    """Copy each stage's tables to shared memory with all threads; tensorize the lookup chunks."""
    loops = sch.get_loops(lookup)
    byte_index = len(loops) - (4 if spec.planes > 1 else 3)  # LOOKUP_LOOPS end with byte, (plane), half, entry
    byte = loops[byte_index]
    stage, inner = sch.split(byte, [None, _stage_bytes(spec, k_split, chunk)])
    _, body = sch.split(inner, [None, chunk])
    shared = sch.cache_read(lookup, TABLES, "shared")
    sch.compute_at(shared, stage)
    depth = len(sch.get_loops(lookup)) - len(sch.get_loops(lookup)[byte_index:])
    fused = sch.fuse(*sch.get_loops(shared)[depth + 1 :])
    _, z, y, x = sch.split(fused, [None, k_split, tiles, TILE_N])
    sch.bind(z, "threadIdx.z")
    sch.bind(y, "threadIdx.y")
    sch.bind(x, "threadIdx.x")
    sch.decompose_reduction(lookup, stage)
    sch.tensorize(body, cuda_lookup_intrin(spec, chunk))
