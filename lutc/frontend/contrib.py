"""lutc's converters for ONNX Runtime contrib ops (``com.microsoft``) where TVM 0.27's fall short.

TVM's ``Attention`` and ``EmbedLayerNormalization`` read every dim as a Python int (static
shapes only), and its ``Attention`` refuses the 1-D ``mask_index`` that ORT's own
``EmbedLayerNormalization`` produces, so a BERT run through ``onnxruntime.transformers.optimizer``
did not import. These follow ORT's contrib op specification (``docs/ContribOperators.md``) with
symbolic batch and sequence dims. Each converter takes ``(bb, inputs, attrs)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tvm import relax

from ..errors import ModelError

ContribConverter = Callable[[relax.BlockBuilder, list, dict], relax.Expr]

DEFAULT_MASK_FILTER = -10000.0
"""ORT's ``mask_filter_value`` default: added to the scores of masked keys."""


def _dims(expr: relax.Expr) -> list:
    return list(expr.ty.shape.values)


def _positions(bb: relax.BlockBuilder, length) -> relax.Expr:
    return bb.normalize(relax.op.arange(0, length, 1, "int64"))


def embed_layer_normalization(bb: relax.BlockBuilder, inputs: list, attrs: dict) -> relax.Expr:
    """Word + position (+ segment) embeddings, LayerNorm; ``mask_index`` = tokens per row (int32)."""
    input_ids, segment_ids, word_emb, pos_emb, segment_emb, gamma, beta, mask, pos_ids = (inputs[i] for i in range(9))
    batch, seq = _dims(input_ids)
    positions = pos_ids if pos_ids is not None else _positions(bb, seq)
    total = relax.op.add(relax.op.take(word_emb, input_ids, axis=0), relax.op.take(pos_emb, positions, axis=0))
    if segment_ids is not None:
        total = relax.op.add(total, relax.op.take(segment_emb, segment_ids, axis=0))
    total = bb.normalize(total)
    normed = relax.op.nn.layer_norm(total, gamma, beta, axes=-1, epsilon=attrs.get("epsilon", 1e-12))
    if mask is not None:
        mask_index = relax.op.astype(relax.op.sum(relax.op.astype(mask, "int32"), axis=1), "int32")
    else:
        mask_index = relax.op.zeros(relax.ShapeExpr([batch]), "int32")
    outputs = [normed, mask_index]
    if attrs["tvm_custom"]["num_outputs"] > 2:
        outputs.append(total)
    return relax.Tuple(outputs)


def _key_mask_bias(bb: relax.BlockBuilder, mask: relax.Expr, seq, total, filter_value: float) -> relax.Expr:
    """An additive bias broadcastable to the scores ``[B, N, S, T]`` from ORT's ``mask_index`` forms."""
    rank = len(_dims(mask))
    if rank == 1:  # valid key count per row (right padding); [2B] start/end form is not supported
        keys = bb.normalize(relax.op.expand_dims(_positions(bb, total), axis=0))
        lengths = bb.normalize(relax.op.expand_dims(bb.normalize(relax.op.astype(mask, "int64")), axis=1))
        valid = bb.normalize(relax.op.less(keys, lengths))
        bias = bb.normalize(relax.op.where(valid, relax.const(0.0), relax.const(filter_value)))
        return bb.normalize(relax.op.expand_dims(bias, axis=[1, 2]))
    if rank in (2, 3):
        kept = bb.normalize(relax.op.subtract(relax.const(1.0), bb.normalize(relax.op.astype(mask, "float32"))))
        bias = bb.normalize(relax.op.multiply(kept, relax.const(filter_value)))
        return bb.normalize(relax.op.expand_dims(bias, axis=[1, 2] if rank == 2 else [1]))
    raise ModelError(f"Attention mask_index of rank {rank} is not supported (ranks 1-3 are)")


