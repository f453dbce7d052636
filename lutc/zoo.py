"""Small synthetic ONNX models for tests, examples and benchmarks.

Every builder is deterministic (seeded), names every node (a node's output tensor has the
node's name), uses float32 activations and the default-domain opset 21 (plus
``com.microsoft`` 1 for ``MatMulNBits``), and passes ``onnx.checker.check_model``.

- :func:`float_mlp`, :func:`float_decoder_block`: float models whose MatMul weights are
  2-D float32 initializers;
- :func:`quantize_matmuls`: those weights to ``MatMulNBits`` (bits 1-4 and 8) or blocked
  ``DequantizeLinear`` (bits 2 and 4) with lutc's round-to-nearest quantizer;
  :func:`quantize_with_ort`: the same with ONNX Runtime's ``MatMulNBitsQuantizer``;
- :func:`dequantized_reference`: a quantized model with float weights in place of its
  quantized ones, the reference ONNX Runtime runs to check lutc;
- :func:`single_matmul_nbits`: one ``MatMulNBits`` node;
- :func:`decoder_inputs`: random inputs for any of these models.

Weights are ``N(0, 1/K)`` (``K`` the fan-in), so every projection keeps activations O(1).
"""

from __future__ import annotations

import logging
from itertools import pairwise
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .quant.formats import IntFormat
from .quant.onnx_convert import matmul_nbits_node, pack_matmul_nbits_codes, to_dequantize_linear, to_matmul_nbits
from .quant.weights import quantize

OPSET = 21
MS_DOMAIN = "com.microsoft"
NBITS_BITS = (1, 2, 3, 4, 8)
"""Bit widths :func:`quantize_matmuls` writes as ``MatMulNBits`` (ORT's CPU kernel runs 2, 4 and 8)."""
QDQ_OPSET = {4: 21, 2: 25}
"""Default-domain opset that introduced INT4/UINT4 (21) and INT2/UINT2 (25) ``DequantizeLinear``."""
MAX_POSITIONS = 512
"""Rows of the decoder's rotary and causal-mask tables: the longest ``seq`` it accepts."""
DIMS = ["batch", "seq"]

Form = Literal["nbits", "qdq"]


class _Graph:
    """Collects named nodes and initializers; each node's output tensor is named after the node."""

    def __init__(self, seed: int):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, name: str, k: int, n: int) -> str:
        """A ``[K, N]`` MatMul weight drawn from ``N(0, 1/K)``."""
        return self.const(name, (self.rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32))

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def model(self, inputs: list[onnx.ValueInfoProto], output: str, out_shape: list) -> onnx.ModelProto:
        out = helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)
        graph = helper.make_graph(self.nodes, "lutc_zoo", inputs, [out], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=10)
        onnx.checker.check_model(model)
        return model


def _activation(name: str, width: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [*DIMS, width])


# ---------------------------------------------------------------------------- float models


def float_mlp(hidden: int, intermediate: int, layers: int = 2, seed: int = 0) -> onnx.ModelProto:
    """``x[batch, seq, hidden] -> y[batch, seq, hidden]`` through ``layers`` MatMul + bias Adds.

    Widths go ``hidden -> intermediate -> ... -> intermediate -> hidden``; a Relu follows every
    layer but the last. Nodes ``fc{i}``, ``fc{i}_bias``, ``relu{i}``; biases have std 0.1.
    """
    if layers < 1:
        raise ValueError(f"layers must be >= 1; got {layers}")
    g = _Graph(seed)
    widths = [hidden] + [intermediate] * (layers - 1) + [hidden]
    h = "x"
    for i, (k, n) in enumerate(pairwise(widths)):
        h = g.op("MatMul", [h, g.weight(f"fc{i}.weight", k, n)], f"fc{i}")
        bias = (0.1 * g.rng.standard_normal(n)).astype(np.float32)
        h = g.op("Add", [h, g.const(f"fc{i}.bias", bias)], f"fc{i}_bias")
        if i < layers - 1:
            h = g.op("Relu", [h], f"relu{i}")
    return g.model([_activation("x", hidden)], h, [*DIMS, hidden])


