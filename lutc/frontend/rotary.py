"""Rotary position embeddings: ORT's ``RotaryEmbedding`` and the rotation ``GroupQueryAttention``
applies with ``do_rotary=1``. Caches are ``[max_positions, rotary_dim / 2]``; a rotation is either
half-split (GPT-NeoX, Llama) or interleaved (GPT-J) pairs.

A cache's rows are the model's position limit: TVM's ``take`` reads past them (garbage), ONNX
Runtime refuses. So every read of the caches is checked first, and a position outside them stops
the call with ``ValueError`` naming the node and the limit (:class:`lutc.CompiledModel` turns it
into an ``InputError``), by TIR asserts (``relax.op.assert_op`` runs a Python callback that raises
``AssertionError`` and that a runtime-only or remote VM lacks):

- where shapes give the positions (GQA without ``position_ids``: past .. past + S - 1), a host
  function of those shape values, ``lutc_check_position_range``, reading no tensor (so a CUDA
  build runs it on the host as well); the 0 it returns is added to the positions the rows are
  taken at, so the data depends on the check and no pass drops it (an unused call would be);
- else a kernel copying the positions and asserting each one, ``lutc_check_positions`` (like
  :mod:`lutc.frontend.index_checks`' gather checks, which it cannot reuse: they allow negative
  indices and name no limit). On a CUDA build it runs on the host, as those do.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax, te, tirx

from ..errors import ModelError
from .relax_util import arange, dims, heads_first, item

RANGE_CHECK = "lutc_check_position_range"
VALUE_CHECK = "lutc_check_positions"
OFFSET_KERNEL = "lutc_checked_positions"


@dataclass(frozen=True)
class PositionReader:
    """Who reads the caches, for the error a position past them raises: the op, the node and what
    the caller may change (``past + new tokens must be at most 128``)."""

    op: str
    node: str
    rule: str = "position_ids must lie in [0, {rows})"

    def message(self, cache: str, rows) -> str:
        if not isinstance(rows, tirx.IntImm | int):
            return f"{self.op} node {self.node!r} reads a position past its {cache}'s rows (the model's position limit)"
        limit = int(rows)
        return (f"{self.op} node {self.node!r} reads a position outside [0, {limit}) but its {cache} holds {limit} "
                f"positions (the model's position limit): {self.rule.format(rows=limit)}")  # fmt: skip


def _range_check(message: str) -> tirx.PrimFunc:
    """A host function asserting ``0 <= first`` and ``last < rows``; it returns 0. TVMScript (the
    message is part of the code), with the root block and inner block lutc's CPU phases expect."""
    source = (
        "@T.prim_func(s_tir=True)\n"
        "def main(first: T.int64, last: T.int64, rows: T.int64) -> T.int64:\n"
        "    T.func_attr({'tirx.is_scheduled': True})\n"  # no loops: nothing for a schedule rule
        "    with T.sblock('root'):\n"
        "        with T.sblock('check'):\n"
        f"            assert T.int64(0) <= first and last < rows, ('ValueError', [{message!r}])\n"
        "            return T.int64(0)\n"
    )
    return tvm.script.from_source(source).without_attr("global_symbol")


def _offset_kernel() -> tirx.PrimFunc:
    """``out[b, s] = positions[b, s] + offset`` on int64 ``[B, S]``."""
    batch, seq, offset = tirx.Var("batch", "int64"), tirx.Var("seq", "int64"), tirx.Var("offset", "int64")
    positions = te.placeholder((batch, seq), "int64", "positions")
    out = te.compute((batch, seq), lambda b, s: positions[b, s] + offset, name="checked_positions")
    return te.create_prim_func([positions, offset, out]).without_attr("global_symbol")


def _value_check(message: str) -> tirx.PrimFunc:
    """``checked[b, s] = positions[b, s]`` for int64 ``[B, S]``, asserting ``0 <= positions[b, s] < rows``."""
    source = (
        "@T.prim_func(s_tir=True)\n"
        "def main(var_positions: T.handle, rows: T.int64, var_checked: T.handle):\n"
        "    T.func_attr({'tirx.is_scheduled': True, 'tirx.noalias': True})\n"
        "    b, s = T.int64(), T.int64()\n"
        "    positions = T.match_buffer(var_positions, (b, s), 'int64')\n"
        "    checked = T.match_buffer(var_checked, (b, s), 'int64')\n"
        "    with T.sblock('root'):\n"
        "        for i, j in T.grid(b, s):\n"
        "            with T.sblock('check'):\n"
        "                vi, vj = T.axis.remap('SS', [i, j])\n"
        "                T.reads(positions[vi, vj])\n"
        "                T.writes(checked[vi, vj])\n"
        "                value = positions[vi, vj]\n"
        f"                assert T.int64(0) <= value and value < rows, ('ValueError', [{message!r}])\n"
        "                checked[vi, vj] = value\n"
    )
    return tvm.script.from_source(source).without_attr("global_symbol")


def _int64(value) -> tirx.PrimExpr:
    return tirx.IntImm("int64", value) if isinstance(value, int) else value


def checked_positions(
    bb: relax.BlockBuilder, positions: relax.Expr, caches: tuple, reader: PositionReader, span=None
) -> relax.Expr:
    """``positions [B, S]`` (int64) behind a check that each is a row of both ``caches`` (cos,
    sin): of ``span`` (the first and last position, where shapes give them), else of the values.
    Only the caches' static shapes are read, never their values."""
    rows = [dims(cache)[0] for cache in caches]
    static = [int(r) if isinstance(r, tirx.IntImm) else None for r in rows]
    which = 1 if None not in static and static[1] < static[0] else 0
    message = reader.message(("cos_cache", "sin_cache")[which], rows[which])
    limit = relax.prim_value(_int64(rows[which]))
    if span is None:
        check = bb.add_func(_value_check(message), VALUE_CHECK)
        return bb.emit(relax.call_tir(check, [positions, limit], positions.ty))
    check = bb.add_func(_range_check(message), RANGE_CHECK)
    zero = bb.emit(relax.Call(check, [*(relax.prim_value(_int64(v)) for v in span), limit]))
    return bb.emit(relax.call_tir(bb.add_func(_offset_kernel(), OFFSET_KERNEL), [positions, zero], positions.ty))


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


def rotary_rows(
    bb: relax.BlockBuilder, positions: relax.Expr, caches: tuple, dim: int, reader: PositionReader, span=None
) -> tuple:
    """The caches' (cos, sin) rows at ``positions [B, S]``, as ``[B, 1, S, dim / 2]`` each, behind
    :func:`checked_positions` (``span``: the first and last position where shapes give them)."""
    positions = checked_positions(bb, positions, caches, reader, span)
    return tuple(_cache_rows(bb, cache, positions, dim // 2) for cache in caches)


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
    reader = PositionReader("RotaryEmbedding", attrs["tvm_custom"]["name"])
    if len(dims(position_ids)) != 2:
        reader = PositionReader(reader.op, reader.node, "position_ids + sequence length must be at most {rows}")
    cos, sin = rotary_rows(bb, positions, (cos_cache, sin_cache), rotary_dim, reader)
    out = rotate_heads(bb, per_head, Rotation(cos, sin, rotary_dim, bool(attrs.get("interleaved", 0))))
    if len(shape) == 3:
        out = bb.normalize(relax.op.reshape(relax.op.permute_dims(out, [0, 2, 1, 3]), shape))
    return out
