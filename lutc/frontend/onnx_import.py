"""ONNX to Relax: TVM's importer plus converters for quantized matmul weights.

TVM 0.27's Relax ONNX frontend has no ``com.microsoft::MatMulNBits`` converter and refuses
blocked ``DequantizeLinear``. lutc subclasses its importer (TVM's sources stay untouched):

- before import, every quantized weight is read and checked with :mod:`lutc.quant.onnx_convert`
  (errors name the node);
- during import, such a node becomes ``matmul(x, call_tir(lut_dequantize, consts))``, the pattern
  the LUT rewrite pass looks for. Everything else goes through TVM's converters.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import onnx
import tvm
from onnx import numpy_helper
from tvm import IRModule, relax, tirx
from tvm.relax.frontend.onnx import onnx_frontend

from ..errors import ModelError
from ..kernels.dequantize import DequantizeSpec, lut_dequantize
from ..quant.formats import group_length
from ..quant.onnx_convert import dequantize_linear_from_node, matmul_nbits_from_node, wide_matmul_nbits_from_node
from .attention import INPUT_RULES
from .contrib import CONTRIB_CONVERTERS, ORT_DEFAULT_DOMAIN_CONVERTERS
from .converters import SHAPE_CONVERTERS, TVM_SHAPE_AWARE
from .index_checks import checked_indices
from .model_info import ModelInfo, QuantizedNode, TensorInfo
from .prepare import prepare_graph
from .relax_util import forget_shared
from .shape_values import ShapeValues

MIN_OPSET = 13
"""Oldest default-domain opset lutc accepts; older models go through ``onnx.version_converter``."""

NARROW_NAMES = ("int4", "uint4", "int2", "uint2")
NARROW_TYPES = {
    onnx.TensorProto.INT4: np.int8,
    onnx.TensorProto.UINT4: np.uint8,
    onnx.TensorProto.INT2: np.int8,
    onnx.TensorProto.UINT2: np.uint8,
}


def load_onnx(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """Read a model, turning a missing, truncated or corrupt file into a :class:`ModelError`."""
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise ModelError(f"no ONNX model at {str(path)!r}")
    try:
        proto = onnx.load(str(path))
    except Exception as err:
        raise ModelError(f"{path} is not a readable ONNX model (truncated or corrupt?): {err}") from None
    if not proto.graph.node:
        raise ModelError(f"{path} holds no graph nodes: truncated or not an ONNX model")
    return proto


def _opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ModelError("the model imports no default-domain (ai.onnx) opset")


def _check_opset(model: onnx.ModelProto) -> int:
    opset = _opset(model)
    if opset < MIN_OPSET:
        raise ModelError(
            f"the model uses ONNX opset {opset}; lutc needs {MIN_OPSET} or newer. Convert it with "
            f"onnx.version_converter.convert_version(model, {MIN_OPSET})"
        )
    return opset


def _named_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose nodes all have unique names (the importer knows nodes only by name)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    seen: set[str] = set()
    for index, node in enumerate(copy.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)
    return copy


CONTRIB_DOMAIN = "com.microsoft"
CONTRIB_OPS = frozenset({"MatMulNBits", *CONTRIB_CONVERTERS})
"""ONNX Runtime contrib ops lutc converts itself."""

TVM_CONTRIB_OPS = frozenset({"BiasGelu", "FastGelu", "Gelu", "SkipLayerNormalization"})
"""ONNX Runtime contrib ops TVM's importer converts (its converter map holds them by op name)."""

CONTRIB_ONLY = frozenset({"Attention", "BiasGelu", "EmbedLayerNormalization", "FastGelu", "SkipLayerNormalization"})
"""Names whose TVM converter is the contrib op's: the standard op of that name (``Attention``,
opset 23) must not be converted by it."""


def _unsupported(node: onnx.NodeProto, known: set[str]) -> str | None:
    """Why ``node`` cannot be converted, or None."""
    if node.domain in ("", "ai.onnx"):
        if node.op_type in CONTRIB_ONLY:
            return f"no converter for the standard op (TVM's {node.op_type} is com.microsoft's)"
        return None if node.op_type in known or node.op_type in ORT_DEFAULT_DOMAIN_CONVERTERS else "no converter"
    if node.domain == CONTRIB_DOMAIN:
        converted = CONTRIB_OPS | (TVM_CONTRIB_OPS & known)
        return None if node.op_type in converted else "ONNX Runtime contrib op without a converter"
    return f"custom domain {node.domain!r}"