def _rms_norm(g: _Graph, x: str, width: int, prefix: str, eps: float = 1e-5) -> str:
    """``x / sqrt(mean(x^2) + eps) * weight`` in plain ops (weight ``1 + N(0, 0.1)``)."""
    square = g.op("Mul", [x, x], f"{prefix}_square")
    mean = g.op("ReduceMean", [square, g.const(f"{prefix}.axes", np.array([-1]))], f"{prefix}_mean", keepdims=1)
    var = g.op("Add", [mean, g.const(f"{prefix}.eps", np.array(eps, np.float32))], f"{prefix}_eps")
    normed = g.op("Div", [x, g.op("Sqrt", [var], f"{prefix}_sqrt")], f"{prefix}_div")
    weight = (1 + 0.1 * g.rng.standard_normal(width)).astype(np.float32)
    return g.op("Mul", [normed, g.const(f"{prefix}.weight", weight)], prefix)


def _rotary_tables(head_dim: int, base: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin ``[MAX_POSITIONS, head_dim]`` for rotate-half rotary embeddings (Llama layout)."""
    inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.outer(np.arange(MAX_POSITIONS), inv_freq)
    angles = np.concatenate([angles, angles], axis=1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def _seq_slice(g: _Graph, table: str, seq: str, name: str, axes: list[int]) -> str:
    """``table[:seq]`` (or ``[:seq, :seq]``) along ``axes``."""
    starts = g.const(f"{name}.starts", np.zeros(len(axes), np.int64))
    ends = seq if len(axes) == 1 else g.op("Concat", [seq] * len(axes), f"{name}_ends", axis=0)
    return g.op("Slice", [table, starts, ends, g.const(f"{name}.axes", np.array(axes))], name)


def _rotate(g: _Graph, t: str, cos: str, sin: str, head_dim: int, prefix: str) -> str:
    """``t * cos + rotate_half(t) * sin`` for ``t[batch, heads, seq, head_dim]``."""
    bounds = [g.const(f"{prefix}.bound{i}", np.array([i * head_dim // 2])) for i in range(3)]
    axis = g.const(f"{prefix}.axis", np.array([-1]))
    lo = g.op("Slice", [t, bounds[0], bounds[1], axis], f"{prefix}_lo")
    hi = g.op("Slice", [t, bounds[1], bounds[2], axis], f"{prefix}_hi")
    rotated = g.op("Concat", [g.op("Neg", [hi], f"{prefix}_neg"), lo], f"{prefix}_half", axis=-1)
    a = g.op("Mul", [t, cos], f"{prefix}_cos")
    return g.op("Add", [a, g.op("Mul", [rotated, sin], f"{prefix}_sin")], prefix)


def _heads(g: _Graph, t: str, heads: int, head_dim: int, prefix: str) -> str:
    """``[batch, seq, hidden] -> [batch, heads, seq, head_dim]``."""
    split = g.op("Reshape", [t, g.const(f"{prefix}.shape", np.array([0, 0, heads, head_dim]))], f"{prefix}_split")
    return g.op("Transpose", [split], f"{prefix}_heads", perm=[0, 2, 1, 3])


def _qkv(g: _Graph, x: str, hidden: int, heads: int, rotary: bool) -> tuple[str, str, str]:
    """Q, K, V projections of ``x`` split into heads, Q and K rotated when ``rotary``."""
    head_dim = hidden // heads
    q, k, v = (
        _heads(g, g.op("MatMul", [x, g.weight(f"{p}_proj.weight", hidden, hidden)], f"{p}_proj"), heads, head_dim, p)
        for p in "qkv"
    )
    if rotary:
        cos_table, sin_table = _rotary_tables(head_dim)
        cos = _seq_slice(g, g.const("rotary.cos", cos_table), "seq_len", "rotary_cos", [0])
        sin = _seq_slice(g, g.const("rotary.sin", sin_table), "seq_len", "rotary_sin", [0])
        q, k = _rotate(g, q, cos, sin, head_dim, "q_rot"), _rotate(g, k, cos, sin, head_dim, "k_rot")
    return q, k, v


def _attention(g: _Graph, x: str, hidden: int, heads: int, rotary: bool, causal: bool) -> str:
    """Multi-head self-attention of ``x`` (no KV cache: positions ``0 .. seq-1``), then ``o_proj``."""
    if rotary or causal:
        g.op("Shape", ["x"], "seq_len", start=1, end=2)
    q, k, v = _qkv(g, x, hidden, heads, rotary)
    scores = g.op("MatMul", [q, g.op("Transpose", [k], "k_t", perm=[0, 1, 3, 2])], "qk")
    scale = np.array(1 / np.sqrt(hidden // heads), np.float32)
    scores = g.op("Mul", [scores, g.const("attn.scale", scale)], "qk_scaled")
    if causal:
        table = np.triu(np.full((MAX_POSITIONS, MAX_POSITIONS), -1e9, np.float32), 1)
        mask = _seq_slice(g, g.const("attn.causal_mask", table), "seq_len", "causal_mask", [0, 1])
        scores = g.op("Add", [scores, mask], "qk_masked")
    probs = g.op("Softmax", [scores], "softmax", axis=-1)
    ctx = g.op("Transpose", [g.op("MatMul", [probs, v], "attn_ctx")], "attn_ctx_t", perm=[0, 2, 1, 3])
    ctx = g.op("Reshape", [ctx, g.const("attn.merge_shape", np.array([0, 0, hidden]))], "attn_merge")
    return g.op("MatMul", [ctx, g.weight("o_proj.weight", hidden, hidden)], "o_proj")


def _swiglu(g: _Graph, x: str, hidden: int, intermediate: int) -> str:
    """``down(silu(gate(x)) * up(x))``."""
    gate = g.op("MatMul", [x, g.weight("gate_proj.weight", hidden, intermediate)], "gate_proj")
    up = g.op("MatMul", [x, g.weight("up_proj.weight", hidden, intermediate)], "up_proj")
    silu = g.op("Mul", [gate, g.op("Sigmoid", [gate], "gate_sigmoid")], "gate_silu")
    act = g.op("Mul", [silu, up], "mlp_act")
    return g.op("MatMul", [act, g.weight("down_proj.weight", intermediate, hidden)], "down_proj")


def float_decoder_block(
    hidden: int, heads: int, intermediate: int, rotary: bool = True, seed: int = 0, causal: bool = True
) -> onnx.ModelProto:
    """A Llama-style decoder block ``x[batch, seq, hidden] -> y[batch, seq, hidden]``, plain ONNX ops.

    RMSNorm, Q/K/V projections, rotate-half rotary embeddings (cos/sin tables for
    ``MAX_POSITIONS`` positions, sliced to ``seq``), scaled dot-product attention with an
    optional causal mask (also a sliced table), ``o_proj``, residual, RMSNorm, SwiGLU MLP
    (``gate_proj``, ``up_proj``, ``down_proj``), residual. No KV cache: positions are
    ``0 .. seq-1``, so ``seq <= MAX_POSITIONS``. Seven MatMuls have float32 ``[K, N]`` weights.
    """
    head_dim, rem = divmod(hidden, heads)
    if rem or head_dim % 2:
        raise ValueError(f"hidden={hidden} must split into {heads} heads of an even head_dim")
    g = _Graph(seed)
    attn = _attention(g, _rms_norm(g, "x", hidden, "attn_norm"), hidden, heads, rotary, causal)
    h = g.op("Add", ["x", attn], "attn_residual")
    mlp = _swiglu(g, _rms_norm(g, h, hidden, "mlp_norm"), hidden, intermediate)
    y = g.op("Add", [h, mlp], "y")
    return g.model([_activation("x", hidden)], y, [*DIMS, hidden])


# ---------------------------------------------------------------------------- quantization


def _quantize_8bit(w: np.ndarray, block_size: int, symmetric: bool) -> dict:
    """Round-to-nearest 8-bit ``MatMulNBits`` arrays for ``w[N, K]`` (lutc formats stop at 4 bits)."""
    n, k = w.shape
    grouped = w.reshape(n, k // block_size, block_size).astype(np.float32)
    if symmetric:  # ORT's rule: the value of largest magnitude maps to code 0, zero point 128
        signed_max = np.take_along_axis(grouped, np.abs(grouped).argmax(-1)[..., None], -1)[..., 0]
        scales, zeros = signed_max / -128.0, np.full(signed_max.shape, 128.0, np.float32)
    else:
        lo, hi = np.minimum(grouped.min(-1), 0), np.maximum(grouped.max(-1), 0)
        scales = (hi - lo) / 255.0
        zeros = np.clip(np.rint(-lo / np.where(scales == 0, 1, scales)), 0, 255)
    scales = np.where(scales == 0, 1, scales).astype(np.float32)
    codes = np.clip(np.rint(grouped / scales[..., None] + zeros[..., None]), 0, 255).astype(np.uint8)
    return {
        "b": pack_matmul_nbits_codes(codes.reshape(n, k), 8, block_size),
        "scales": scales,
        "zero_points": None if symmetric else zeros.astype(np.uint8),
        **{"K": k, "N": n, "bits": 8, "block_size": block_size},
    }


def nbits_arrays(w: np.ndarray, bits: int, block_size: int, symmetric: bool = True) -> dict:
    """``MatMulNBits`` arrays and attributes (as :func:`~lutc.quant.onnx_convert.to_matmul_nbits`) for ``w[N, K]``."""
    if bits not in NBITS_BITS:
        raise ValueError(f"bits={bits}: MatMulNBits weights are written for bits {NBITS_BITS}")
    if w.shape[1] % block_size:
        raise ValueError(f"K={w.shape[1]} is not a multiple of block_size={block_size}")
    if bits == 8:
        return _quantize_8bit(w, block_size, symmetric)
    return to_matmul_nbits(quantize(w, IntFormat(bits, block_size, symmetric=symmetric)))


def _nbits_node(name: str, a: str, out: str, arrays: dict, bias: np.ndarray | None = None) -> tuple:
    """A ``MatMulNBits`` node named ``name`` and its initializers (``{name}.B``, ``.scales``, ...)."""
    return matmul_nbits_node(name, a, out, arrays, bias)


def _qdq_nodes(node: onnx.NodeProto, w: np.ndarray, bits: int, block_size: int, symmetric: bool) -> tuple:
    """``DequantizeLinear`` (node ``{name}_dq``) of the quantized ``w[N, K]`` feeding the MatMul ``node``."""
    d = to_dequantize_linear(quantize(w, IntFormat(bits, block_size, symmetric=symmetric)), signed=symmetric)
    name = node.name
    x = helper.make_tensor(f"{name}.qweight", d["data_type"], d["x"].shape, d["x"].flatten().tolist())
    inits = [x, numpy_helper.from_array(d["scale"].astype(np.float32), f"{name}.scale")]
    inputs = [x.name, f"{name}.scale"]
    if d["zero_point"] is not None:
        zp = d["zero_point"]
        inits.append(helper.make_tensor(f"{name}.zero_point", d["data_type"], zp.shape, zp.flatten().tolist()))
        inputs.append(f"{name}.zero_point")
    dq = helper.make_node(
        "DequantizeLinear", inputs, [f"{name}_dq"], name=f"{name}_dq", axis=d["axis"], block_size=d["block_size"]
    )
    matmul = helper.make_node("MatMul", [node.input[0], dq.output[0]], list(node.output), name=name)
    return [dq, matmul], inits


def _float_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {
        t.name: numpy_helper.to_array(t)
        for t in model.graph.initializer
        if t.data_type == TensorProto.FLOAT and len(t.dims) == 2
    }


def _replace_nodes(model: onnx.ModelProto, nodes: list, inits: list) -> onnx.ModelProto:
    """A copy of ``model`` with ``nodes``, ``inits`` added and initializers no node reads dropped."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(inits)
    used = {name for node in nodes for name in node.input} | {o.name for o in out.graph.output}
    kept = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    return out


def _set_opsets(model: onnx.ModelProto, default: int | None = None) -> None:
    """Raise the default-domain opset to ``default``; import ``com.microsoft`` 1 iff a node uses it."""
    keep = [o for o in model.opset_import if o.domain != MS_DOMAIN]
    for entry in keep:
        if default and entry.domain in ("", "ai.onnx") and entry.version < default:
            entry.version = default
            model.ir_version = max(model.ir_version, helper.find_min_ir_version_for([entry]))
    if any(node.domain == MS_DOMAIN for node in model.graph.node):
        keep.append(helper.make_opsetid(MS_DOMAIN, 1))
    del model.opset_import[:]
    model.opset_import.extend(keep)


def _quantized_matmul(
    node: onnx.NodeProto, w: np.ndarray, bits: int, block_size: int, symmetric: bool, form: Form
) -> tuple[list, list]:
    """The nodes and initializers replacing MatMul ``node`` with float weight ``w[K, N]``."""
    if not node.name:
        raise ValueError(f"MatMul with weight {node.input[1]!r} has no name; name every node first")
    w_nk = np.ascontiguousarray(w.T)
    if form == "qdq":
        return _qdq_nodes(node, w_nk, bits, block_size, symmetric)
    arrays = nbits_arrays(w_nk, bits, block_size, symmetric)
    new, tensors = _nbits_node(node.name, node.input[0], node.output[0], arrays)
    return [new], tensors


def quantize_matmuls(
    model: onnx.ModelProto, bits: int, block_size: int, symmetric: bool = True, form: Form = "nbits"
) -> onnx.ModelProto:
    """Quantize every MatMul whose B is a 2-D float32 initializer, round-to-nearest (:func:`lutc.quant.quantize`).

    ``form="nbits"``: the MatMul becomes ``com.microsoft::MatMulNBits`` of the same name (bits 1-4
    and 8). ``form="qdq"``: a ``DequantizeLinear`` node ``{name}_dq`` (INT4/INT2 when symmetric,
    UINT4/UINT2 with zero points otherwise, blocked along K) feeds the MatMul; the opset becomes
    21 (4-bit) or 25 (2-bit). K must be a multiple of ``block_size``.
    """
    if form not in ("nbits", "qdq"):
        raise ValueError(f"form must be 'nbits' or 'qdq'; got {form!r}")
    if form == "qdq" and bits not in QDQ_OPSET:
        raise ValueError(f"bits={bits}: DequantizeLinear has 2- and 4-bit types only")
    weights = _float_weights(model)
    nodes, inits = [], []
    for node in model.graph.node:
        w = weights.get(node.input[1]) if node.op_type == "MatMul" and node.domain in ("", "ai.onnx") else None
        new, tensors = ([node], []) if w is None else _quantized_matmul(node, w, bits, block_size, symmetric, form)
        nodes += new
        inits += tensors
    out = _replace_nodes(model, nodes, inits)
    _set_opsets(out, QDQ_OPSET[bits] if form == "qdq" else None)
    onnx.checker.check_model(out)
    return out


def quantize_with_ort(model: onnx.ModelProto, bits: int, block_size: int, symmetric: bool = True) -> onnx.ModelProto:
    """Quantize MatMul weights with ONNX Runtime's ``MatMulNBitsQuantizer`` (RTN, bits 2/4/8, ``MatMulNBits``).

    Needs ``onnxruntime`` and ``onnx_ir`` (which ORT's quantizer imports but does not declare).
    """
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    quantizer = MatMulNBitsQuantizer(copy, bits=bits, block_size=block_size, is_symmetric=symmetric)
    quantizer.process()
    return quantizer.model.model


# ---------------------------------------------------------------------------- references


def _float_matmul(node: onnx.NodeProto, weight: np.ndarray, has_bias: bool) -> tuple[list, list]:
    """``MatMul`` (+ ``Add`` of the node's own bias) computing what ``MatMulNBits`` ``node`` does, in float."""
    w_name = f"{node.name}.dequantized"
    inits = [numpy_helper.from_array(np.ascontiguousarray(weight.T), w_name)]
    if not has_bias:
        return [helper.make_node("MatMul", [node.input[0], w_name], list(node.output), name=node.name)], inits
    matmul = helper.make_node("MatMul", [node.input[0], w_name], [f"{node.name}_matmul"], name=node.name)
    add = helper.make_node("Add", [matmul.output[0], node.input[5]], list(node.output), name=f"{node.name}_bias")
    return [matmul, add], inits


def dequantized_reference(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every ``MatMulNBits`` and narrow-int ``DequantizeLinear`` weight dequantized to float32.

    Weights are read by lutc's converters (:func:`lutc.frontend.onnx_import.inspect_onnx`);
    ``MatMulNBits`` becomes ``MatMul`` (+ ``Add`` for a bias), a ``DequantizeLinear`` becomes an
    initializer with its output's name. Unnamed nodes get inspect_onnx's names (``{op}_{index}``).
    """
    from .frontend.onnx_import import inspect_onnx
    from .frontend.weights import materialized

    named, info = inspect_onnx(model)
    named = materialized(named, info.weights)
    nodes, inits = [], []
    for node in named.graph.node:
        found = info.quantized.get(node.name)
        if found is None:
            nodes.append(node)
        elif node.op_type == "DequantizeLinear":
            inits.append(
                numpy_helper.from_array(np.ascontiguousarray(found.dequantized(info.weights).T), node.output[0])
            )
        else:
            new, tensors = _float_matmul(node, found.dequantized(info.weights), found.bias is not None)
            nodes += new
            inits += tensors
    out = _replace_nodes(named, nodes, inits)
    _set_opsets(out)
    onnx.checker.check_model(out)
    return out


# ---------------------------------------------------------------------------- small models and inputs


def single_matmul_nbits(
    k: int, n: int, bits: int, block_size: int, symmetric: bool = True, bias: bool = False, seed: int = 0
) -> onnx.ModelProto:
    """One ``MatMulNBits`` node ``matmul``: ``A[batch, seq, K] -> Y[batch, seq, N]`` (bits 1-4 and 8).

    The weight is ``N(0, 1/K)`` quantized round-to-nearest; the optional bias has std 0.1.
    """
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
    b = (0.1 * rng.standard_normal(n)).astype(np.float32) if bias else None
    node, inits = _nbits_node("matmul", "A", "Y", nbits_arrays(w, bits, block_size, symmetric), b)
    graph = helper.make_graph(
        [node],
        "lutc_zoo_matmul_nbits",
        [_activation("A", k)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [*DIMS, n])],
        inits,
    )
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    onnx.checker.check_model(model)
    return model


def decoder_inputs(model: onnx.ModelProto, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal float32 inputs for every graph input of ``model``.

    Dimensions named ``batch`` and ``seq`` take those values; fixed dimensions keep theirs.
    """
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    sizes = {"batch": batch, "seq": seq}
    feeds = {}
    for value in model.graph.input:
        if value.name in inits:
            continue
        dims = value.type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else sizes[d.dim_param] for d in dims]
        feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds
