"""``GroupQueryAttention``'s windowed KV cache (``sliding_window_cache=1``, Gemma-2/3's local layers).

The past and present buffers hold ``C`` rows (the capacity, the past's sequence dimension) where
a concatenated cache holds every position. With ``W = local_window_size`` (``C >= W``) and ``T``
the positions seen after the step (``total_sequence_length``, equal to ``seqlens_k + 1`` in every
row), rows ``[0, L(T))`` of the present hold the ``L(T)`` latest positions in order, and the rest
is unspecified (ORT's operator description)::

    G = C - W + 1
    L(T) = T                          if T <= C
    L(T) = T - G * ceil((T - C) / G)  otherwise

A step of ``S`` tokens follows ``P = T - S`` positions, ``L(P)`` of them resident in the past.
lutc attends over ``concat(past, new)`` (``C + S`` rows) with each row's absolute position and a
mask that keeps the rows a query may see (resident, not after it, within its last ``W``), then
gathers the present's rows from the same concatenation. The positions are data: ``T`` is an input
value, not a shape, so one compiled step serves every length.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax, tirx

from ..errors import ModelError
from .relax_util import arange, dims, shared


def _scalar(bb: relax.BlockBuilder, value) -> relax.Expr:
    """An int64 ``[1]`` tensor of a shape value (a dim) or of a scalar tensor."""
    if isinstance(value, int) or tvm.ir.is_prim_expr(value):
        return bb.normalize(relax.op.shape_to_tensor(relax.ShapeExpr([value])))
    return bb.normalize(relax.op.reshape(relax.op.astype(value, "int64"), [1]))


def _const(value: int) -> relax.Expr:
    return relax.const(value, "int64")


@dataclass(frozen=True)
class WindowedRows:
    """The rows of one windowed step: which of ``concat(past, new)`` each query may see
    (``visible [S, C + S]``) and which of them the present keeps (``kept [C]``, indices)."""

    visible: relax.Expr
    kept: relax.Expr
    start: relax.Expr
    """The step's first position ``P = T - S`` (int64 ``[1]``): where rotary starts."""


def _resident(bb: relax.BlockBuilder, seen: relax.Expr, capacity: relax.Expr, window: int) -> relax.Expr:
    """``L(seen)``: how many of ``seen`` positions the cache holds (module docstring)."""
    reclaim = bb.normalize(relax.op.subtract(capacity, _const(window - 1)))
    over = relax.op.subtract(seen, capacity)
    rounds = relax.op.floor_divide(relax.op.add(over, relax.op.subtract(reclaim, _const(1))), reclaim)
    evicted = bb.normalize(relax.op.subtract(seen, relax.op.multiply(reclaim, rounds)))
    return bb.normalize(relax.op.where(relax.op.less_equal(seen, capacity), seen, evicted))


def _rows(bb: relax.BlockBuilder, total: relax.Expr, capacity, seq, window: int) -> WindowedRows:
    cap, steps = _scalar(bb, capacity), _scalar(bb, seq)
    seen = _scalar(bb, total)
    before = bb.normalize(relax.op.subtract(seen, steps))
    held_before, held_after = _resident(bb, before, cap, window), _resident(bb, seen, cap, window)
    rows = arange(bb, capacity + seq)
    oldest = bb.normalize(relax.op.subtract(before, held_before))  # position of row 0 of the past
    in_past = bb.normalize(relax.op.less(rows, cap))
    positions = bb.normalize(
        relax.op.where(in_past, relax.op.add(oldest, rows), relax.op.subtract(relax.op.add(before, rows), cap))
    )
    resident = bb.normalize(relax.op.logical_or(relax.op.logical_not(in_past), relax.op.less(rows, held_before)))
    queries = bb.normalize(relax.op.expand_dims(relax.op.add(before, arange(bb, seq)), axis=1))
    keys = bb.normalize(relax.op.expand_dims(positions, axis=0))
    seen_by = relax.op.logical_and(
        relax.op.less_equal(keys, queries), relax.op.greater(keys, relax.op.subtract(queries, _const(window)))
    )
    visible = bb.normalize(relax.op.logical_and(seen_by, relax.op.expand_dims(resident, axis=0)))
    latest = bb.normalize(relax.op.add(relax.op.subtract(seen, held_after), arange(bb, capacity)))
    source = relax.op.where(
        relax.op.less(latest, before),
        relax.op.subtract(latest, oldest),
        relax.op.add(cap, relax.op.subtract(latest, before)),
    )
    last = relax.op.subtract(relax.op.add(cap, steps), _const(1))
    kept = bb.normalize(relax.op.minimum(relax.op.maximum(source, _const(0)), last))
    return WindowedRows(visible, kept, before)


def windowed_rows(bb: relax.BlockBuilder, total: relax.Expr, past: relax.Expr, seq, window: int) -> WindowedRows:
    """The rows of a windowed step of ``seq`` tokens over ``past [B, N_kv, C, H]`` reaching ``total``
    positions; bound once per graph (every windowed layer of a model has the same)."""
    capacity = dims(past)[2]
    if isinstance(capacity, tirx.IntImm) and int(capacity) < window:
        raise ModelError(f"GroupQueryAttention with sliding_window_cache=1 needs a cache of at least "
                         f"local_window_size={window} rows; the past holds {int(capacity)}")  # fmt: skip
    key = ("windowed rows", capacity, seq, window)
    return shared(bb, key, lambda: _rows(bb, total, capacity, seq, window))


def masked_by(bb: relax.BlockBuilder, rows: WindowedRows, masked: float):
    """The score mask of a windowed step: hidden rows get ``masked``."""
    return lambda scores: bb.normalize(relax.op.where(rows.visible, scores, relax.const(masked, "float32")))


def present_of(bb: relax.BlockBuilder, rows: WindowedRows, combined: relax.Expr) -> relax.Expr:
    """The present buffer ``[B, N_kv, C, H]``: the kept rows of ``combined = concat(past, new)``."""
    return bb.normalize(relax.op.take(combined, rows.kept, axis=2))


def check_uniform_rows(bb: relax.BlockBuilder, seqlens_k: relax.Expr, total: relax.Expr) -> None:
    """Have the VM check that every batch row has seen ``total`` positions (``seqlens_k + 1``):
    lutc keeps one layout for the batch. Shape ``match_cast``s, as the concatenated cache's check."""
    seen = bb.normalize(relax.op.tensor_to_shape(_scalar(bb, total)))
    length = tirx.Var("window_total", "int64")
    bb.match_cast(seen, relax.ShapeType([length]))
    one = _const(1)
    for reduce in (relax.op.min, relax.op.max):
        rows = bb.normalize(relax.op.add(relax.op.astype(reduce(seqlens_k, keepdims=True), "int64"), one))
        bb.match_cast(bb.normalize(relax.op.tensor_to_shape(rows)), relax.ShapeType([length]))
