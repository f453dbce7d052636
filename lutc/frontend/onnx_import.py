"""ONNX to Relax: TVM's importer plus converters for quantized matmul weights.

TVM 0.27's Relax ONNX frontend has no ``com.microsoft::MatMulNBits`` converter and refuses
blocked ``DequantizeLinear``. lutc subclasses its importer (TVM's sources stay untouched):

- the graph arrives without its weight bytes (:mod:`lutc.frontend.weights`); before import, every
  quantized weight's layout and format are checked from its tensors' shapes and dtypes with
  :mod:`lutc.quant.onnx_convert` (errors name the node);
- during import, referenced initializers become weight parameters of ``main`` and small ones
  constants (:mod:`lutc.frontend.weight_params`); a quantized node becomes
  ``matmul(x, call_tir(lut_dequantize, codes, scales, zeros))`` over weight parameters keyed
  ``codes:<node>``..., the pattern the LUT rewrite pass looks for. Everything else goes through
  TVM's converters.
"""

from __future__ import annotations

import builtins
import contextvars
import os
import threading
import warnings
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
from ..quant.onnx_convert import (
    dequantize_linear_node_format,
    matmul_nbits_node_format,
)
from .attention import INPUT_RULES
from .contrib import CONTRIB_CONVERTERS, CONTRIB_DOMAIN, ORT_DEFAULT_DOMAIN_CONVERTERS, narrow_float
from .converters import SHAPE_CONVERTERS, TVM_SHAPE_AWARE
from .index_checks import checked_indices
from .model_info import ModelInfo, QuantizedNode, TensorInfo
from .positions import position_limit
from .prepare import prepare_graph
from .relax_util import sharing_values
from .shape_values import ShapeValues
from .weight_params import WEIGHTS_ATTR, weight_key, weight_var, weights_of, with_weights
from .weights import ModelSource, WeightStore, load_model_file, proto_from_bytes, read_weightless

MIN_OPSET = 13
"""Oldest default-domain opset lutc accepts; older models go through ``onnx.version_converter``."""

NARROW_NAMES = ("int4", "uint4", "int2", "uint2")
NARROW_TYPES = {
    onnx.TensorProto.INT4: np.int8,
    onnx.TensorProto.UINT4: np.uint8,
    onnx.TensorProto.INT2: np.int8,
    onnx.TensorProto.UINT2: np.uint8,
}


def load_onnx(model: ModelSource) -> onnx.ModelProto:
    """Read a model, turning a missing, truncated or corrupt file into a :class:`ModelError`."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes | bytearray | memoryview):
        return proto_from_bytes(model)
    return load_model_file(Path(model), external_data=True)


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


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name, in place (the importer knows nodes only by name)."""
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)


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


class _Shapes:
    """Initializer names -> shape and dtype only (``read``: these as arrays), for the format checks."""

    def __init__(self, store: WeightStore, read: tuple[str, ...] = ()):
        self.store, self.read = store, read

    def __contains__(self, name: object) -> bool:
        return name in self.store

    def __getitem__(self, name: str):
        return self.store[name] if name in self.read else self.store.meta(name)


def _bias(node: onnx.NodeProto, store: WeightStore) -> np.ndarray | None:
    name = node.input[5] if len(node.input) > 5 else ""
    return np.array(store[name]) if name else None


def _nbits_node(node: onnx.NodeProto, store: WeightStore) -> QuantizedNode:
    fmt = matmul_nbits_node_format(node, _Shapes(store))
    n, k = (next(a.i for a in node.attribute if a.name == key) for key in ("N", "K"))
    return _lutc_node(node, fmt, n, k, _bias(node, store))


def _lutc_node(node: onnx.NodeProto, fmt, n: int, k: int, bias: np.ndarray | None) -> QuantizedNode:
    zero = "implied" if fmt.zero_point == "none" else fmt.zero_point
    return QuantizedNode(node, fmt.bits, group_length(fmt, k), n, k, zero, fmt.implied_zero, fmt.scale_dtype, fmt,
                         bias)  # fmt: skip


def _quantized_node(node: onnx.NodeProto, store: WeightStore) -> QuantizedNode | None:
    if node.op_type == "MatMulNBits" and node.domain == "com.microsoft":
        return _nbits_node(node, store)
    narrow = node.input and node.input[0] in store and store.meta(node.input[0]).dtype.name in NARROW_NAMES
    if node.op_type == "DequantizeLinear" and narrow:
        fmt = dequantize_linear_node_format(node, _Shapes(store, tuple(node.input[2:3])))
        k, n = store.meta(node.input[0]).shape
        return _lutc_node(node, fmt, n, k, None)
    return None


