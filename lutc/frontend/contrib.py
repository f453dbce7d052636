"""lutc's converters for ONNX Runtime contrib ops (``com.microsoft``) where TVM 0.27's fall short.

TVM's ``Attention`` and ``EmbedLayerNormalization`` read every dim as a Python int (static
shapes only), and its ``Attention`` refuses the 1-D ``mask_index`` that ORT's own
``EmbedLayerNormalization`` produces, so a BERT run through ``onnxruntime.transformers.optimizer``
did not import. These follow ORT's contrib op specification (``docs/ContribOperators.md``) with
symbolic batch and sequence dims. Each converter takes ``(bb, inputs, attrs)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend

from ..errors import ModelError
from .attention import DEFAULT_MASK_FILTER, group_query_attention, key_mask_bias, multi_head_attention
from .relax_util import arange, dims, heads_first, heads_last, item
from .rotary import rotary_embedding

CONTRIB_DOMAIN = "com.microsoft"
"""ONNX Runtime's contrib-op domain."""

ContribConverter = Callable[[relax.BlockBuilder, list, dict], relax.Expr]


def embed_layer_normalization(bb: relax.BlockBuilder, inputs: list, attrs: dict) -> relax.Expr:
    """Word + position (+ segment) embeddings, LayerNorm; ``mask_index`` = tokens per row (int32)."""
    input_ids, segment_ids, word_emb, pos_emb, segment_emb, gamma, beta, mask, pos_ids = (inputs[i] for i in range(9))
    batch, seq = dims(input_ids)
    positions = pos_ids if pos_ids is not None else arange(bb, seq)
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


