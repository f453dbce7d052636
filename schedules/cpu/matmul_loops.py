"""The loop schedule of ``lut_matmul`` on CPUs; a micro-kernel tensorizes the lookup chunk.

Loop nest after scheduling (``m_inner`` swaps the middle two)::

    for tile in parallel(N / 32):          # threads split N
      for m in M:  for group in groups:    # or group, m: weights of a group stay in L1 for every row
        acc[0:32] = 0
        for chunk in group_bytes / C:      # tensorized: the micro-kernel covers C bytes, 32 rows
          lookup micro-kernel(tables, data, acc)
        y[m, tile*32 : tile*32 + 32] += scales * (ls * 0.5 * acc) + offsets * xsum

Decisions (all ``sch.sample_*``): the chunk size ``C`` (K unroll and tables per micro-kernel
call, bounded by the int16 budget), the row/group order for M > 1, the unrolling of the chunk
loop, and the N tile of a parallel task (consecutive 32-row tiles per task). The last two stay
random variables in the trace, so meta_schedule can mutate them; chunk size and loop order
change the loop structure and the tensorize intrinsic, so they are concretized (a tuner should
enumerate them as separate design spaces: :func:`structural_choices`).
"""

from __future__ import annotations

from collections.abc import Callable

from tvm import s_tir

from ...kernels.names import LOOKUP_BLOCK, OUTPUT_BLOCK, PADDED_OUTPUT_BLOCK
from ...kernels.spec import KernelSpec
from ..base import Knobs, block_names, choose
from ..hw import CHUNK_CANDIDATES

UNROLL_CANDIDATES = (0, 16, 64)
DEFAULT_M_INNER = 0
"""Rows outside groups: measured 45 vs 58 us for a dynamic-row 2048x2048 GEMV, even at M = 16 (the
rules without a measured default of their own: AVX2 and AVX-512 override it)."""
DEFAULT_PREFETCH = 1
"""Prefetch the weight stream where the micro-kernel can: AVX2 cold GEMVs were 0.99-1.10x as fast
with it (1-8 bits, Zen 3), AVX-512 ones 545 -> 390 us."""


def chunk_candidates(spec: KernelSpec, max_chunk: int) -> list[int]:
    """Chunks of at least 2 bytes (unit loops break tensorize) that divide a group."""
    return [c for c in CHUNK_CANDIDATES if 2 <= c <= max_chunk and spec.group_bytes % c == 0]


def default_chunk(candidates: list[int], preferred: int) -> int:
    """The largest candidate up to ``preferred`` bytes (the micro-kernel's measured sweet spot)."""
    fitting = [c for c in candidates if c <= preferred]
    return max(fitting) if fitting else min(candidates)


def structural_choices(
    spec: KernelSpec, chunks: list[int], rows: tuple[int, ...] = (1,), prefetches: bool = False
) -> dict[str, list[int]]:
    """The concretized decisions: chunk size (of the micro-kernel's ``chunks``), row/group order
    when M may exceed 1, activation rows per micro-kernel call where it takes several, and, for
    M = 1, whether it prefetches the weight stream where it can (for M > 1 it does by its default
    when rows run outside groups)."""
    choices = {"chunk": list(chunks)}
    if spec.m != 1:
        choices["m_inner"] = [0, 1]
    if len(rows) > 1:
        choices["rows"] = list(rows)
    if prefetches and spec.m == 1:
        choices["prefetch"] = [0, 1]
    return choices


def _intrin(
    intrin_for: Callable[..., str], spec: KernelSpec, chunk: int, rows: int, prefetch: bool, rows_inside: bool = False
) -> str:
    """The micro-kernel's name; options at their defaults are not passed (rules without them)."""
    options = {"rows": rows} if rows > 1 else {}
    options |= {"prefetch": True} if prefetch else {}
    return intrin_for(spec, chunk, **options, **({"rows_inside": True} if rows_inside else {}))


def register_chunk_intrinsics(
    spec: KernelSpec,
    chunks: list[int],
    intrin_for: Callable[..., str],
    rows: tuple[int, ...] = (1,),
    prefetches: bool = False,
    rows_inside_kernel: bool = False,
) -> None:
    """Register the micro-kernel of every chunk size, row count, prefetch and (where M may exceed
    1) rows-inside kernel a schedule can use."""
    for chunk in chunks:
        for count in rows:
            for prefetch in (False, True) if prefetches else (False,):
                _intrin(intrin_for, spec, chunk, count, prefetch)
            if rows_inside_kernel and spec.m != 1:
                _intrin(intrin_for, spec, chunk, count, False, rows_inside=True)


