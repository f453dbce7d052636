"""BatchedMatmul: an activation-by-activation ``matmul`` (attention's scores and context) on LLVM CPUs.

TVM legalizes ``R.matmul`` of two activations into one block ``C[b..., i, j] += A[b..., i, k] *
B[b..., k, j]`` with the reduction innermost: per output one dot product down a column of
``B``, a strided scalar chain (12.6 µs for the context matmul of one 9-head decode step at 41
cached positions). This rule moves the reduction out of the innermost spatial loop, so the
inner loop streams a row of ``B`` into a row of ``C`` (a saxpy) that LLVM's loop vectorizer
takes, static or dynamic (the past length). The output starts from zero in its own loop
(``decompose_reduction``, before the reorder: TVM refuses to reorder a reduction block over a
dynamic ``k``; after it, TVM's ``vectorize`` refuses the update block, hence LLVM's).

``FuseOps`` fuses attention's scale and mask into the scores matmul (``fused_matmul_multiply_add``:
``Q·Kᵀ * scale + mask``, in BERT, GPT-2 and the dynamo exports). The rule takes such an injective
epilogue too: its blocks are inlined into the last one, which runs per row right after that
row's products (``reverse_compute_at``), while the row is in cache. Left to TVM's loops, that
kernel took 4.4 ms of a 1 x 128 BERT call's 24 ms (the context matmul beside it: 0.11 ms).
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.ir.expr import TensorLoad
from tvm.s_tir.dlight.analysis.gemv import get_reduction_expr
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target

SPATIAL, REDUCE = 0, 2
"""``IterVar.iter_type`` of data-parallel and commutative-reduction block iterators."""


class BatchedMatmul(CPUScheduleRule):
    """``C[..., i, j] += A[..., i, k] * B[..., k, j]`` with the reduction loop out of the inner loop,
    then an optional injective epilogue per row ``i`` (module docstring)."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        if not blocks or not _is_batched_matmul(sch.get(blocks[0])):
            return None
        if not all(_is_spatial(sch.get(b)) for b in blocks[1:]):
            return None
        row = _reorder_matmul(sch, blocks[0])
        if len(blocks) > 1:
            try:
                _epilogue_per_row(sch, blocks[1:], row)
            except s_tir.ScheduleError:  # an epilogue that cannot follow a row: left where it is
                sch = s_tir.Schedule(func)
                _reorder_matmul(sch, sch.get_child_blocks(sch.get_sblock("root"))[0])
        return sch


def _reorder_matmul(sch: s_tir.Schedule, block: s_tir.SBlockRV) -> s_tir.LoopRV:
    """Zero-fill loop first, then ``k`` out of ``j``; returns the row loop ``i``."""
    sch.decompose_reduction(block, sch.get_loops(block)[-2])  # first: reordering a dynamic k fails
    *_, i, j, k = sch.get_loops(block)
    sch.reorder(k, j)
    return i


def _epilogue_per_row(sch: s_tir.Schedule, blocks: list[s_tir.SBlockRV], row: s_tir.LoopRV) -> None:
    """Inline the epilogue chain into its last block and run that block under the row loop."""
    for block in blocks[:-1]:
        sch.compute_inline(block)
    sch.reverse_compute_at(blocks[-1], row)


def _is_spatial(block: s_tir.SBlock) -> bool:
    return all(int(iv.iter_type) == SPATIAL for iv in block.iter_vars)


def _is_batched_matmul(block: s_tir.SBlock) -> bool:
    """A float32 product block whose last two iterators are ``j`` (spatial) and ``k`` (reduction),
    with ``k, j`` the last two indices of its second read and ``j`` the last of its output."""
    iters = list(block.iter_vars)
    kinds = [int(iv.iter_type) for iv in iters]
    if len(iters) < 3 or kinds[-1] != REDUCE or any(kind != SPATIAL for kind in kinds[:-1]):
        return False
    expr = get_reduction_expr(block)
    if not isinstance(expr, tirx.Mul) or len(block.reads) != 2 or block.writes[0].source.dtype != "float32":
        return False
    if not all(isinstance(x, TensorLoad) and x.source.dtype == "float32" for x in (expr.a, expr.b)):
        return False
    j, k = iters[-2].var, iters[-1].var
    b_region, c_region = block.reads[1].region, block.writes[0].region
    return (
        len(b_region) >= 2
        and _is_var(b_region[-2].min, k)
        and _is_var(b_region[-1].min, j)
        and (_is_var(c_region[-1].min, j))
    )


def _is_var(index, var) -> bool:
    return isinstance(index, tirx.Var) and index.same_as(var)