def attention(bb: relax.BlockBuilder, inputs: list, attrs: dict) -> relax.Expr:
    """ORT ``Attention``: packed QKV projection, scaled dot-product attention, optional masks."""
    unsupported = sorted({"past_present_share_buffer", "do_rotary", "unidirectional"} & attrs.keys())
    if unsupported and any(attrs[name] for name in unsupported):
        raise ModelError(f"Attention with {', '.join(unsupported)} is not supported")
    if inputs[4] is not None or inputs[6] is not None:
        raise ModelError("Attention with a past key/value state is not supported")
    x, weight, bias, mask = inputs[0], inputs[1], inputs[2], inputs[3]
    heads = int(attrs["num_heads"])
    width = int(_dims(weight)[1])
    q_size, k_size, v_size = attrs.get("qkv_hidden_sizes", (width // 3,) * 3)
    batch, seq, hidden = _dims(x)
    rows = bb.normalize(relax.op.reshape(x, (batch * seq, hidden)))  # one 2-D matmul: a float GEMM rule applies
    qkv = bb.normalize(relax.op.matmul(rows, weight))
    qkv = bb.normalize(relax.op.add(qkv, bias) if bias is not None else qkv)
    qkv = bb.normalize(relax.op.reshape(qkv, (batch, seq, width)))
    parts = bb.normalize(relax.op.split(qkv, [q_size, q_size + k_size], axis=2))
    q, k, v = (bb.normalize(relax.TupleGetItem(parts, i)) for i in range(3))

    def heads_first(t: relax.Expr, size: int) -> relax.Expr:
        split = bb.normalize(relax.op.reshape(t, (batch, seq, heads, size // heads)))
        return bb.normalize(relax.op.permute_dims(split, [0, 2, 1, 3]))

    scale = attrs.get("scale", 1.0 / math.sqrt(q_size // heads))
    keys = bb.normalize(relax.op.permute_dims(heads_first(k, k_size), [0, 1, 3, 2]))
    scores = bb.normalize(relax.op.matmul(heads_first(q, q_size), keys))
    scores = bb.normalize(relax.op.multiply(scores, relax.const(scale, "float32")))
    if mask is not None:
        filter_value = attrs.get("mask_filter_value", DEFAULT_MASK_FILTER)
        scores = bb.normalize(relax.op.add(scores, _key_mask_bias(bb, mask, seq, seq, filter_value)))
    if inputs[5] is not None:
        scores = bb.normalize(relax.op.add(scores, inputs[5]))
    probs = bb.normalize(relax.op.nn.softmax(scores, axis=-1))
    context = bb.normalize(
        relax.op.permute_dims(bb.normalize(relax.op.matmul(probs, heads_first(v, v_size))), [0, 2, 1, 3])
    )
    out = bb.normalize(relax.op.reshape(context, (batch, seq, v_size)))
    return out if attrs["tvm_custom"]["num_outputs"] == 1 else relax.Tuple([out, relax.const(0.0)])


def _outputs(attrs: dict, first: relax.Expr, extra: dict[int, relax.Expr]) -> relax.Expr:
    """``first``, or a tuple as long as the node's outputs: ``extra[i]`` at output ``i`` where the
    converter computes it; outputs it does not compute (mean, inverse std) must be unused."""
    count = attrs["tvm_custom"]["num_outputs"]
    if count == 1:
        return first
    placeholder = relax.const(0.0, "float32")
    return relax.Tuple([first, *(extra.get(i, placeholder) for i in range(1, count))])


def _normalization_axis(attrs: dict, op: str, rank: int) -> None:
    axis = int(attrs.get("axis", -1))
    if axis not in (-1, rank - 1):
        raise ModelError(f"{op} over axis {axis} is not supported (only the last axis is)")


def simplified_layer_normalization(bb: relax.BlockBuilder, inputs: list, attrs: dict) -> relax.Expr:
    """ORT's ``SimplifiedLayerNormalization`` (default domain): RMSNorm over the last axis."""
    x, scale = inputs[0], inputs[1]
    _normalization_axis(attrs, "SimplifiedLayerNormalization", len(_dims(x)))
    normed = bb.normalize(relax.op.nn.rms_norm(x, scale, axes=-1, epsilon=float(attrs.get("epsilon", 1e-5))))
    return _outputs(attrs, normed, {})


def _skip_sum(bb: relax.BlockBuilder, inputs: list, bias_index: int) -> relax.Expr:
    total = relax.op.add(inputs[0], inputs[1])
    bias = inputs[bias_index] if len(inputs) > bias_index else None
    return bb.normalize(total if bias is None else relax.op.add(total, bias))


def skip_simplified_layer_normalization(bb: relax.BlockBuilder, inputs: list, attrs: dict) -> relax.Expr:
    """``input + skip (+ bias)``, RMSNorm with ``gamma``; output 3 is the sum."""
    total = _skip_sum(bb, inputs, 3)
    normed = bb.normalize(relax.op.nn.rms_norm(total, inputs[2], axes=-1, epsilon=float(attrs.get("epsilon", 1e-12))))
    return _outputs(attrs, normed, {3: total})


def skip_layer_normalization(bb: relax.BlockBuilder, inputs: list, attrs: dict) -> relax.Expr:
    """``input + skip (+ bias)``, LayerNorm with ``gamma`` (and ``beta``); output 3 is the sum."""
    total = _skip_sum(bb, inputs, 4)
    gamma = inputs[2]
    beta = inputs[3] if len(inputs) > 3 and inputs[3] is not None else relax.op.zeros_like(gamma)
    epsilon = float(attrs.get("epsilon", 1e-12))
    normed = bb.normalize(relax.op.nn.layer_norm(total, gamma, bb.normalize(beta), axes=-1, epsilon=epsilon))
    return _outputs(attrs, normed, {3: total})


def _rotate(bb: relax.BlockBuilder, x: relax.Expr, cos: relax.Expr, sin: relax.Expr, interleaved: bool) -> relax.Expr:
    """Rotary embedding of ``x`` ``[..., rotary_dim]`` by ``cos``/``sin`` ``[..., rotary_dim / 2]``."""
    dims = _dims(x)
    half = int(dims[-1]) // 2
    if interleaved:
        pairs = bb.normalize(relax.op.reshape(x, [*dims[:-1], half, 2]))
        parts = bb.normalize(relax.op.split(pairs, 2, axis=-1))
        even, odd = (bb.normalize(relax.op.squeeze(relax.TupleGetItem(parts, i), axis=[-1])) for i in range(2))
    else:
        parts = bb.normalize(relax.op.split(x, 2, axis=-1))
        even, odd = (bb.normalize(relax.TupleGetItem(parts, i)) for i in range(2))
    first = relax.op.subtract(relax.op.multiply(even, cos), relax.op.multiply(odd, sin))
    second = relax.op.add(relax.op.multiply(odd, cos), relax.op.multiply(even, sin))
    if interleaved:
        stacked = bb.normalize(relax.op.stack([first, second], axis=-1))
        return bb.normalize(relax.op.reshape(stacked, dims))
    return bb.normalize(relax.op.concat([first, second], axis=-1))


def _rotary_positions(bb: relax.BlockBuilder, position_ids: relax.Expr, batch, seq) -> relax.Expr:
    """Positions ``[B, S]``: the 2-D ``position_ids``, or ``offset + arange(S)`` from a 1-element one."""
    if len(_dims(position_ids)) == 2:
        return position_ids
    offset = bb.normalize(relax.op.astype(position_ids, "int64"))
    steps = bb.normalize(relax.op.expand_dims(_positions(bb, seq), axis=0))
    return bb.normalize(relax.op.broadcast_to(relax.op.add(steps, offset), relax.ShapeExpr([batch, seq])))


def _cache_rows(bb: relax.BlockBuilder, cache: relax.Expr, positions: relax.Expr, half: int) -> relax.Expr:
    """``cache[positions, :half]`` as ``[B, 1, S, half]``, broadcasting over heads."""
    rows = relax.op.take(relax.op.strided_slice(cache, [1], [0], [half]), positions, axis=0)
    return bb.normalize(relax.op.expand_dims(rows, axis=1))


def rotary_embedding(bb: relax.BlockBuilder, inputs: list, attrs: dict) -> relax.Expr:
    """ORT ``RotaryEmbedding`` on ``[B, S, hidden]`` or ``[B, N, S, H]``, half-split or interleaved."""
    for name, default in (("is_packed_batching", 0), ("scale", 1.0)):
        if float(attrs.get(name, default)) != default:
            raise ModelError(f"RotaryEmbedding with {name}={attrs[name]} is not supported")
    x, position_ids, cos_cache, sin_cache = inputs[:4]
    dims = _dims(x)
    rotary_dim = int(attrs.get("rotary_embedding_dim", 0)) or 2 * int(_dims(cos_cache)[1])
    if len(dims) == 3:
        batch, seq, hidden = dims
        heads = int(attrs.get("num_heads", 0)) or int(hidden) // rotary_dim
        heads_last = bb.normalize(relax.op.reshape(x, [batch, seq, heads, int(hidden) // heads]))
        per_head = bb.normalize(relax.op.permute_dims(heads_last, [0, 2, 1, 3]))
    elif len(dims) == 4:
        batch, heads, seq, _ = dims
        per_head = x
    else:
        raise ModelError(f"RotaryEmbedding input of rank {len(dims)} is not supported (3 or 4)")
    positions = _rotary_positions(bb, position_ids, batch, seq)
    cos, sin = (_cache_rows(bb, cache, positions, rotary_dim // 2) for cache in (cos_cache, sin_cache))
    interleaved = bool(attrs.get("interleaved", 0))
    if rotary_dim == int(_dims(per_head)[3]):
        out = _rotate(bb, per_head, cos, sin, interleaved)
    else:
        parts = bb.normalize(relax.op.split(per_head, [rotary_dim], axis=-1))
        rotated = _rotate(bb, bb.normalize(relax.TupleGetItem(parts, 0)), cos, sin, interleaved)
        out = bb.normalize(relax.op.concat([rotated, bb.normalize(relax.TupleGetItem(parts, 1))], axis=-1))
    if len(dims) == 3:
        out = bb.normalize(relax.op.reshape(relax.op.permute_dims(out, [0, 2, 1, 3]), dims))
    return out


CONTRIB_CONVERTERS: dict[str, ContribConverter] = {
    "Attention": attention,
    "EmbedLayerNormalization": embed_layer_normalization,
    "RotaryEmbedding": rotary_embedding,
    "SkipLayerNormalization": skip_layer_normalization,
    "SkipSimplifiedLayerNormalization": skip_simplified_layer_normalization,
}
"""``com.microsoft`` ops lutc converts itself (besides ``MatMulNBits``)."""

ORT_DEFAULT_DOMAIN_CONVERTERS: dict[str, ContribConverter] = {
    "SimplifiedLayerNormalization": simplified_layer_normalization,
}
"""Ops ONNX Runtime registers in the default domain that are not ONNX ops (onnxruntime-genai's
builder writes ``SimplifiedLayerNormalization`` there)."""