def _tensor_info(value: onnx.ValueInfoProto, limits: dict | None = None, windows: dict | None = None) -> TensorInfo:
    tensor = value.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "unknown"
    return TensorInfo(value.name, dims, dtype, (limits or {}).get(value.name), (windows or {}).get(value.name))


def _window_rows(model: onnx.ModelProto) -> dict[str, int]:
    """The past inputs of window-sized KV caches (``GroupQueryAttention`` with
    ``sliding_window_cache=1``) -> the window: the rows they must hold from the first call on."""
    windows: dict[str, int] = {}
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "GroupQueryAttention" or not attrs.get("sliding_window_cache", 0):
            continue
        for name in node.input[3:5]:
            windows[name] = max(windows.get(name, 0), int(attrs.get("local_window_size", -1)))
    return windows


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
    model: ModelSource,
    shapes: dict[str, list[int]] | None = None,
    *,
    fold: bool = True,
    base_dir: str | Path | None = None,
    last_logits: bool = False,
) -> tuple[onnx.ModelProto, ModelInfo]:
    """Read (without weight bytes), check and prepare a model; return the prepared graph and what
    lutc found in it (``info.weights`` reads the tensors).

    ``base_dir``: where a ``ModelProto``'s external data files are (a path's folder by default).
    ``fold=False`` applies ``shapes`` but skips inference and folding (tests reach the converters so).
    ``last_logits``: compute the logits of the last position only (:mod:`.last_position`).
    """
    folder = Path(base_dir) if base_dir is not None else None
    if folder is None and isinstance(model, str | os.PathLike):
        folder = Path(model).parent
    model, store = read_weightless(model, base_dir)
    _name_nodes(model)
    opset = _check_opset(model)
    _check_ops(model)
    model, report = prepare_graph(model, shapes, fold=fold, last_logits=last_logits)
    store = store.for_graph(model.graph)
    quantized = {}
    for node in model.graph.node:
        try:
            found = _quantized_node(node, store)
        except ValueError as err:
            raise ModelError(str(err)) from None
        if found is not None:
            quantized[node.name] = found
    limits = _index_limits(model)
    windows = _window_rows(model)
    inputs = tuple(_tensor_info(v, limits, windows) for v in model.graph.input if v.name not in store)
    outputs = tuple(_tensor_info(v) for v in model.graph.output)
    ops = {n.op_type for n in model.graph.node if n.domain == CONTRIB_DOMAIN}
    rules = tuple(INPUT_RULES[op] for op in sorted(ops & INPUT_RULES.keys()))
    limit = position_limit(model, folder)
    return model, ModelInfo(inputs, outputs, quantized, opset, report, rules, store, limit)


GATHER_OPS = frozenset({"Gather", "GatherElements", "GatherND"})
"""Ops whose runtime indices get a bounds check."""


def _relax_dtype(dtype: np.dtype) -> str:
    """The TVM dtype of an initializer's values (2/4-bit ones are held widened, as ``_parse_array`` does)."""
    narrow = {"int4": "int8", "int2": "int8", "uint4": "uint8", "uint2": "uint8"}
    return narrow.get(dtype.name, dtype.name)


