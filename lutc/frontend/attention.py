"""ONNX Runtime's attention ops with a KV cache: ``GroupQueryAttention`` (what onnxruntime-genai's
builder writes) and ``MultiHeadAttention`` (what ORT's transformer optimizer writes).

The cache convention is the CPU one: ``present = concat(past, new)`` along the sequence axis, so
``present`` holds ``past + S`` positions and query ``s`` sees keys ``0 .. past + s`` (causal). GQA's
``seqlens_k`` and ``total_sequence_length`` then carry nothing the shapes do not: every row of a
batch has the same past length (no padded batches in decode), and a past buffer shared with the
present one (``past_present_share_buffer``, a fixed-size cache) is not supported.
"""

from __future__ import annotations

import math

import numpy as np
from tvm import relax, tirx

from ..errors import ModelError
from .relax_util import arange, dims, heads_first, heads_last, item, shared
from .rotary import PositionReader, Rotation, positions_from, rotary_rows, rotate_heads
from .windowed_cache import check_uniform_rows, masked_by, present_of, windowed_rows

DEFAULT_MASK_FILTER = -10000.0
"""ORT's ``mask_filter_value`` default: added to the scores of masked keys."""

MASKED = float(np.finfo(np.float32).min)
"""The score of a key a causal mask hides: its probability is exactly 0 after softmax."""

GQA_INPUTS = ("query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length",
              "cos_cache", "sin_cache", "position_ids", "attention_bias", "head_sink", "k_scale", "v_scale",
              "q_norm_weight", "k_norm_weight", "query_seqlens")  # fmt: skip
GQA_SUPPORTED_INPUTS = frozenset(GQA_INPUTS[:12])
GQA_ATTRIBUTE_DEFAULTS = {
    "qk_output": 0, "causal": 1, "kv_cache_bit_width": 0, "k_quant_type": "NONE", "v_quant_type": "NONE",
}  # fmt: skip
"""Attributes whose other values change the attention lutc computes: refused, never ignored."""

PAST_RULE = "past + new tokens must be at most {rows}"
"""What a call past the rotary caches of a GQA without ``position_ids`` must change."""


INPUT_RULES = {
    "GroupQueryAttention": "GroupQueryAttention reads a concatenated KV cache: the past tensors hold exactly the "
    "past positions, total_sequence_length is past + new positions and, once there is a past, every batch row has "
    "that length (seqlens_k + 1 = total); a fixed-size shared buffer or a padded decode batch is not supported",
}
"""Per op: the input convention its converter relies on, checked at run time (the check's error
names a shape, so :class:`lutc.CompiledModel` adds this text)."""


def _refuse_unsupported(op: str, inputs: list, attrs: dict, names: tuple, supported: frozenset, defaults: dict):
    for name, value in zip(names, inputs, strict=False):
        if value is not None and name not in supported:
            raise ModelError(f"{op} with the input {name!r} is not supported")
    for name, default in defaults.items():
        value = attrs.get(name, default)
        value = value.decode() if isinstance(value, bytes) else value
        if value != default:
            raise ModelError(f"{op} with {name}={value} is not supported (only {name}={default} is)")


def _visible(bb: relax.BlockBuilder, seq, past, window: int | None) -> relax.Expr:
    """``[S, past + S]``: may query ``s`` (position ``p = past + s``) see key ``j``? ``j <= p``, and
    with a local ``window`` also ``j > p - window`` (ORT 1.32's CPU kernel: the last ``window`` keys)."""
    keys = bb.normalize(relax.op.expand_dims(arange(bb, past + seq), axis=0))
    last_seen = bb.normalize(relax.op.expand_dims(arange(bb, seq, past), axis=1))
    visible = bb.normalize(relax.op.less_equal(keys, last_seen))
    if window is None:
        return visible
    first_hidden = bb.normalize(relax.op.subtract(last_seen, relax.const(window, "int64")))
    return bb.normalize(relax.op.logical_and(visible, bb.normalize(relax.op.greater(keys, first_hidden))))