def attention(bb: relax.BlockBuilder, inputs: list, attrs: dict) -> relax.Expr:
    """ORT ``Attention``: packed QKV projection, scaled dot-product attention, optional masks."""
    unsupported = sorted({"past_present_share_buffer", "do_rotary", "unidirectional"} & attrs.keys())
    if unsupported and any(attrs[name] for name in unsupported):
        raise ModelError(f"Attention with {', '.join(unsupported)} is not supported")
    if inputs[4] is not None or inputs[6] is not None:
        raise ModelError("Attention with a past key/value state is not supported")
    x, weight, bias, mask = inputs[0], inputs[1], inputs[2], inputs[3]
    heads = int(attrs["num_heads"])
    width = int(dims(weight)[1])
    q_size, k_size, v_size = attrs.get("qkv_hidden_sizes", (width // 3,) * 3)
    batch, seq, hidden = dims(x)
    rows = bb.normalize(relax.op.reshape(x, (batch * seq, hidden)))  # one 2-D matmul: a float GEMM rule applies
    qkv = bb.normalize(relax.op.matmul(rows, weight))
    qkv = bb.normalize(relax.op.add(qkv, bias) if bias is not None else qkv)
    qkv = bb.normalize(relax.op.reshape(qkv, (batch, seq, width)))
    parts = bb.normalize(relax.op.split(qkv, [q_size, q_size + k_size], axis=2))
    q, k, v = (item(bb, parts, i) for i in range(3))

    scale = attrs.get("scale", 1.0 / math.sqrt(q_size // heads))
    keys = bb.normalize(relax.op.permute_dims(heads_first(bb, k, heads, k_size // heads), [0, 1, 3, 2]))
    scores = bb.normalize(relax.op.matmul(heads_first(bb, q, heads, q_size // heads), keys))
    scores = bb.normalize(relax.op.multiply(scores, relax.const(scale, "float32")))
    if mask is not None:
        filter_value = attrs.get("mask_filter_value", DEFAULT_MASK_FILTER)
        scores = bb.normalize(relax.op.add(scores, key_mask_bias(bb, mask, seq, filter_value)))
    if inputs[5] is not None:
        scores = bb.normalize(relax.op.add(scores, inputs[5]))
    probs = bb.normalize(relax.op.nn.softmax(scores, axis=-1))
    out = heads_last(bb, bb.normalize(relax.op.matmul(probs, heads_first(bb, v, heads, v_size // heads))))
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
    _normalization_axis(attrs, "SimplifiedLayerNormalization", len(dims(x)))
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


def _unpacked(bb: relax.BlockBuilder, packed: relax.Expr, bits: int) -> relax.Expr:
    """``[..., n * 8 / bits]`` codes (float32) from ``[..., n]`` bytes holding them low-order bits first."""
    if bits == 8:
        return bb.normalize(relax.op.astype(packed, "float32"))
    mask = relax.const((1 << bits) - 1, "uint8")
    shifts = (relax.const(bits * i, "uint8") for i in range(8 // bits))
    fields = [relax.op.bitwise_and(relax.op.right_shift(packed, shift), mask) for shift in shifts]
    stacked = bb.normalize(relax.op.stack(fields, axis=-1))
    shape = dims(packed)
    codes = bb.normalize(relax.op.reshape(stacked, [*shape[:-1], shape[-1] * (8 // bits)]))
    return bb.normalize(relax.op.astype(codes, "float32"))


def gather_block_quantized(bb: relax.BlockBuilder, inputs: list, attrs: dict) -> relax.Expr:
    """ORT ``GatherBlockQuantized`` on uint8-packed rows (what onnxruntime-genai's builder writes for
    an embedding tied to a quantized LM head): gather the rows, then dequantize only them."""
    data, indices, scales = inputs[:3]
    zeros = inputs[3] if len(inputs) > 3 else None
    bits, block = int(attrs.get("bits", 4)), int(attrs.get("block_size", 128))
    rank = len(dims(data))
    gather_axis, quantize_axis = int(attrs.get("gather_axis", 0)), int(attrs.get("quantize_axis", 1)) % rank
    if data.ty.dtype != "uint8" or bits not in (2, 4, 8) or rank != 2 or (gather_axis, quantize_axis) != (0, 1):
        raise ModelError(f"GatherBlockQuantized is supported on 2-D uint8 data with bits 2/4/8, gather_axis=0 and "
                         f"quantize_axis=1; got {data.ty.dtype} rank {rank}, bits={bits}, gather_axis={gather_axis}, "
                         f"quantize_axis={quantize_axis}")  # fmt: skip
    rows = _unpacked(bb, bb.normalize(relax.op.take(data, indices, axis=0)), bits)
    shape = dims(rows)
    blocks = [*shape[:-1], int(shape[-1]) // block, block]
    if zeros is None:
        zero = relax.const(float(1 << (bits - 1)), "float32")
    else:
        codes = _unpacked(bb, bb.normalize(relax.op.take(zeros, indices, axis=0)), bits)  # last byte may pad
        zero = relax.op.expand_dims(relax.op.strided_slice(codes, [len(shape) - 1], [0], [blocks[-2]]), -1)
    scale = relax.op.expand_dims(relax.op.take(scales, indices, axis=0), -1)
    centered = relax.op.subtract(relax.op.reshape(rows, blocks), zero)
    values = bb.normalize(relax.op.multiply(centered, relax.op.astype(scale, "float32")))
    return bb.normalize(relax.op.reshape(values, shape))


def in_float32(converter: ContribConverter) -> ContribConverter:
    """``converter`` computing in float32 for a model whose activations are float16 or bfloat16
    (onnxruntime-genai's ``-e cuda`` graphs): such tensor inputs are cast up, float32 outputs are
    cast back to the first one's type. The converters' arithmetic (softmax, norms, rotations) and
    constants stay float32, and the results carry less rounding than the narrow type would."""

    @functools.wraps(converter)
    def converted(bb: relax.BlockBuilder, inputs: list, attrs: dict) -> relax.Expr:
        narrow = next((t for t in map(narrow_float, inputs) if t is not None), None)
        if narrow is None:
            return converter(bb, inputs, attrs)
        wide = [bb.normalize(relax.op.astype(x, "float32")) if narrow_float(x) else x for x in inputs]
        return _cast_floats(bb, converter(bb, onnx_frontend.onnx_input(wide), attrs), narrow)

    return converted


def narrow_float(x) -> str | None:
    """``"float16"``/``"bfloat16"`` for a tensor of that type, else ``None``."""
    ty = getattr(x, "ty", None) if isinstance(x, relax.Expr) else None
    return ty.dtype if isinstance(ty, relax.TensorType) and ty.dtype in NARROW_FLOATS else None


def _cast_floats(bb: relax.BlockBuilder, out: relax.Expr, dtype: str) -> relax.Expr:
    if isinstance(out, relax.Tuple):
        return relax.Tuple([_cast_floats(bb, field, dtype) for field in out.fields])
    ty = out.ty if isinstance(out, relax.Expr) else None
    if isinstance(ty, relax.TensorType) and ty.dtype == "float32":
        return bb.normalize(relax.op.astype(out, dtype))
    return out


NARROW_FLOATS = ("float16", "bfloat16")

CONTRIB_CONVERTERS: dict[str, ContribConverter] = {
    op: in_float32(converter)
    for op, converter in {
        "Attention": attention,
        "EmbedLayerNormalization": embed_layer_normalization,
        "GatherBlockQuantized": gather_block_quantized,
        "GroupQueryAttention": group_query_attention,
        "MultiHeadAttention": multi_head_attention,
        "RotaryEmbedding": rotary_embedding,
        "SkipLayerNormalization": skip_layer_normalization,
        "SkipSimplifiedLayerNormalization": skip_simplified_layer_normalization,
    }.items()
}
"""``com.microsoft`` ops lutc converts itself (besides ``MatMulNBits``), in float32 (:func:`in_float32`)."""

ORT_DEFAULT_DOMAIN_CONVERTERS: dict[str, ContribConverter] = {
    "SimplifiedLayerNormalization": in_float32(simplified_layer_normalization),
}
"""Ops ONNX Runtime registers in the default domain that are not ONNX ops (onnxruntime-genai's
builder writes ``SimplifiedLayerNormalization`` there)."""
