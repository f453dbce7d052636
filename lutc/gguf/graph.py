"""The ONNX decoder of a GGUF file, in onnxruntime-genai's builder op set and names: ``MatMulNBits``
projections (q/k/v packed where they share a format), ``GroupQueryAttention`` with ``do_rotary``,
``SimplifiedLayerNormalization`` / ``SkipSimplifiedLayerNormalization``, and ``GatherBlockQuantized``
(or a float ``Gather``) for the embedding. Inputs ``input_ids``, ``attention_mask``,
``past_key_values.N.key/value``; outputs ``logits``, ``present.N.key/value``. Initializers go to one
external data file as they are made (:class:`ExternalData`), so the proto never holds the weights."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..quant import QuantizedWeight
from ..quant.onnx_convert import matmul_nbits_node, pack_matmul_nbits_codes, to_matmul_nbits
from .read import GgufFile, float_rows
from .weights import dequantized, head_order, matmul_weight, permute_rows, stack_rows

OPSET = 21
INLINE_BYTES = 1024
"""Initializers this small stay in the proto; larger ones go to the external data file."""
ACCURACY_LEVEL = 4
"""``MatMulNBits`` ``accuracy_level`` as onnxruntime-genai's builder writes it (ORT's int8-activation path)."""
ALIGN = 64
LM_HEAD = "lm_head.MatMul"
"""The LM head's initializer prefix (``.B``, ``.scales``, ``.zero_points``), read by a tied embedding."""


@dataclass
class ExternalData:
    """Initializers appended to ``location`` (beside the model) as they are made."""

    file: BinaryIO
    location: str
    tensors: list[TensorProto] = field(default_factory=list)

    def add(self, tensor: TensorProto) -> str:
        """Keep ``tensor`` (its bytes moved to the file where larger than :data:`INLINE_BYTES`)."""
        if len(tensor.raw_data) > INLINE_BYTES:
            self.file.write(b"\0" * (-self.file.tell() % ALIGN))
            offset, data = self.file.tell(), tensor.raw_data
            self.file.write(data)
            onnx.external_data_helper.set_external_data(tensor, self.location, offset, len(data))
            tensor.ClearField("raw_data")
        self.tensors.append(tensor)
        return tensor.name

    def array(self, name: str, values: np.ndarray) -> str:
        return self.add(numpy_helper.from_array(np.ascontiguousarray(values), name))


