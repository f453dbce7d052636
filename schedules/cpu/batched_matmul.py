"""BatchedMatmul: an activation-by-activation ``matmul`` (attention's scores and context) on LLVM CPUs.

TVM legalizes ``R.matmul`` of two activations into one block ``C[b..., i, j] += A[b..., i, k] *
B[b..., k, j]`` with the reduction innermost: per output one dot product down a column of
``B``, a strided scalar chain (12.6 µs for the context matmul of one 9-head decode step at 41
cached positions). This rule moves the reduction out of the innermost spatial loop, so the
inner loop streams a row of ``B`` into a row of ``C`` (a saxpy) that LLVM's loop vectorizer
takes, static or dynamic (the past length). The output starts from zero in its own loop
(``decompose_reduction``, before the reorder: TVM refuses to reorder a reduction block over a
dynamic ``k``; after it, TVM's ``vectorize`` refuses the update block, hence LLVM's).
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
    """``C[..., i, j] += A[..., i, k] * B[..., k, j]`` with the reduction loop out of the inner loop."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        if len(blocks) != 1 or not _is_batched_matmul(sch.get(blocks[0])):
            return None
        block = blocks[0]
        sch.decompose_reduction(block, sch.get_loops(block)[-2])  # first: reordering a dynamic k fails
        *_, j, k = sch.get_loops(block)
        sch.reorder(k, j)
        return sch


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
