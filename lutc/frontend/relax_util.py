"""Small Relax building blocks the contrib-op converters share."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import tvm
from tvm import relax


def dims(expr: relax.Expr) -> list:
    """The shape of a tensor expression: ints and symbolic dims."""
    return list(expr.ty.shape.values)


def arange(bb: relax.BlockBuilder, length, start=0) -> relax.Expr:
    """``start, start + 1, ..., start + length - 1`` as int64."""
    return bb.normalize(relax.op.arange(start, start + length, 1, "int64"))


def item(bb: relax.BlockBuilder, parts: relax.Expr, index: int) -> relax.Expr:
    """Element ``index`` of a tuple expression."""
    return bb.normalize(relax.TupleGetItem(parts, index))


def heads_first(bb: relax.BlockBuilder, x: relax.Expr, heads: int, head_size: int) -> relax.Expr:
    """``[B, S, heads * head_size]`` as ``[B, heads, S, head_size]``."""
    batch, seq = dims(x)[:2]
    split = bb.normalize(relax.op.reshape(x, (batch, seq, heads, head_size)))
    return bb.normalize(relax.op.permute_dims(split, [0, 2, 1, 3]))


def heads_last(bb: relax.BlockBuilder, x: relax.Expr) -> relax.Expr:
    """``[B, N, S, H]`` as ``[B, S, N * H]``."""
    batch, heads, seq, head_size = dims(x)
    merged = bb.normalize(relax.op.permute_dims(x, [0, 2, 1, 3]))
    return bb.normalize(relax.op.reshape(merged, (batch, seq, heads * head_size)))


_SHARED: contextvars.ContextVar[list | None] = contextvars.ContextVar("lutc_shared_values", default=None)
"""What :func:`shared` keeps for the import running in this thread (:func:`sharing_values`)."""


def _same(a, b) -> bool:
    if isinstance(a, tvm.runtime.Object) or isinstance(b, tvm.runtime.Object):
        return isinstance(a, tvm.runtime.Object) and isinstance(b, tvm.runtime.Object) and a.same_as(b)
    return a == b


def shared(bb: relax.BlockBuilder, key: tuple, make: Callable[[], object]):
    """``make()``, or what it returned for an equal ``key`` (exprs compared by identity) earlier in
    this block builder and import: values every layer of a model computes alike (rotary rows, the
    causal mask, the cache check) are bound once, not once per layer. Outside
    :func:`sharing_values`, always ``make()``."""
    entries = _SHARED.get()
    if entries is None:
        return make()
    for seen_bb, seen, value in entries:
        if seen_bb.same_as(bb) and len(seen) == len(key) and all(_same(a, b) for a, b in zip(seen, key, strict=True)):
            return value
    value = make()
    entries.append((bb, key, value))
    return value


@contextlib.contextmanager
def sharing_values() -> Iterator[None]:
    """Scope of one import's :func:`shared` values: this thread's, dropped at the end (builds in
    other threads keep their own)."""
    token = _SHARED.set([])
    try:
        yield
    finally:
        _SHARED.reset(token)
