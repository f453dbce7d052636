"""Quantize a float model's MatMul/Gemm weights at build time (round-to-nearest).

Each eligible node (its weight an initializer, or ``Transpose`` of one, as a tied ``lm_head``)
becomes a ``com.microsoft::MatMulNBits`` node, so the rest of the
pipeline treats it like any pre-quantized model. A node that cannot be expressed (weight not
a 2-D float initializer, K not a multiple of the group, a Gemm with alpha/beta/transA) is left
as it is, with a warning naming it.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..quant.formats import AnyFormat
from ..quant.onnx_convert import matmul_nbits_node, to_matmul_nbits
from ..quant.weights import quantize
from .onnx_import import load_onnx
from .weights import ModelSource

MS_DOMAIN = "com.microsoft"


def _gemm_weight(node: onnx.NodeProto, inits: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None] | None:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        return None
    b = inits.get(node.input[1])
    if b is None:
        return None
    b = b.T if attrs.get("transB", 0) else b
    bias = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if bias is not None and bias.shape != (b.shape[1],):
        return None
    return b, bias


def _weight_of(node: onnx.NodeProto, inits: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None] | None:
    """``(B [K, N], bias)`` for a MatMul/Gemm with a constant 2-D float32 weight."""
    if node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return None
    if node.op_type == "MatMul":
        found = (inits[node.input[1]], None) if node.input[1] in inits else None
    elif node.op_type == "Gemm":
        found = _gemm_weight(node, inits)
    else:
        return None
    if found is None or found[0].ndim != 2 or found[0].dtype != np.float32:
        return None
    return found


def _transposed_constants(model: onnx.ModelProto, inits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of ``Transpose`` of a 2-D initializer (a tied ``lm_head``: ``B = Transpose(embedding)``)."""
    found = {}
    for node in model.graph.node:
        if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx") or node.input[0] not in inits:
            continue
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [1, 0])
        if inits[node.input[0]].ndim == 2 and perm == [1, 0]:
            found[node.output[0]] = inits[node.input[0]].T
    return found


def _nbits_node(node: onnx.NodeProto, b: np.ndarray, bias, fmt: AnyFormat, index: int) -> tuple[onnx.NodeProto, list]:
    arrays = to_matmul_nbits(quantize(np.ascontiguousarray(b.T), fmt))
    return matmul_nbits_node(node.name, node.input[0], node.output[0], arrays, bias, prefix=f"lutc_q{index}")


def quantize_float_matmuls(model: ModelSource, fmt: AnyFormat) -> onnx.ModelProto:
    """A copy of ``model`` whose constant-weight MatMul/Gemm nodes are quantized to ``fmt``."""
    source = load_onnx(model)
    out = onnx.ModelProto()
    out.CopyFrom(source)
    inits = {t.name: numpy_helper.to_array(t) for t in source.graph.initializer}
    inits |= _transposed_constants(source, inits)
    nodes, added = [], []
    for index, node in enumerate(source.graph.node):
        found = _weight_of(node, inits)
        if found is None:
            nodes.append(node)
            continue
        try:
            new, tensors = _nbits_node(node, *found, fmt, index)
        except ValueError as err:
            warnings.warn(f"{node.op_type} node {node.name!r} stays float: {err}", stacklevel=2)
            nodes.append(node)
            continue
        nodes.append(new)
        added += tensors
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(added)
    if added and not any(o.domain == MS_DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return out