@dataclass
class Graph:
    """Nodes, initializers and the conversion's notes (tensors requantized) as they are made."""

    model: GgufFile
    data: ExternalData
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    requantized: list[str] = field(default_factory=list)

    def node(self, op: str, inputs: list[str], name: str, outputs: int | list[str] = 1, domain: str = "",
             **attrs: Any) -> list[str]:  # fmt: skip
        """Add a node named ``name`` (builder-style path); its outputs ``{name}/output_i`` unless given."""
        outs = outputs if isinstance(outputs, list) else [f"{name}/output_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, domain=domain, **attrs))
        return outs

    def weight(self, gguf_name: str, heads: int | None = None) -> QuantizedWeight:
        """A GGUF matmul tensor as a weight (rows un-permuted for q/k of ``heads`` heads)."""
        tensor = self.model.tensor(gguf_name)
        qw, exact = matmul_weight(tensor)
        if not exact:
            self.requantized.append(f"{gguf_name} ({tensor.tensor_type.name})")
        return permute_rows(qw, heads) if heads is not None and self.model.hyper.permuted else qw

    def matmul(self, x: str, qw: QuantizedWeight, path: str, out: str | None = None) -> str:
        """``MatMulNBits`` of ``x`` by ``qw``: node ``/model/{path}/MatMul``, initializers ``model.{path}...``."""
        name = f"/model/{path}/MatMul"
        node = self.nbits_node(name, x, out or f"{name}/output_0", qw, f"{path.replace('/', '.')}.MatMul")
        self.nodes.append(node)
        return node.output[0]

    def nbits_node(self, name: str, x: str, out: str, qw: QuantizedWeight, prefix: str) -> onnx.NodeProto:
        """The ``MatMulNBits`` node of ``qw`` at the builder's ``accuracy_level``, its initializers
        (``{prefix}.B``, ...) added now; the caller places the node."""
        node, inits = matmul_nbits_node(name, x, out, to_matmul_nbits(qw), prefix=prefix)
        node.attribute.append(helper.make_attribute("accuracy_level", ACCURACY_LEVEL))
        for tensor in inits:
            self.data.add(tensor)
        return node


def rotary_caches(model: GgufFile) -> tuple[np.ndarray, np.ndarray]:
    """``cos_cache``, ``sin_cache`` ``[context, head_dim / 2]``: base ``rope.freq_base``, llama3's
    per-frequency divisors (``rope_freqs.weight``) where present, linear scaling's factor."""
    hyper = model.hyper
    inv_freq = 1.0 / hyper.rope_theta ** (np.arange(0, hyper.head_dim, 2, dtype=np.float64) / hyper.head_dim)
    if "rope_freqs.weight" in model.tensors:
        inv_freq = inv_freq / float_rows(model.tensors["rope_freqs.weight"]).astype(np.float64)
    angles = np.outer(np.arange(hyper.context, dtype=np.float64) / hyper.rope_linear_factor, inv_freq)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def _io(model: GgufFile) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    hyper, vocab = model.hyper, int(model.tensor("token_embd.weight").shape[1])
    value = helper.make_tensor_value_info
    cache = lambda name, length: value(name, TensorProto.FLOAT, ["batch_size", hyper.kv_heads, length, hyper.head_dim])  # noqa: E731
    inputs = [value("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
              value("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"])]  # fmt: skip
    outputs = [value("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", vocab])]
    for i in range(hyper.layers):
        inputs += [cache(f"past_key_values.{i}.{kv}", "past_sequence_length") for kv in ("key", "value")]
        outputs += [cache(f"present.{i}.{kv}", "total_sequence_length") for kv in ("key", "value")]
    return inputs, outputs


def _mask_lengths(g: Graph) -> tuple[str, str]:
    """``seqlens_k`` (valid keys - 1) and ``total_sequence_length`` as int32, as the builder computes them."""
    base = "/model/attn_mask_reformat/attn_mask_subgraph"
    one = g.data.array("/model/constants/INT64/[1]", np.array([1], np.int64))
    index = g.data.array("/model/constants/INT64/1", np.array(1, np.int64))
    total = g.node("ReduceSum", ["attention_mask", one], f"{base}/ReduceSum", keepdims=0)[0]
    seqlens = g.node("Sub", [total, one], f"{base}/Sub")[0]
    seqlens = g.node("Cast", [seqlens], f"{base}/Sub/Cast", to=TensorProto.INT32)[0]
    shape = g.node("Shape", ["attention_mask"], f"{base}/Shape")[0]
    length = g.node("Gather", [shape, index], f"{base}/Gather", axis=0)[0]
    return seqlens, g.node("Cast", [length], f"{base}/Gather/Cast", to=TensorProto.INT32)[0]


def _embedding(g: Graph, head: QuantizedWeight, tied: bool) -> str:
    """The embedding lookup: ``GatherBlockQuantized`` on the GGUF's own codes where they are exact and
    symmetric (4 or 8 bits; a tied LM head's ``B`` reshaped), else ``Gather`` on its float values."""
    tensor = g.model.tensor("token_embd.weight")
    qw, exact = (head, True) if tied else matmul_weight(tensor)
    if not (exact and qw.fmt.symmetric and qw.fmt.bits in (4, 8)):
        table = g.data.array("model.embed_tokens.weight", dequantized(tensor))
        return g.node("Gather", [table, "input_ids"], "/model/embed_tokens/Gather")[0]
    n, k = qw.shape
    row_bytes = k * qw.fmt.bits // 8
    if tied:
        shape = g.data.array(f"/model/constants/INT64/[{n}, {row_bytes}]", np.array([n, row_bytes]))
        data = g.node("Reshape", [f"{LM_HEAD}.B", shape], "/model/embed_tokens/Reshape")[0]
        scales = f"{LM_HEAD}.scales"
    else:
        codes = pack_matmul_nbits_codes(qw.codes, qw.fmt.bits, qw.fmt.group_size).reshape(n, row_bytes)
        data = g.data.array("model.embed_tokens.weight_Q", codes)
        scales = g.data.array("model.embed_tokens.scales", qw.scales)
    name = "/model/embed_tokens/GatherBlockQuantized"
    attrs = {"bits": qw.fmt.bits, "block_size": qw.fmt.group_size, "gather_axis": 0, "quantize_axis": 1}
    return g.node("GatherBlockQuantized", [data, "input_ids", scales], name, domain="com.microsoft", **attrs)[0]


