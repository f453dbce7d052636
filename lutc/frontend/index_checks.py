"""Runtime bounds checks for gather indices computed from the model's inputs.

TVM's ``take`` and ``gather_nd`` read out of bounds for an index outside the data (garbage
results, or a crash); ONNX Runtime raises. This happens with valid-looking calls: a
``Dim.AUTO`` dynamo export gives ``input_ids[s72, s53]`` and ``attention_mask[s43, s53]``
independent batch symbols, and a call with batch 2 and mask batch 1 makes a ``GatherND``
index 1 on an axis of size 1. A gather whose indices are not constants gets a small
``check_indices`` kernel in front: it copies the indices and stops the call with
``ValueError`` naming the node, the axis and the allowed range when one is out of bounds
(:class:`lutc.CompiledModel` turns it into an ``InputError``). Constant indices are checked
when the model is imported.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, tirx

from ..errors import ModelError

CHECK_KERNEL = "lutc_check_indices"


def _check_func(rank: int, dtype: str, message: str) -> tirx.PrimFunc:
    """``checked[i, j] = indices[i, j]`` for ``indices[n, rank]``, asserting ``-d_j <= indices[i, j] < d_j``.

    Written as TVMScript: 0.27's Python ``PrimFunc``/``AssertStmt`` constructors bind no buffers.
    """
    dims, dtype = ", ".join(f"d{j}: T.int64" for j in range(rank)), str(dtype)
    checks = "".join(
        f"                value = T.Cast('int64', indices[vi, {j}])\n"
        f"                assert -d{j} <= value and value < d{j}, ('ValueError', [{message.format(axis=j)!r}])\n"
        f"                checked[vi, {j}] = indices[vi, {j}]\n"
        for j in range(rank)
    )
    source = (
        "@T.prim_func(s_tir=True)\n"
        f"def main(var_indices: T.handle, {dims}, var_checked: T.handle):\n"
        "    T.func_attr({'tirx.is_scheduled': True, 'tirx.noalias': True})\n"
        "    n = T.int64()\n"
        f"    indices = T.match_buffer(var_indices, (n, {rank}), {dtype!r})\n"
        f"    checked = T.match_buffer(var_checked, (n, {rank}), {dtype!r})\n"
        "    with T.sblock('root'):\n"
        "        for i in range(n):\n"
        "            with T.sblock('check'):\n"
        "                vi = T.axis.spatial(n, i)\n"
        f"                T.reads(indices[vi, 0:{rank}])\n"
        f"                T.writes(checked[vi, 0:{rank}])\n" + checks
    )
    return tvm.script.from_source(source).without_attr("global_symbol")


def _constant(expr: relax.Expr) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, tvm.ir.GenericConst) else None


def checked_indices(
    bb: relax.BlockBuilder, indices: relax.Expr, dims: list[tirx.PrimExpr], node: str, op: str
) -> relax.Expr:
    """``indices`` (last axis of length ``len(dims)``, each entry bounded by its dim) with a
    runtime bounds check in front; constant indices are checked now (:class:`ModelError`)."""
    constant = _constant(indices)
    static = [int(d) if isinstance(d, tirx.IntImm) else None for d in dims]
    if constant is not None and None not in static:
        bound = np.array(static).reshape((1,) * (constant.ndim - 1) + (-1,)) if constant.ndim else np.array(static)
        if np.any(constant < -bound) or np.any(constant >= bound):
            raise ModelError(f"{op} node {node!r}: constant indices fall outside the data's dims {static}")
        return indices
    ty = indices.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None or str(ty.dtype) not in ("int32", "int64"):
        return indices
    shape = list(ty.shape.values)
    message = f"{op} node {node!r}: index out of range on indexed axis {{axis}} (a call whose inputs disagree?)"
    func = bb.add_func(_check_func(len(dims), ty.dtype, message), CHECK_KERNEL)
    flat = bb.normalize(relax.op.reshape(indices, [-1, len(dims)]))
    rows = flat.ty.shape.values[0]
    args = [flat, *(relax.prim_value(d) for d in dims)]  # Relax dims are int64 scalars
    checked = bb.emit(relax.call_tir(func, args, relax.TensorType((rows, len(dims)), ty.dtype)))
    return bb.normalize(relax.op.reshape(checked, shape))