def _check_ops(model: onnx.ModelProto) -> None:
    known = set(onnx_frontend._get_convert_map()) | {"If", "Constant"}
    bad = []
    for node in model.graph.node:
        why = _unsupported(node, known)
        if why is not None:
            bad.append(f"{node.domain + '::' if node.domain else ''}{node.op_type} ({node.name}: {why})")
    if bad:
        raise ModelError(f"unsupported operators: {', '.join(bad)}")


SUB_BYTE_BITS = {
    onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4, onnx.TensorProto.INT2: 2, onnx.TensorProto.UINT2: 2,
}  # fmt: skip


def _check_initializer(tensor: onnx.TensorProto) -> None:
    """Refuse an initializer whose stored data does not fill its dims (raw data sized, others read)."""
    count = int(np.prod(tensor.dims, dtype=np.int64))
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return
    if tensor.raw_data:
        bits = SUB_BYTE_BITS.get(tensor.data_type)
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize if bits is None else None
        expected = count * itemsize if bits is None else (count * bits + 7) // 8
        if len(tensor.raw_data) != expected:
            raise ModelError(f"initializer {tensor.name!r} has dims {list(tensor.dims)} ({expected} bytes) "
                             f"but {len(tensor.raw_data)} bytes of data")  # fmt: skip
        return
    try:
        numpy_helper.to_array(tensor)
    except Exception as err:
        raise ModelError(f"initializer {tensor.name!r} with dims {list(tensor.dims)}: {err}") from None


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def _from_weight(node: onnx.NodeProto, weight, bias) -> QuantizedNode:
    return QuantizedNode(
        node.name, node.op_type, weight.fmt.bits, group_length(weight.fmt, weight.shape[1]),
        weight.codes, weight.scales, weight.zeros, weight.fmt.implied_zero, weight, bias,
    )  # fmt: skip


def _quantized_node(node: onnx.NodeProto, initializers: dict) -> QuantizedNode | None:
    if node.op_type == "MatMulNBits" and node.domain == "com.microsoft":
        bits = next((a.i for a in node.attribute if a.name == "bits"), 4)
        if bits <= 4:
            return _from_weight(node, *matmul_nbits_from_node(node, initializers))
        codes, scales, zeros, bias = wide_matmul_nbits_from_node(node, initializers)
        group = codes.shape[1] // scales.shape[1]
        return QuantizedNode(node.name, node.op_type, bits, group, codes, scales, zeros, 2.0 ** (bits - 1), None, bias)
    narrow = node.input and initializers.get(node.input[0], np.empty(0)).dtype.name in NARROW_NAMES
    if node.op_type == "DequantizeLinear" and narrow:
        return _from_weight(node, dequantize_linear_from_node(node, initializers), None)
    return None


def _tensor_info(value: onnx.ValueInfoProto, index_limits: dict[str, int] | None = None) -> TensorInfo:
    tensor = value.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "unknown"
    return TensorInfo(value.name, dims, dtype, (index_limits or {}).get(value.name))


EMBEDDING_INDICES = {
    "Gather": ((1, 0),),
    "EmbedLayerNormalization": ((0, 2), (1, 4)),
    "GatherBlockQuantized": ((1, 2),),
}
"""Op -> (index input, embedding initializer input) pairs whose indices address rows (for
GatherBlockQuantized: its scales, one row per embedding row)."""


def _index_limits(model: onnx.ModelProto) -> dict[str, int]:
    """Graph inputs used directly as embedding row indices -> the smallest row count they index."""
    rows = {t.name: t.dims for t in model.graph.initializer}
    nodes = model.graph.node
    cast_from = {n.output[0]: n.input[0] for n in nodes if n.op_type == "Cast" and n.domain in ("", "ai.onnx")}
    limits: dict[str, int] = {}
    for node in model.graph.node:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        pairs = EMBEDDING_INDICES.get(node.op_type, ()) if node.domain in ("", "ai.onnx", CONTRIB_DOMAIN) else ()
        for index, table in pairs:
            dims = rows.get(node.input[table]) if len(node.input) > table else None
            if dims and len(node.input) > index and node.input[index]:
                source = node.input[index]
                while source in cast_from:  # ORT's optimizer casts ids to int32 first
                    source = cast_from[source]
                size = int(dims[axis if node.op_type == "Gather" else 0])
                limits[source] = min(size, limits.get(source, size))
    return limits