def _norm(g: Graph, gguf_name: str, path: str) -> str:
    """The norm weight ``gguf_name`` as initializer ``model.{path}.weight`` (``path``'s ``/`` as ``.``)."""
    return g.data.array(f"model.{path.replace('/', '.')}.weight", float_rows(g.model.tensor(gguf_name)))


def _skip_norm(g: Graph, residual: str, x: str, weight: str, path: str, last: bool = False) -> tuple[str, str]:
    """``SkipSimplifiedLayerNormalization``: ``(normed, residual + x)``."""
    name = f"/model/{path}"
    outs = [f"{name}/output_0"] if last else [f"{name}/output_0", "", "", f"{name}/output_3"]
    out = g.node("SkipSimplifiedLayerNormalization", [residual, x, weight], name, outs, domain="com.microsoft",
                 epsilon=g.model.hyper.eps)  # fmt: skip
    return out[0], out[-1]


def _biased(g: Graph, x: str, names: list[str], sizes: list[int], path: str) -> str:
    """``x`` plus the GGUF biases ``names`` (of ``sizes``; zeros for one it lacks) concatenated: qwen2's
    q/k/v. ``x`` itself where the GGUF has none of them."""
    if not any(n in g.model.tensors for n in names):
        return x
    hyper, parts = g.model.hyper, []
    for name, size in zip(names, sizes, strict=True):
        values = float_rows(g.model.tensors[name]) if name in g.model.tensors else np.zeros(size, np.float32)
        kind = name.split(".")[2]
        if hyper.permuted and kind in ("attn_q", "attn_k"):
            values = values[head_order(size, hyper.heads if kind == "attn_q" else hyper.kv_heads)]
        parts.append(values)
    bias = g.data.array(f"model.{path.replace('/', '.')}.Add.bias", np.concatenate(parts))
    return g.node("Add", [x, bias], f"/model/{path}/Add")[0]


def _attention(g: Graph, i: int, x: str, lengths: tuple[str, str]) -> str:
    hyper = g.model.hyper
    blk = f"blk.{i}"
    q, k, v = (g.weight(f"{blk}.attn_q.weight", hyper.heads), g.weight(f"{blk}.attn_k.weight", hyper.kv_heads),
               g.weight(f"{blk}.attn_v.weight"))  # fmt: skip
    packed = stack_rows([q, k, v])
    biases, sizes = [f"{blk}.attn_{p}.bias" for p in "qkv"], [w.shape[0] for w in (q, k, v)]
    if packed is not None:
        path = f"layers.{i}/attn/qkv_proj"
        qkv = [_biased(g, g.matmul(x, packed, path), biases, sizes, path), "", ""]
    else:
        paths = [f"layers.{i}/attn/{p}_proj" for p in "qkv"]
        qkv = [_biased(g, g.matmul(x, w, path), [b], [n], path)
               for w, path, b, n in zip((q, k, v), paths, biases, sizes, strict=True)]  # fmt: skip
    window = hyper.window if hyper.window and hyper.window < hyper.context else -1
    inputs = [*qkv, f"past_key_values.{i}.key", f"past_key_values.{i}.value", *lengths, "cos_cache", "sin_cache"]
    outs = [f"/model/layers.{i}/attn/GroupQueryAttention/output_0", f"present.{i}.key", f"present.{i}.value"]
    g.node("GroupQueryAttention", inputs, f"/model/layers.{i}/attn/GroupQueryAttention", outs, domain="com.microsoft",
           num_heads=hyper.heads, kv_num_heads=hyper.kv_heads, scale=1.0 / math.sqrt(hyper.head_dim),
           local_window_size=window, softcap=0.0, do_rotary=1, rotary_interleaved=0)  # fmt: skip
    return g.matmul(outs[0], g.weight(f"{blk}.attn_output.weight"), f"layers.{i}/attn/o_proj")