def schedule_lut_matmul(
    sch: s_tir.Schedule,
    spec: KernelSpec,
    chunks: list[int],
    preferred_chunk: int,
    intrin_for: Callable[..., str],
    knobs: Knobs,
    default_unroll: int = 16,
    rows: tuple[int, ...] = (1,),
    preferred_rows: int = 1,
    default_m_inner: int = DEFAULT_M_INNER,
    prefetches: bool = False,
    rows_inside_kernel: bool = False,
) -> None:
    """Tile, order, parallelize and tensorize ``lut_matmul`` (see the module docstring).

    ``rows``: activation rows one micro-kernel call may take (``intrin_for(spec, chunk, rows)``;
    each must divide a static M); several rows split M and share each weight load.
    ``prefetches``: the micro-kernel can prefetch the weight stream (untuned: :data:`DEFAULT_PREFETCH`).
    It may when rows run outside groups (each weight byte streams once per row), not inside (the
    group's bytes stay in L1, and prefetching them again for every row made M = 16 1.65x slower).
    ``rows_inside_kernel``: rows inside groups take the micro-kernel ``intrin_for(..., rows_inside=True)``.
    """
    choices = structural_choices(spec, chunks, rows, prefetches)
    candidates = choices["chunk"]
    if not candidates:
        raise NotImplementedError(f"no lookup chunk of the micro-kernel divides a group of {spec.group_bytes} bytes")
    chunk = choose(sch, "chunk", candidates, default_chunk(candidates, preferred_chunk), knobs)
    m_inner = choose(sch, "m_inner", choices["m_inner"], default_m_inner, knobs) if "m_inner" in choices else 0
    count = choose(sch, "rows", choices["rows"], preferred_rows, knobs) if "rows" in choices else 1

    lookup, epilogue = sch.get_sblock(LOOKUP_BLOCK), _epilogue_block(sch)
    m, tile, group, r, byte, *plane, half, entry = sch.get_loops(lookup)  # LOOKUP_LOOPS; no plane loop at 1 bit
    outer, inner = sch.split(byte, [None, chunk])
    row_loops = list(sch.split(m, [None, count])) if count > 1 else [m]
    middle = (group, row_loops[0]) if m_inner else (row_loops[0], group)
    sch.reorder(tile, *middle, outer, *row_loops[1:], inner, *plane, half, entry, r)
    sch.reverse_compute_at(epilogue, middle[1])
    _crop_at(sch, tile)
    sch.parallel(_parallel_tiles(sch, tile, knobs.tunable))
    sch.vectorize(sch.get_loops(epilogue)[-1])
    init = sch.decompose_reduction(lookup, outer)
    sch.vectorize(sch.get_loops(init)[-1])
    _annotate_unroll(sch, outer, default_unroll, knobs.tunable)
    prefetch = prefetches and not m_inner and bool(_prefetch(sch, choices, knobs))
    rows_inside = rows_inside_kernel and bool(m_inner)
    sch.tensorize(row_loops[1] if count > 1 else inner, _intrin(intrin_for, spec, chunk, count, prefetch, rows_inside))


def _prefetch(sch: s_tir.Schedule, choices: dict, knobs: Knobs) -> int:
    """The prefetch decision: a structural choice for M = 1, else :data:`DEFAULT_PREFETCH`."""
    return choose(sch, "prefetch", [0, 1], DEFAULT_PREFETCH, knobs) if "prefetch" in choices else DEFAULT_PREFETCH


def _annotate_unroll(sch: s_tir.Schedule, loop: s_tir.LoopRV, default: int, tunable: bool) -> None:
    """Auto-unroll the chunk loop by a sampled step (0: none); the sample stays in the trace."""
    probs = [1.0 / len(UNROLL_CANDIDATES)] * len(UNROLL_CANDIDATES)
    decision = None if tunable else UNROLL_CANDIDATES.index(default)
    step = sch.sample_categorical(list(UNROLL_CANDIDATES), probs, decision=decision)
    sch.annotate(loop, "pragma_auto_unroll_max_step", step)
    sch.annotate(loop, "pragma_unroll_explicit", 1)


def _parallel_tiles(sch: s_tir.Schedule, tile: s_tir.LoopRV, tunable: bool) -> s_tir.LoopRV:
    """Split the 32-row tiles into parallel tasks of ``inner`` consecutive tiles (the N tile).

    Default: one tile per task; TVM's pool hands each thread a contiguous range anyway.
    """
    extent = int(sch.get(tile).extent)
    decision = None if tunable else [extent, 1]
    factors = sch.sample_perfect_tile(tile, n=2, max_innermost_factor=8, decision=decision)
    outer, _ = sch.split(tile, factors)
    return outer


def _epilogue_block(sch: s_tir.Schedule) -> s_tir.SBlockRV:
    """``y_pad`` when N is not a multiple of 32 or there is a bias (a block ``y`` follows), else ``y``."""
    return sch.get_sblock(PADDED_OUTPUT_BLOCK if PADDED_OUTPUT_BLOCK in block_names(sch) else OUTPUT_BLOCK)


def _crop_at(sch: s_tir.Schedule, tile: s_tir.LoopRV) -> None:
    """Move the crop (and bias) block into the tile loop, so each tile writes its own rows."""
    if PADDED_OUTPUT_BLOCK in block_names(sch):
        sch.reverse_compute_at(sch.get_sblock(OUTPUT_BLOCK), tile)