def inspect_onnx(
    model: str | Path | onnx.ModelProto, shapes: dict[str, list[int]] | None = None, *, fold: bool = True
) -> tuple[onnx.ModelProto, ModelInfo]:
    """Load, check and prepare a model; return the prepared copy and what lutc found in it.

    ``fold=False`` applies ``shapes`` but skips inference and folding (tests reach the converters so).
    """
    model = _named_copy(load_onnx(model))
    opset = _check_opset(model)
    _check_ops(model)
    for tensor in model.graph.initializer:
        _check_initializer(tensor)
    model, report = prepare_graph(model, shapes, fold=fold)
    initializers = _initializers(model)
    quantized = {}
    for node in model.graph.node:
        try:
            found = _quantized_node(node, initializers)
        except ValueError as err:
            raise ModelError(str(err)) from None
        if found is not None:
            quantized[node.name] = found
    limits = _index_limits(model)
    inputs = tuple(_tensor_info(v, limits) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_tensor_info(v) for v in model.graph.output)
    ops = {n.op_type for n in model.graph.node if n.domain == CONTRIB_DOMAIN}
    rules = tuple(INPUT_RULES[op] for op in sorted(ops & INPUT_RULES.keys()))
    return model, ModelInfo(inputs, outputs, quantized, opset, report, rules)


GATHER_OPS = frozenset({"Gather", "GatherElements", "GatherND"})
"""Ops whose runtime indices get a bounds check."""