def _mlp(g: Graph, i: int, x: str) -> str:
    blk, path = f"blk.{i}", f"/model/layers.{i}/mlp"
    gate = g.matmul(x, g.weight(f"{blk}.ffn_gate.weight"), f"layers.{i}/mlp/gate_proj")
    up = g.matmul(x, g.weight(f"{blk}.ffn_up.weight"), f"layers.{i}/mlp/up_proj")
    sigmoid = g.node("Sigmoid", [gate], f"{path}/act_fn/Sigmoid")[0]
    act = g.node("Mul", [gate, sigmoid], f"{path}/act_fn/Mul")[0]
    product = g.node("Mul", [act, up], f"{path}/Mul")[0]
    return g.matmul(product, g.weight(f"{blk}.ffn_down.weight"), f"layers.{i}/mlp/down_proj")


def _decoder(g: Graph) -> None:
    """Every node: the mask lengths, the embedding, the layers, the final norm and the LM head."""
    hyper = g.model.hyper
    tied = "output.weight" not in g.model.tensors
    head = g.weight("token_embd.weight" if tied else "output.weight")
    lengths = _mask_lengths(g)
    for name, cache in zip(("cos_cache", "sin_cache"), rotary_caches(g.model), strict=True):
        g.data.array(name, cache)
    # the LM head's initializers first: a tied embedding's GatherBlockQuantized reads them
    head_node = g.nbits_node("/model/lm_head/MatMul", "", "logits", head, LM_HEAD)
    residual = _embedding(g, head, tied)
    norm = _norm(g, "blk.0.attn_norm.weight", "layers.0/input_layernorm")
    name = "/model/layers.0/input_layernorm"
    x = g.node("SimplifiedLayerNormalization", [residual, norm], name, axis=-1, epsilon=hyper.eps, stash_type=1)[0]
    for i in range(hyper.layers):
        x, residual = _skip_norm(g, residual, _attention(g, i, x, lengths), *_next_norm(g, i, "post_attention"))
        x, residual = _skip_norm(g, residual, _mlp(g, i, x), *_next_norm(g, i, "input"))
    head_node.input[0] = x
    g.nodes.append(head_node)


def _next_norm(g: Graph, i: int, kind: str) -> tuple[str, str, bool]:
    """``(weight, path, last)`` of the norm after layer ``i``'s attention (``post_attention``) or its
    MLP (``input``: the next layer's input norm, or the final ``norm`` after the last layer)."""
    if kind == "post_attention":
        path = f"layers.{i}/post_attention_layernorm"
        return _norm(g, f"blk.{i}.ffn_norm.weight", path), path, False
    if i == g.model.hyper.layers - 1:
        return _norm(g, "output_norm.weight", "norm"), "norm", True
    path = f"layers.{i + 1}/input_layernorm"
    return _norm(g, f"blk.{i + 1}.attn_norm.weight", path), path, False


def write_model(model: GgufFile, path: Path) -> list[str]:
    """Write the decoder to ``path`` and its weights to ``path.name + ".data"`` beside it; return the
    GGUF tensors that were requantized (name and type)."""
    location = path.name + ".data"
    with (path.parent / location).open("wb") as file:
        g = Graph(model, ExternalData(file, location))
        _decoder(g)
    inputs, outputs = _io(model)
    graph = helper.make_graph(g.nodes, "main_graph", inputs, outputs, g.data.tensors)
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="lutc convert (GGUF)")
    proto.ir_version = 10
    onnx.save_model(proto, str(path))
    return g.requantized
