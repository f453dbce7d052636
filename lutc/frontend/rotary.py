"""Rotary position embeddings: ORT's ``RotaryEmbedding`` and the rotation ``GroupQueryAttention``
applies with ``do_rotary=1``. Caches are ``[max_positions, rotary_dim / 2]``; a rotation is either
half-split (GPT-NeoX, Llama) or interleaved (GPT-J) pairs."""

from __future__ import annotations

from dataclasses import dataclass

from tvm import relax

from ..errors import ModelError
from .relax_util import arange, dims, heads_first, item


def _rotate(bb: relax.BlockBuilder, x: relax.Expr, cos: relax.Expr, sin: relax.Expr, interleaved: bool) -> relax.Expr:
    """Rotary embedding of ``x`` ``[..., rotary_dim]`` by ``cos``/``sin`` ``[..., rotary_dim / 2]``."""
    shape = dims(x)
    half = int(shape[-1]) // 2
    if interleaved:
        pairs = bb.normalize(relax.op.reshape(x, [*shape[:-1], half, 2]))
        parts = bb.normalize(relax.op.split(pairs, 2, axis=-1))
        even, odd = (bb.normalize(relax.op.squeeze(item(bb, parts, i), axis=[-1])) for i in range(2))
    else:
        parts = bb.normalize(relax.op.split(x, 2, axis=-1))
        even, odd = item(bb, parts, 0), item(bb, parts, 1)
    first = relax.op.subtract(relax.op.multiply(even, cos), relax.op.multiply(odd, sin))
    second = relax.op.add(relax.op.multiply(odd, cos), relax.op.multiply(even, sin))
    if interleaved:
        stacked = bb.normalize(relax.op.stack([first, second], axis=-1))
        return bb.normalize(relax.op.reshape(stacked, shape))
    return bb.normalize(relax.op.concat([first, second], axis=-1))


def positions_from(bb: relax.BlockBuilder, position_ids: relax.Expr | None, batch, seq, offset=0) -> relax.Expr:
    """Positions ``[B, S]``: a 2-D ``position_ids``, ``start + arange(S)`` from a 1-element one, or
    ``offset + arange(S)`` where there is none."""
    if position_ids is not None and len(dims(position_ids)) == 2:
        return bb.normalize(relax.op.astype(position_ids, "int64"))
    steps = bb.normalize(relax.op.expand_dims(arange(bb, seq, offset), axis=0))
    if position_ids is not None:
        steps = relax.op.add(steps, bb.normalize(relax.op.astype(position_ids, "int64")))
    return bb.normalize(relax.op.broadcast_to(steps, relax.ShapeExpr([batch, seq])))


def _cache_rows(bb: relax.BlockBuilder, cache: relax.Expr, positions: relax.Expr, half: int) -> relax.Expr:
    """``cache[positions, :half]`` as ``[B, 1, S, half]``, broadcasting over heads."""
    rows = relax.op.take(relax.op.strided_slice(cache, [1], [0], [half]), positions, axis=0)
    return bb.normalize(relax.op.expand_dims(rows, axis=1))


@dataclass(frozen=True)
class Rotation:
    """How to rotate: ``cos``/``sin`` rows ``[B, 1, S, dim / 2]`` (:func:`rotary_rows`), the channels
    rotated and the pair layout."""

    cos: relax.Expr
    sin: relax.Expr
    dim: int
    interleaved: bool


def rotary_rows(bb: relax.BlockBuilder, positions: relax.Expr, cos_cache: relax.Expr, sin_cache: relax.Expr, dim: int):
    """The caches' rows at ``positions [B, S]``, as ``[B, 1, S, dim / 2]`` each."""
    return tuple(_cache_rows(bb, cache, positions, dim // 2) for cache in (cos_cache, sin_cache))


def rotate_heads(bb: relax.BlockBuilder, per_head: relax.Expr, rotation: Rotation) -> relax.Expr:
    """``per_head`` ``[B, N, S, H]`` with its first ``rotation.dim`` channels rotated."""
    cos, sin = rotation.cos, rotation.sin
    if rotation.dim == int(dims(per_head)[3]):
        return _rotate(bb, per_head, cos, sin, rotation.interleaved)
    parts = bb.normalize(relax.op.split(per_head, [rotation.dim], axis=-1))
    rotated = _rotate(bb, item(bb, parts, 0), cos, sin, rotation.interleaved)
    return bb.normalize(relax.op.concat([rotated, item(bb, parts, 1)], axis=-1))


def rotary_embedding(bb: relax.BlockBuilder, inputs: list, attrs: dict) -> relax.Expr:
    """ORT ``RotaryEmbedding`` on ``[B, S, hidden]`` or ``[B, N, S, H]``, half-split or interleaved."""
    for name, default in (("is_packed_batching", 0), ("scale", 1.0)):
        if float(attrs.get(name, default)) != default:
            raise ModelError(f"RotaryEmbedding with {name}={attrs[name]} is not supported")
    x, position_ids, cos_cache, sin_cache = inputs[:4]
    shape = dims(x)
    rotary_dim = int(attrs.get("rotary_embedding_dim", 0)) or 2 * int(dims(cos_cache)[1])
    if len(shape) == 3:
        batch, seq, hidden = shape
        heads = int(attrs.get("num_heads", 0)) or int(hidden) // rotary_dim
        per_head = heads_first(bb, x, heads, int(hidden) // heads)
    elif len(shape) == 4:
        batch, _, seq, _ = shape
        per_head = x
    else:
        raise ModelError(f"RotaryEmbedding input of rank {len(shape)} is not supported (3 or 4)")
    positions = positions_from(bb, position_ids, batch, seq)
    cos, sin = rotary_rows(bb, positions, cos_cache, sin_cache, rotary_dim)
    out = rotate_heads(bb, per_head, Rotation(cos, sin, rotary_dim, bool(attrs.get("interleaved", 0))))
    if len(shape) == 3:
        out = bb.normalize(relax.op.reshape(relax.op.permute_dims(out, [0, 2, 1, 3]), shape))
    return out