class _Importer(onnx_frontend.ONNXGraphImporter):
    """TVM's importer with lutc's quantized-weight nodes (looked up by node name)."""

    def __init__(self, quantized: dict[str, QuantizedNode], domains: dict[str, str], *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._quantized = quantized
        self._domains = domains
        self._shape_values = ShapeValues()

    def _parse_array(self, tensor_proto: onnx.TensorProto):
        if tensor_proto.data_type in NARROW_TYPES:  # TVM cannot hold 2/4-bit numpy arrays
            values = numpy_helper.to_array(tensor_proto).astype(NARROW_TYPES[tensor_proto.data_type])
            return onnx_frontend.tvm.runtime.tensor(values)
        return super()._parse_array(tensor_proto)

    def _check_for_unsupported_ops(self, graph: onnx.GraphProto) -> None:
        pass  # checked before import, with node names

    def _convert_operator(self, op_name, inputs, attrs, opset):
        name = attrs["tvm_custom"]["name"]
        node = self._quantized.get(name)
        if node is None:
            try:
                return self._as_tensor_output(self._convert_default(op_name, inputs, attrs, opset))
            except ModelError as err:
                if f"node {name!r}" in str(err):
                    raise
                raise ModelError(f"{op_name} node {name!r}: {err}") from None
            except Exception as err:
                reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
                raise ModelError(f"cannot convert {op_name} node {name!r}: {type(err).__name__}: {reason}") from err
        weight = self._emit_dequantize(node)
        if op_name == "DequantizeLinear":
            return weight
        out = self.bb.emit(relax.op.matmul(inputs[0], weight))
        return out if node.bias is None else relax.op.add(out, relax.const(node.bias))

    def _convert_default(self, op_name, inputs, attrs, opset):
        """lutc's converter where the inputs are shape values, else TVM's (on the form it takes)."""
        values = self._shape_values
        ort_converter = self._ort_converter(op_name, attrs)
        if ort_converter is not None:
            tensors = onnx_frontend.onnx_input(
                None if x is None else self.bb.normalize(values.as_tensor(self.bb, x)) for x in inputs
            )
            return ort_converter(self.bb, tensors, attrs)
        converter = SHAPE_CONVERTERS.get(op_name)
        out = converter(values, self.bb, inputs, attrs) if converter is not None else None
        if out is not None:
            return self.bb.normalize(out) if isinstance(out, relax.Expr) and not tvm.ir.is_prim_expr(out) else out
        if op_name in TVM_SHAPE_AWARE:
            converted = [values.as_shape(x) for x in inputs]
        else:
            converted = [values.as_tensor(self.bb, x) for x in inputs]
        if op_name in GATHER_OPS:
            converted = self._with_checked_indices(op_name, converted, attrs)
        return super()._convert_operator(op_name, onnx_frontend.onnx_input(converted), attrs, opset)

    def _ort_converter(self, op_name: str, attrs: dict):
        """lutc's converter of an ONNX Runtime op (``com.microsoft``, or ORT's in the default domain)."""
        domain = self._domains.get(attrs["tvm_custom"]["name"])
        if domain == CONTRIB_DOMAIN:
            return CONTRIB_CONVERTERS.get(op_name)
        converter = ORT_DEFAULT_DOMAIN_CONVERTERS.get(op_name) if domain in ("", "ai.onnx") else None
        return None if converter is None or op_name in onnx_frontend._get_convert_map() else converter

    def _with_checked_indices(self, op_name: str, inputs: list, attrs: dict) -> list:
        """``inputs`` with the gather's indices bounds-checked (:mod:`lutc.frontend.index_checks`)."""
        data, indices = inputs[0], inputs[1]
        data_ty = getattr(data, "ty", None)
        if not isinstance(data_ty, relax.TensorType) or data_ty.shape is None or not hasattr(indices, "ty"):
            return inputs
        shape = list(data_ty.shape.values)
        if op_name == "GatherND":
            batch = attrs.get("batch_dims", 0)
            index_ty = indices.ty
            if not isinstance(index_ty, relax.TensorType) or index_ty.shape is None:
                return inputs
            depth = index_ty.shape.values[-1]
            if not isinstance(depth, tirx.IntImm):
                return inputs
            dims = shape[batch : batch + int(depth)]
        else:
            dims = [shape[attrs.get("axis", 0) % len(shape)]]
        name = attrs["tvm_custom"]["name"]
        return [data, checked_indices(self.bb, indices, dims, name, op_name), *inputs[2:]]

    def _as_tensor_output(self, out):
        """Shapes leave a converter as remembered int64 tensors: every later op can take those."""
        if isinstance(out, relax.ShapeExpr):
            return self._shape_values.emit(self.bb, self._shape_values.read(out))
        if isinstance(out, relax.Expr) and not tvm.ir.is_prim_expr(out) and isinstance(out.ty, relax.ShapeType):
            return self.bb.emit(relax.op.shape_to_tensor(out))
        return out

    def _emit_dequantize(self, node: QuantizedNode) -> relax.Expr:
        zero = "implied" if node.zeros is None else ("int" if node.zeros.dtype == np.uint8 else "float")
        spec = DequantizeSpec(
            node.n, node.k, node.bits, node.group_len, zero, node.implied_zero, str(node.scales.dtype),
            fmt=node.fmt, node=node.name,
        )  # fmt: skip
        func = self.bb.add_func(lut_dequantize(spec), "lut_dequantize")
        args = [relax.const(a) for a in (node.codes, node.scales, node.zeros) if a is not None]
        return self.bb.emit(relax.call_tir(func, args, relax.TensorType((node.k, node.n), "float32")))


def import_onnx(
    model: str | Path | onnx.ModelProto, shape_dict: dict[str, list] | None = None, *, fold: bool = True
) -> tuple[IRModule, ModelInfo]:
    """A Relax module for ``model`` and what lutc found in it (inputs, outputs, quantized nodes)."""
    model, info = inspect_onnx(model, shape_dict, fold=fold)
    domains = {node.name: node.domain for node in model.graph.node}
    importer = _Importer(info.quantized, domains, None, "float32", keep_params_in_input=False, sanitize=True)
    forget_shared()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # TVM prints each failing node's raw inputs
            mod = importer.from_onnx(model.graph, info.opset)
    except ModelError:
        raise
    except Exception as err:
        raise ModelError(f"TVM's ONNX importer failed: {type(err).__name__}: {err}") from err
    finally:
        forget_shared()
    return mod, info