def _causal(bb: relax.BlockBuilder, scores: relax.Expr, seq, past, window: int | None = None) -> relax.Expr:
    """``scores [..., S, past + S]`` with the keys query ``s`` may not see (:func:`_visible`) hidden."""
    visible = shared(bb, ("causal", seq, past, window), lambda: _visible(bb, seq, past, window))
    return bb.normalize(relax.op.where(visible, scores, relax.const(MASKED, "float32")))


def _softcapped(bb: relax.BlockBuilder, scores: relax.Expr, softcap: float) -> relax.Expr:
    """``softcap * tanh(scores / softcap)`` (Gemma-2's ``attn_logit_softcapping``)."""
    capped = bb.normalize(relax.op.tanh(relax.op.divide(scores, relax.const(softcap, "float32"))))
    return bb.normalize(relax.op.multiply(capped, relax.const(softcap, "float32")))


def _grouped(bb: relax.BlockBuilder, x: relax.Expr, kv_heads: int) -> relax.Expr:
    """``[B, N, S, T]`` as ``[B, N_kv, N / N_kv, S, T]`` (``[b, 1, S, T]`` as ``[b, 1, 1, S, T]``)."""
    batch, heads, rows, cols = dims(x)
    if int(heads) == 1:
        return bb.normalize(relax.op.expand_dims(x, axis=2))
    return bb.normalize(relax.op.reshape(x, (batch, kv_heads, int(heads) // kv_heads, rows, cols)))


def _softmax_with_sink(bb: relax.BlockBuilder, scores: relax.Expr, sink: relax.Expr) -> relax.Expr:
    """Softmax over the last axis with one more logit per head, ``sink`` (shaped to broadcast
    against ``scores``), in the denominator only (gpt-oss's attention sinks, ORT's ``head_sink``)."""
    top = bb.normalize(relax.op.maximum(relax.op.max(scores, axis=-1, keepdims=True), sink))
    weights = bb.normalize(relax.op.exp(relax.op.subtract(scores, top)))
    total = relax.op.add(relax.op.sum(weights, axis=-1, keepdims=True), relax.op.exp(relax.op.subtract(sink, top)))
    return bb.normalize(relax.op.divide(weights, bb.normalize(total)))


def _attend(bb: relax.BlockBuilder, q: relax.Expr, k: relax.Expr, v: relax.Expr, scale: float, bias, mask,
            softcap: float = 0.0, sink: relax.Expr | None = None):  # fmt: skip
    """``softmax(mask(cap(q kᵀ · scale) + bias)) v`` for ``q [B, N, S, H]``, ``k, v [B, N_kv, T, H]``
    (``cap``: :func:`_softcapped` where ``softcap > 0``; ``sink [N]``: one more logit per head in
    the softmax's denominator): each group of ``N / N_kv`` query heads reads one key/value head
    (not copied per head)."""
    batch, heads, seq, head_size = dims(q)
    kv_heads = int(dims(k)[1])
    grouped = kv_heads != int(heads)
    if grouped:
        q = _grouped(bb, q, kv_heads)
        k, v = (bb.normalize(relax.op.expand_dims(t, axis=2)) for t in (k, v))
    keys = bb.normalize(relax.op.permute_dims(k, [*range(len(dims(k)) - 2), len(dims(k)) - 1, len(dims(k)) - 2]))
    scores = bb.normalize(relax.op.multiply(bb.normalize(relax.op.matmul(q, keys)), relax.const(scale, "float32")))
    if softcap > 0:
        scores = _softcapped(bb, scores, softcap)
    if bias is not None:
        scores = bb.normalize(relax.op.add(scores, _grouped(bb, bias, kv_heads) if grouped else bias))
    scores = mask(scores)
    if sink is None:
        probs = bb.normalize(relax.op.nn.softmax(scores, axis=-1))
    else:
        per_head = bb.normalize(relax.op.reshape(sink, (1, heads, 1, 1)))
        probs = _softmax_with_sink(bb, scores, _grouped(bb, per_head, kv_heads) if grouped else per_head)
    out = bb.normalize(relax.op.matmul(probs, v))
    return bb.normalize(relax.op.reshape(out, (batch, heads, seq, head_size))) if grouped else out


def _with_past(bb: relax.BlockBuilder, past: relax.Expr | None, new: relax.Expr) -> relax.Expr:
    """``concat(past, new)`` over the sequence axis; ``past`` is cast to ``new``'s batch, heads and
    head size (a graph may name them differently, e.g. ``kv_cache_dim``; the VM checks them)."""
    if past is None:
        return new
    batch, heads, _, head_size = dims(new)
    past = bb.match_cast(past, relax.TensorType([batch, heads, dims(past)[2], head_size], "float32"))
    return bb.normalize(relax.op.concat([past, new], axis=2))


def _check_cache_lengths(bb: relax.BlockBuilder, seqlens_k: relax.Expr, total: relax.Expr, past, seq) -> None:
    """Have the VM check ORT's reading of ``seqlens_k`` and ``total_sequence_length`` against the
    concatenated cache's ``past + S`` positions: ``total`` must be that, and so must
    ``min(seqlens_k) + 1`` once there is a past (a shared buffer or a padded batch reads them
    otherwise; a prompt, with no past, may pad its rows). A run that breaks it fails instead of
    attending over other keys. The checks are shape ``match_cast``s (TVM 0.27's FuseTIR drops a
    tensor ``match_cast`` that lands in a fused function)."""
    expected = arange(bb, 1, past + seq)
    rows = bb.normalize(
        relax.op.add(relax.op.astype(relax.op.min(seqlens_k, keepdims=True), "int64"), relax.const(1, "int64"))
    )
    no_past = bb.normalize(relax.op.equal(arange(bb, 1, past), relax.const(0, "int64")))
    total = bb.normalize(relax.op.reshape(relax.op.astype(total, "int64"), [1]))
    for length in (total, bb.normalize(relax.op.where(no_past, expected, rows))):
        given = bb.normalize(relax.op.tensor_to_shape(length))
        bb.match_cast(given, relax.ShapeType([past + seq]))


def _gqa_projections(bb: relax.BlockBuilder, inputs: list, heads: int, kv_heads: int) -> tuple:
    """``q [B, N, S, H]``, ``k, v [B, N_kv, S, H]`` from separate or packed (key absent) inputs."""
    query, key, value = inputs[:3]
    width = int(dims(query)[2])
    if key is None:
        head_size = width // (heads + 2 * kv_heads)
        parts = bb.normalize(relax.op.split(query, [heads * head_size, (heads + kv_heads) * head_size], axis=2))
        query, key, value = (item(bb, parts, i) for i in range(3))
    else:
        head_size = width // heads
    return (
        heads_first(bb, query, heads, head_size),
        heads_first(bb, key, kv_heads, head_size),
        heads_first(bb, value, kv_heads, head_size),
    )


def _gqa_refusals(inputs: list, attrs: dict) -> None:
    _refuse_unsupported("GroupQueryAttention", inputs, attrs, GQA_INPUTS, GQA_SUPPORTED_INPUTS, GQA_ATTRIBUTE_DEFAULTS)
    if int(attrs.get("smooth_softmax", -1)) > 0:
        raise ModelError("GroupQueryAttention with smooth_softmax=1 is not supported")
    if attrs["tvm_custom"]["num_outputs"] > 3:
        raise ModelError("GroupQueryAttention with the output 'output_qk' is not supported")
    if (inputs[3] is None) != (inputs[4] is None):
        raise ModelError("GroupQueryAttention needs both past_key and past_value, or neither")
    if int(attrs.get("do_rotary", 0)) and (inputs[7] is None or inputs[8] is None):
        raise ModelError("GroupQueryAttention with do_rotary=1 needs cos_cache and sin_cache")
    window, softcap = int(attrs.get("local_window_size", -1)), float(attrs.get("softcap", 0.0))
    if window == 0 or window < -1:
        raise ModelError(f"GroupQueryAttention with local_window_size={window} is not supported (-1: no window, "
                         "or a positive window)")  # fmt: skip
    if int(attrs.get("sliding_window_cache", 0)) not in (0, 1):
        raise ModelError(f"GroupQueryAttention with sliding_window_cache={attrs['sliding_window_cache']} is not "
                         "supported (0 or 1)")  # fmt: skip
    if softcap < 0 or not math.isfinite(softcap):
        raise ModelError(f"GroupQueryAttention with softcap={softcap} is not supported (0: none, or positive)")


def _gqa_rotation(bb: relax.BlockBuilder, inputs: list, attrs: dict, batch, seq, past, start=None) -> Rotation:
    """The rotation ``do_rotary=1`` applies to q and the new k, at ``position_ids`` or past + s (or
    ``start + s`` for a windowed cache, ``start`` an int64 ``[1]`` tensor); its cache rows are bound
    once per graph, behind a check that the positions are rows of the caches (ORT: "cos_cache
    dimension 0 shall not be less than total_sequence_length"; the error names the first node
    that reads them)."""
    cos_cache, sin_cache = (_with_known_width(bb, cache) for cache in inputs[7:9])
    position_ids, dim = inputs[9] if len(inputs) > 9 else None, 2 * int(dims(cos_cache)[1])
    name, span = attrs["tvm_custom"]["name"], None
    reader = PositionReader("GroupQueryAttention", name)  # position_ids: their values are checked
    if position_ids is None and start is not None:  # start .. start + S - 1: checked on their values
        reader = PositionReader(reader.op, name, PAST_RULE)
    elif position_ids is None:  # past .. past + S - 1: checked on these shape values
        reader, span = PositionReader(reader.op, name, PAST_RULE), (past, past + seq - 1)
    key = ("rotary", position_ids, cos_cache, sin_cache, batch, seq, past, start is not None)
    positions = lambda: _rotary_positions(bb, position_ids, start, batch, seq, past)  # noqa: E731
    rows = shared(bb, key, lambda: rotary_rows(bb, positions(), (cos_cache, sin_cache), dim, reader, span))
    return Rotation(*rows, dim, bool(attrs.get("rotary_interleaved", 0)))


def _branch_type(bb: relax.BlockBuilder, expr: relax.Expr) -> relax.TensorType | None:
    """The type ``expr`` has in the first branch of the ``If`` it comes from (an output of an ONNX
    ``If``: the builder's LongRoPE picks long or short rotary caches by the sequence length)."""
    bound = bb.lookup_binding(expr) if isinstance(expr, relax.Var) else None
    if isinstance(bound, relax.TupleGetItem):
        chosen = bb.lookup_binding(bound.tuple_value) if isinstance(bound.tuple_value, relax.Var) else None
        if isinstance(chosen, relax.If) and isinstance(chosen.true_branch.body.ty, relax.TupleType):
            return chosen.true_branch.body.ty.fields[bound.index]
    if isinstance(bound, relax.If):
        return bound.true_branch.body.ty
    return None


def _with_known_width(bb: relax.BlockBuilder, cache: relax.Expr) -> relax.Expr:
    """A cos/sin cache whose width (rotary dims / 2) is static: as given, or cast to ``[rows,
    width]`` with the width of its ``If`` branch (the rows, which differ between branches, stay
    symbolic and are checked at run time like any cache's)."""
    if cache.ty.shape is not None:
        return cache
    branch = _branch_type(bb, cache)
    if branch is None or branch.shape is None or len(branch.shape.values) != 2:
        raise ModelError("GroupQueryAttention's cos_cache/sin_cache have no static width (rotary dims / 2)")
    width = int(branch.shape.values[1])
    return bb.match_cast(cache, relax.TensorType([tirx.Var("cache_rows", "int64"), width], branch.dtype))


def _rotary_positions(bb: relax.BlockBuilder, position_ids, start, batch, seq, past) -> relax.Expr:
    """``[B, S]`` int64: ``position_ids``, else ``start + s`` (a windowed cache), else ``past + s``."""
    if position_ids is not None or start is None:
        return positions_from(bb, position_ids, batch, seq, offset=past)
    steps = bb.normalize(relax.op.expand_dims(relax.op.add(arange(bb, seq), start), axis=0))
    return bb.normalize(relax.op.broadcast_to(steps, relax.ShapeExpr([batch, seq])))


def _windowed_refusals(inputs: list, attrs: dict) -> None:
    if int(attrs.get("local_window_size", -1)) <= 0:
        raise ModelError("GroupQueryAttention with sliding_window_cache=1 needs local_window_size > 0")
    if inputs[3] is None:
        raise ModelError("GroupQueryAttention with sliding_window_cache=1 needs past_key and past_value (the "
                         "window-sized buffers)")  # fmt: skip
    if len(inputs) > 10 and inputs[10] is not None:
        raise ModelError("GroupQueryAttention with sliding_window_cache=1 and the input 'attention_bias' is not "
                         "supported")  # fmt: skip


def _attention(bb: relax.BlockBuilder, inputs: list, attrs: dict, qkv: tuple, past, mask, bias=None, start=None):
    """What both caches share: rotary (``do_rotary``; at ``start + s`` where ``start`` is given),
    ``concat(past, new)``, and the attention under ``mask`` with the scale, softcap and sinks.
    Returns ``(out [B, N, S, H], keys, values)``, the last two over every row of the concatenation."""
    q, k, v = qkv
    batch, _, seq, head_size = dims(q)
    if int(attrs.get("do_rotary", 0)):
        rotation = _gqa_rotation(bb, inputs, attrs, batch, seq, past, start)
        q, k = rotate_heads(bb, q, rotation), rotate_heads(bb, k, rotation)
    keys, values = _with_past(bb, inputs[3], k), _with_past(bb, inputs[4], v)
    scale = float(attrs.get("scale", 0.0)) or 1.0 / math.sqrt(int(head_size))
    sink = inputs[11] if len(inputs) > 11 else None
    out = _attend(bb, q, keys, values, scale, bias, mask, float(attrs.get("softcap", 0.0)), sink)
    return out, keys, values


def _windowed_gqa(bb: relax.BlockBuilder, inputs: list, attrs: dict, qkv: tuple) -> relax.Expr:
    """:func:`group_query_attention` over a window-sized cache (:mod:`.windowed_cache`)."""
    _windowed_refusals(inputs, attrs)
    seq = dims(qkv[0])[2]
    rows = windowed_rows(bb, inputs[6], inputs[3], seq, int(attrs["local_window_size"]))
    mask = masked_by(bb, rows, MASKED)
    out, keys, values = _attention(bb, inputs, attrs, qkv, dims(inputs[3])[2], mask, start=rows.start)
    shared(bb, ("windowed check", seq), lambda: check_uniform_rows(bb, inputs[5], inputs[6]))
    return relax.Tuple([heads_last(bb, out), present_of(bb, rows, keys), present_of(bb, rows, values)])


def group_query_attention(bb: relax.BlockBuilder, inputs: list, attrs: dict) -> relax.Expr:
    """ORT ``GroupQueryAttention``: causal GQA with a concatenated KV cache, rotary inside optional,
    a local window (``local_window_size``: each query sees its last ``window`` keys), a logit
    softcap and attention sinks (``head_sink``) optional."""
    _gqa_refusals(inputs, attrs)
    qkv = _gqa_projections(bb, inputs, int(attrs["num_heads"]), int(attrs["kv_num_heads"]))
    if int(attrs.get("sliding_window_cache", 0)):
        return _windowed_gqa(bb, inputs, attrs, qkv)
    seq = dims(qkv[0])[2]
    past = dims(inputs[3])[2] if inputs[3] is not None else 0
    window = int(attrs.get("local_window_size", -1))
    mask = lambda s: _causal(bb, s, seq, past, window if window > 0 else None)  # noqa: E731
    bias = inputs[10] if len(inputs) > 10 else None
    out, present_key, present_value = _attention(bb, inputs, attrs, qkv, past, mask, bias)
    # once per graph: every layer reads the same seqlens_k and total_sequence_length (the importer
    # hands each node its own copy of a shape-derived input, so they cannot key the sharing)
    shared(bb, ("cache check", past, seq), lambda: _check_cache_lengths(bb, inputs[5], inputs[6], past, seq))
    return relax.Tuple([heads_last(bb, out), present_key, present_value])


def key_mask_bias(bb: relax.BlockBuilder, mask: relax.Expr, total, filter_value: float) -> relax.Expr:
    """An additive bias broadcastable to the scores ``[B, N, S, T]`` from ORT's ``mask_index`` forms."""
    rank = len(dims(mask))
    if rank == 1:  # valid key count per row (right padding); [2B] start/end form is not supported
        keys = bb.normalize(relax.op.expand_dims(arange(bb, total), axis=0))
        lengths = bb.normalize(relax.op.expand_dims(bb.normalize(relax.op.astype(mask, "int64")), axis=1))
        valid = bb.normalize(relax.op.less(keys, lengths))
        bias = bb.normalize(relax.op.where(valid, relax.const(0.0), relax.const(filter_value)))
        return bb.normalize(relax.op.expand_dims(bias, axis=[1, 2]))
    if rank in (2, 3):
        kept = bb.normalize(relax.op.subtract(relax.const(1.0), bb.normalize(relax.op.astype(mask, "float32"))))
        bias = bb.normalize(relax.op.multiply(kept, relax.const(filter_value)))
        return bb.normalize(relax.op.expand_dims(bias, axis=[1, 2] if rank == 2 else [1]))
    raise ModelError(f"attention mask of rank {rank} is not supported (ranks 1-3 are)")


MHA_INPUTS = ("query", "key", "value", "bias", "key_padding_mask", "attention_bias", "past_key", "past_value",
              "past_sequence_length", "cache_indirection")  # fmt: skip


def _mha_projections(bb: relax.BlockBuilder, inputs: list, heads: int) -> tuple:
    """``q [B, N, S, H]`` and ``k, v [B, N, L, H]`` (key/value given as ``[B, L, D]`` or ``[B, N, L, H]``)."""
    query, key, value, bias = inputs[:4]
    if key is None or value is None or len(dims(query)) != 3 or len(dims(key)) not in (3, 4):
        raise ModelError("MultiHeadAttention with packed QKV or KV is not supported (separate query, key, value are)")
    width = int(dims(query)[2])
    if bias is not None:
        if len(dims(key)) == 4:
            raise ModelError("MultiHeadAttention with a bias and BNSH key/value is not supported")
        value_width = int(dims(value)[2])
        parts = bb.normalize(relax.op.split(bias, [width, 2 * width]))
        biased = (bb.normalize(relax.op.add(t, item(bb, parts, i))) for i, t in enumerate((query, key, value)))
        query, key, value = biased
    else:
        value_width = int(dims(value)[2] if len(dims(value)) == 3 else dims(value)[1] * dims(value)[3])
    q = heads_first(bb, query, heads, width // heads)
    if len(dims(key)) == 4:
        return q, key, value
    return q, heads_first(bb, key, heads, width // heads), heads_first(bb, value, heads, value_width // heads)


def multi_head_attention(bb: relax.BlockBuilder, inputs: list, attrs: dict) -> relax.Expr:
    """ORT ``MultiHeadAttention``: self or cross attention, optional past, key padding mask, causal."""
    supported = frozenset(MHA_INPUTS[:8])
    _refuse_unsupported("MultiHeadAttention", inputs, attrs, MHA_INPUTS, supported, {})
    if attrs["tvm_custom"]["num_outputs"] > 3:
        raise ModelError("MultiHeadAttention with the output 'qk' is not supported")
    heads = int(attrs["num_heads"])
    q, k, v = _mha_projections(bb, inputs, heads)
    past_key, past_value = inputs[6], inputs[7]
    if (past_key is not None or past_value is not None) and len(dims(inputs[1])) == 4:
        raise ModelError("MultiHeadAttention with a past and BNSH key/value is not supported")
    present_key, present_value = _with_past(bb, past_key, k), _with_past(bb, past_value, v)
    seq, head_size = dims(q)[2], dims(q)[3]
    total = dims(present_key)[2]
    bias = inputs[5]
    if inputs[4] is not None:
        filter_value = float(attrs.get("mask_filter_value", DEFAULT_MASK_FILTER))
        padding = key_mask_bias(bb, inputs[4], total, filter_value)
        bias = padding if bias is None else bb.normalize(relax.op.add(bias, padding))
    past = dims(past_key)[2] if past_key is not None else 0
    causal = int(attrs.get("unidirectional", 0))
    mask = (lambda s: _causal(bb, s, seq, past)) if causal else (lambda s: s)
    scale = float(attrs.get("scale", 0.0)) or 1.0 / math.sqrt(int(head_size))
    out = heads_last(bb, _attend(bb, q, present_key, present_value, scale, bias, mask))
    count = attrs["tvm_custom"]["num_outputs"]
    return out if count == 1 else relax.Tuple([out, present_key, present_value][:count])
