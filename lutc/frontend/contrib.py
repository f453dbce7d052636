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


CONTRIB_CONVERTERS: dict[str, ContribConverter] = {
    "Attention": attention,
    "EmbedLayerNormalization": embed_layer_normalization,
}
"""``com.microsoft`` ops lutc converts itself (besides ``MatMulNBits``)."""