class _Importer(onnx_frontend.ONNXGraphImporter):
    """TVM's importer with lutc's quantized-weight nodes (looked up by node name) and weights as
    parameters (referenced initializers and the quantized nodes' arrays, keyed as
    :mod:`lutc.frontend.weight_params` says)."""

    def __init__(self, info: ModelInfo, domains: dict[str, str]):
        super().__init__(None, "float32", keep_params_in_input=True, sanitize=True)
        self._quantized = info.quantized
        self._store = info.weights
        self._domains = domains
        self._shape_values = ShapeValues()
        self._weights: dict[str, relax.Var] = {}

    def _parse_graph_initializers(self, graph: onnx.GraphProto) -> None:
        """Referenced initializers become weight parameters, the others constants; then one parameter
        per array of each quantized node. TVM's importer appends ``_params`` to ``main``'s
        parameters and lists their values (here: keys) in the ``params`` attribute."""
        for tensor in graph.initializer:
            if not tensor.name.strip():
                raise ValueError("Tensor's name is required.")
            if tensor.name in self._store.refs:
                meta = self._store.meta(tensor.name)
                self._nodes[tensor.name] = self._weight(weight_key("initializer", tensor.name), meta.shape,
                                                        _relax_dtype(meta.dtype))  # fmt: skip
            else:
                self._nodes[tensor.name] = relax.const(self._parse_array(tensor))
        for node in self._quantized.values():
            groups = (node.n, node.k // node.group_len)
            self._weight(weight_key("codes", node.name), (node.n, node.k), "uint8")
            self._weight(weight_key("scales", node.name), groups, node.scale_dtype)
            if node.zero != "implied":
                zero_dtype = "uint8" if node.zero == "int" else node.scale_dtype
                self._weight(weight_key("zeros", node.name), groups, zero_dtype)

    def _weight(self, key: str, shape, dtype: str) -> relax.Var:
        var = self._weights[key] = weight_var(key, shape, dtype)
        self._params[key] = (var, key)
        return var

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
        narrow = narrow_float(inputs[0])  # float16 activations: the LUT kernels take float32
        x = self.bb.normalize(relax.op.astype(inputs[0], "float32")) if narrow else inputs[0]
        out = self.bb.emit(relax.op.matmul(x, weight))
        out = out if node.bias is None else relax.op.add(out, relax.const(node.bias.astype(np.float32)))
        return self.bb.normalize(relax.op.astype(out, narrow)) if narrow else out

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
        spec = DequantizeSpec(
            node.n, node.k, node.bits, node.group_len, node.zero, node.implied_zero, node.scale_dtype,
            fmt=node.fmt, node=node.name,
        )  # fmt: skip
        func = self.bb.add_func(lut_dequantize(spec), "lut_dequantize")
        parts = ("codes", "scales", "zeros") if node.zero != "implied" else ("codes", "scales")
        args = [self._weights[weight_key(part, node.name)] for part in parts]
        return self.bb.emit(relax.call_tir(func, args, relax.TensorType((node.k, node.n), "float32")))


_ONE_IMPORT_AT_A_TIME = threading.Lock()
"""TVM's importer builds ``main`` in a function scope of ``relax.BlockBuilder``, whose scope stack
is one list per process: two imports in two threads interleaved their scopes and failed
(``BlockBuilder.current() must be self``). Imports take turns; the rest of a build runs in parallel."""

_IMPORTING: contextvars.ContextVar[bool] = contextvars.ContextVar("lutc_importing", default=False)
"""True while this thread runs TVM's importer for :func:`import_onnx`."""


def _importer_print(*args, **kwargs) -> None:
    """``print`` for TVM's importer module, which prints each failing node's raw inputs (whole
    constant arrays) before raising: silent inside :func:`import_onnx` in this thread (the
    :class:`ModelError` says what failed), ``print`` anywhere else. Unlike swapping
    ``sys.stdout``, it leaves other threads' output alone."""
    if not _IMPORTING.get():
        builtins.print(*args, **kwargs)


onnx_frontend.print = _importer_print


RENAMING_WARNING = r"Renaming name "
"""TVM's importer warns once per input whose ONNX name is not an identifier (``past_key_values.0.key``,
60 a SmolLM2 build): lutc binds inputs by position and keeps their ONNX names, so it is noise."""


def import_onnx(
    model: ModelSource,
    shape_dict: dict[str, list] | None = None,
    *,
    fold: bool = True,
    base_dir: str | Path | None = None,
    last_logits: bool = False,
) -> tuple[IRModule, ModelInfo]:
    """A Relax module for ``model`` and what lutc found in it (inputs, outputs, quantized nodes,
    ``info.weights``). ``main`` takes the inputs, then the weights it reads (:mod:`.weight_params`)."""
    model, info = inspect_onnx(model, shape_dict, fold=fold, base_dir=base_dir, last_logits=last_logits)
    domains = {node.name: node.domain for node in model.graph.node}
    importer = _Importer(info, domains)
    token = _IMPORTING.set(True)
    try:
        with _ONE_IMPORT_AT_A_TIME, sharing_values(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", RENAMING_WARNING, UserWarning)
            mod = importer.from_onnx(model.graph, info.opset)
    except ModelError:
        raise
    except Exception as err:
        raise ModelError(f"TVM's ONNX importer failed: {type(err).__name__}: {err}") from err
    finally:
        _IMPORTING.reset(token)
    return _with_weight_keys(mod), info


def _with_weight_keys(mod: IRModule) -> IRModule:
    """``main`` with the importer's ``params`` attribute (the weights' keys) as :data:`WEIGHTS_ATTR`,
    taking only the weights it reads."""
    main = mod["main"]
    keys = [str(key) for key in main.attrs["params"]] if "params" in main.attrs else []
    main = main.without_attr("params").with_attr(WEIGHTS_ATTR, keys)
    mod["main"] = with_weights(main, weights_of(main))
    return mod
