"""FloatMatmul: register-blocked float32 ``matmul``/``dense`` kernels for LLVM CPUs (a dlight rule).

It takes the PrimFunc TVM legalizes ``R.matmul`` into, ``C[m, n] = sum_k A[m, k] * B[k, n]``
with static K and N and static or dynamic M, plus at most one fused injective epilogue (bias
add, activation). Loops, outer to inner::

    n_tile (parallel) / m_tile / k / m_row (unrolled) / n_vector (unrolled) / lane (vectorized)

The ``rows x cols`` accumulator tile lives in registers (``cache_write``); the epilogue is
inlined into the tile's write-back. With a static M of at least ``rows`` the tile has
:data:`~lutc.schedules.hw.FLOAT_TILE_ROWS` rows (``pad_einsum`` pads a ragged M); otherwise
(M = 1 decode, or a dynamic M) it has one row and :data:`~lutc.schedules.hw.ROW_ACCUMULATORS`
vectors: a weight-streaming GEMV. When B is a layout-free buffer (a constant weight, as marked by
``relax.transform.AttachAttrLayoutFreeBuffers``), its layout becomes ``[N / cols, K, cols]`` in a
``meta_schedule.layout_rewrite_preproc`` block, which ``relax.transform.SplitLayoutRewritePreproc``
and ``FoldConstant`` run once at compile time: each tile then streams one contiguous panel.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.ir.expr import TensorLoad
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.analysis.gemv import get_reduction_expr
from tvm.s_tir.dlight.base import try_inline_contiguous_spatial
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target

from ..hw import FLOAT_TILE_ROWS, FLOAT_TILE_VECTORS, ROW_ACCUMULATORS, float_lanes, vector_registers

MARK = "lutc.float_matmul"
"""Annotation on the scheduled matmul block: the register tile, ``"<rows>x<cols>"`` (+ ``" packed"``)."""

PREPROC = "meta_schedule.layout_rewrite_preproc"
"""TVM's annotation of a weight layout rewrite that ``SplitLayoutRewritePreproc`` lifts out."""


@dataclass(frozen=True)
class Matmul:
    """What the rule needs to know about a recognized matmul block."""

    block: s_tir.schedule.SBlockRV
    m: int | tirx.Var
    n: int
    b_name: str
    epilogue: s_tir.schedule.SBlockRV | None


@dataclass(frozen=True)
class Tile:
    """The register tile: ``rows`` x ``vectors * lanes`` accumulators; B panels ``panel`` columns wide."""

    rows: int
    vectors: int
    lanes: int
    panel: int
    pad: bool

    @property
    def cols(self) -> int:
        return self.vectors * self.lanes


class FloatMatmul(CPUScheduleRule):
    """Register-blocked float32 matmul with a constant or variable ``B[K, N]`` (module docstring)."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        matmul = _recognize(sch)
        if matmul is None:
            return None
        tile = choose_tile(matmul.m, matmul.n, float_lanes(target), vector_registers(target))
        if tile is None:
            return None
        packed = _is_layout_free(func, matmul.b_name)
        _schedule(sch, matmul, tile, packed)
        return sch


def choose_tile(m: int | tirx.Var, n: int, lanes: int, registers: int) -> Tile | None:
    """The tile for an ``m x n`` output, or None when N is not a whole number of vectors."""
    if n % lanes:
        return None
    vectors = next(v for v in FLOAT_TILE_VECTORS if n % (v * lanes) == 0)
    rows = FLOAT_TILE_ROWS[registers]
    panel = vectors * lanes
    if isinstance(m, int) and m >= rows:
        return Tile(rows, vectors, lanes, panel, pad=m % rows != 0)
    panels = next(p for p in range(-(-ROW_ACCUMULATORS // vectors), 0, -1) if n % (p * panel) == 0)
    return Tile(1, vectors * panels, lanes, panel, pad=False)


def _recognize(sch: s_tir.Schedule) -> Matmul | None:
    """The matmul block ``C[m, n] += A[m, k] * B[k, n]`` (float32) and its epilogue, if that is the function.

    dlight's normalization drops a unit M: then the block is ``SR`` and indexes row 0. Unit
    leading (batch) dims index 0.
    """
    infos = normalize_prim_func(sch)
    infos = try_inline_contiguous_spatial(sch, infos) if infos is not None else None
    if not infos or len(infos) > 2 or (len(infos) == 2 and not infos[1].is_injective()):
        return None
    info = infos[0]
    if info.dom_kind() not in ("SSR", "SR") or not all(isinstance(d, int) for d in info.dom()[-2:]):
        return None
    block = sch.get(info.block_rv)
    iters = [it.var for it in info.iters]
    m_var, n_var, k_var = iters if len(iters) == 3 else (None, *iters)
    if not _is_product(block) or not _indexed(block.writes[0].region, (m_var, n_var)):
        return None
    if not (_indexed(block.reads[0].region, (m_var, k_var)) and _indexed(block.reads[1].region, (k_var, n_var))):
        return None
    epilogue = infos[1].block_rv if len(infos) == 2 else None
    m = info.dom()[0] if m_var is not None else 1
    return Matmul(info.block_rv, m, int(info.dom()[-2]), block.reads[1].source.name, epilogue)


def _is_product(block: s_tir.SBlock) -> bool:
    """The block adds the float32 product of its two reads to its float32 output."""
    expr = get_reduction_expr(block)
    if not isinstance(expr, tirx.Mul) or block.writes[0].source.dtype != "float32" or len(block.reads) != 2:
        return False
    return all(isinstance(x, TensorLoad) and x.source.dtype == "float32" for x in (expr.a, expr.b))


def _indexed(region, iter_vars) -> bool:
    """The region is the single point ``[0, ..., 0, v0, v1]`` of the block iter vars (``None``: index 0).

    Leading zeros are the unit batch dims of ``[1, seq, K] @ [K, N]``.
    """
    lead = len(region) - len(iter_vars)
    points = [(r, None) for r in region[:lead]] + list(zip(region[lead:], iter_vars, strict=True))
    return lead >= 0 and all(int(r.extent) == 1 and _is_point(r.min, v) for r, v in points)


def _is_point(index, var) -> bool:
    return _is_zero(index) if var is None else isinstance(index, tirx.Var) and index.same_as(var)


def _is_zero(expr) -> bool:
    return isinstance(expr, tirx.IntImm) and int(expr) == 0


def _is_layout_free(func: tirx.PrimFunc, b_name: str) -> bool:
    """B is a parameter listed in the ``layout_free_buffers`` attribute (a constant weight)."""
    free = func.attrs.get("layout_free_buffers", []) if func.attrs else []
    return any(func.params[int(i)].name == b_name for i in free)


def _schedule(sch: s_tir.Schedule, mm: Matmul, tile: Tile, packed: bool) -> None:
    block = mm.block
    pads = _pad_rows(sch, block, tile.rows) if tile.pad else None
    if packed:
        _pack_weight(sch, block, tile.panel)
    *i, j, k = sch.get_loops(block)
    j_tile, j_in = sch.split(j, [None, tile.cols])
    if i:
        i_tile, i_in = sch.split(i[0], [None, tile.rows])
        sch.reorder(j_tile, i_tile, k, i_in, j_in)
        sch.unroll(i_in)
    else:
        sch.reorder(j_tile, k, j_in)
        i_tile = sch.add_unit_loop(k)
    j_vec, lane = sch.split(j_in, [None, tile.lanes])
    sch.unroll(j_vec)
    sch.vectorize(lane)
    sch.annotate(block, MARK, f"{tile.rows}x{tile.cols}" + (" packed" if packed else ""))
    write_back = sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(write_back, i_tile)
    last = write_back
    if pads is not None:
        sch.compute_at(pads[0], i_tile)
        sch.reverse_compute_at(pads[1], i_tile)
        last = pads[1]
    if mm.epilogue is not None:
        sch.reverse_compute_inline(mm.epilogue)
    for stage in dict.fromkeys([write_back, last]):
        _vectorize_rows(sch, stage, tile.lanes)
    sch.parallel(j_tile)
    init = sch.decompose_reduction(block, k)
    for loop in sch.get_loops(init)[-2:]:
        sch.unroll(loop)


def _pad_rows(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, rows: int) -> tuple:
    """Pad M to a multiple of ``rows``: the (A pad, C unpad) blocks ``pad_einsum`` adds."""
    sch.pad_einsum(block, [rows, 1, 1])
    return sch.get_producers(block)[0], sch.get_consumers(block)[0]


def _pack_weight(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, panel: int) -> None:
    """B[k, n] -> B[n / panel, k, n % panel], in a block SplitLayoutRewritePreproc lifts out."""
    copy = sch.cache_read(block, 1, "global")
    sch.transform_layout(copy, ("write", 0), lambda k, n: (n // panel, k, n % panel))
    sch.annotate(copy, PREPROC, True)


def _vectorize_rows(sch: s_tir.Schedule, stage: s_tir.schedule.SBlockRV, lanes: int) -> None:
    """The innermost (column) loop of a tile stage in vectors of ``lanes``."""
    column = sch.get_loops(stage)[-1]
    _, lane = sch.split(column, [None, lanes])
    sch.vectorize(lane)
