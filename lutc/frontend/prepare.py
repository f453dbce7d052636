"""Graph preparation before TVM's importer: static input shapes, shape inference, folding.

Exporters (``torch.onnx.export``, onnxruntime-genai) compute masks, positions and reshape
targets from ``Shape`` values at run time. TVM 0.27's importer handles these subgraphs badly
(README, Known limits), and most of them are constant once the input shapes are known. This
stage runs on maintained libraries:

1. ``shapes=`` is written into the graph inputs (checked: known names, matching rank, no clash
   with a static dim); a named dim given for one input binds the same name in every input;
2. ONNX shape inference with data propagation fills in every value's shape;
3. onnxscript's constant folder (on onnx-ir) folds what is constant, ``Shape`` of static dims
   included, then unused nodes are removed.

Quantized weights come through unchanged: ``DequantizeLinear`` and every op outside the
default domain (``com.microsoft::MatMulNBits``, ...) are never folded.
"""

from __future__ import annotations

import operator
import re
from collections import Counter
from dataclasses import dataclass, field

import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnxscript.optimizer import _constant_folding

from ..errors import ModelError
from .last_position import slice_logits_to_last_position

FOLD_OUTPUT_LIMIT = 1 << 20
"""Largest folded tensor (elements): a 1024 x 1024 causal mask, not a weight matrix."""

FOLD_INPUT_LIMIT = 1 << 16
"""Largest input a folded node may read (elements); ``Shape`` and ``Size`` read none."""

DEFAULT_DOMAINS = ("", "ai.onnx")
NEVER_FOLDED = frozenset(
    {"DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear", "Multinomial", "Bernoulli"}
    | {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike"}
)
"""Quantized weights stay quantized for lutc's converters; random ops are not constants."""


@dataclass(frozen=True)
class PrepareReport:
    """What preparation did to the graph."""

    nodes_before: int
    nodes_after: int
    static_inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    removed_ops: dict[str, int] = field(default_factory=dict)
    last_position: str | None = None
    """The LM head's output where only the last position's logits are computed."""

    def describe(self) -> str:
        lines = [f"graph preparation: {self.nodes_before} -> {self.nodes_after} nodes"]
        if self.removed_ops:
            removed = ", ".join(f"{op} x{n}" for op, n in sorted(self.removed_ops.items(), key=lambda kv: -kv[1]))
            lines.append(f"  folded or removed: {removed}")
        lines += [f"  input {name} fixed to {list(shape)}" for name, shape in self.static_inputs.items()]
        if self.last_position:
            lines.append(f"  logits of the last position only (the LM head {self.last_position} reads one row)")
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, data: dict) -> PrepareReport:
        static = {k: tuple(v) for k, v in data.get("static_inputs", {}).items()}
        removed = dict(data.get("removed_ops", {}))
        return cls(data["nodes_before"], data["nodes_after"], static, removed, data.get("last_position"))

    def as_dict(self) -> dict:
        return {
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "static_inputs": {k: list(v) for k, v in self.static_inputs.items()},
            "removed_ops": dict(self.removed_ops),
            "last_position": self.last_position,
        }


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in initializers]


def _dims(value: onnx.ValueInfoProto) -> list[onnx.TensorShapeProto.Dimension]:
    return list(value.type.tensor_type.shape.dim)


def _check_shape(value: onnx.ValueInfoProto, shape: list) -> tuple[int, ...]:
    if not isinstance(shape, list | tuple) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise ModelError(f"shapes[{value.name!r}] must be a list of ints; got {shape!r}")
    if any(d <= 0 for d in shape):
        raise ModelError(f"shapes[{value.name!r}] = {list(shape)}: every dim must be positive")
    if not value.type.tensor_type.HasField("shape"):
        return tuple(shape)
    dims = _dims(value)
    if len(dims) != len(shape):
        raise ModelError(
            f"shapes[{value.name!r}] = {list(shape)} has rank {len(shape)}; the input has rank {len(dims)}"
        )
    for axis, (dim, size) in enumerate(zip(dims, shape, strict=True)):
        if dim.HasField("dim_value") and dim.dim_value != size:
            raise ModelError(f"shapes[{value.name!r}] = {list(shape)}: dim {axis} is fixed to {dim.dim_value}")
    return tuple(shape)


def _bound_symbols(inputs: dict[str, onnx.ValueInfoProto], shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """Dim names -> sizes given by ``shapes``; one name with two sizes is an error."""
    bound: dict[str, tuple[int, str]] = {}
    for name, shape in shapes.items():
        for dim, size in zip(_dims(inputs[name]), shape, strict=False):
            if not dim.dim_param:
                continue
            first = bound.setdefault(dim.dim_param, (size, name))
            if first[0] != size:
                raise ModelError(
                    f"dim {dim.dim_param!r} is {first[0]} in shapes[{first[1]!r}] but {size} in shapes[{name!r}]"
                )
    return {symbol: size for symbol, (size, _) in bound.items()}


DIM_OPERATORS = re.compile(r"(\+|\-|\*|//|/)")
"""How TVM's importer splits a dim name such as ``past+seq`` into an expression (left to right)."""
DIM_ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.floordiv,
                  "//": operator.floordiv}  # fmt: skip
"""Its operators: divisions of dims are floor divisions."""


def _with_symbols(name: str, symbols: dict[str, int]) -> int | str:
    """``name`` with the bound symbols in it replaced (``past+seq`` -> ``past+1``), or its value
    where nothing symbolic is left (evaluated left to right, as TVM's importer reads it)."""
    tokens = [str(symbols[t]) if t in symbols else t for t in DIM_OPERATORS.split(name.replace(" ", ""))]
    if not all(t.isdigit() for t in tokens[::2]):
        return "".join(tokens)
    value = int(tokens[0])
    for op, operand in zip(tokens[1::2], tokens[2::2], strict=True):
        value = DIM_ARITHMETIC[op](value, int(operand))
    return value


def _fix_dims(value: onnx.ValueInfoProto, given: tuple[int, ...] | None, symbols: dict[str, int]) -> bool:
    """Make ``value``'s dims static from ``given`` or the bound symbols (also inside a dim named by
    an expression, ``past+seq``); True if any changed."""
    shape = value.type.tensor_type.shape
    if given is not None and not value_has_shape(value):
        shape.dim.extend(onnx.TensorShapeProto.Dimension(dim_value=d) for d in given)
        return True
    changed = False
    for axis, dim in enumerate(shape.dim):
        if dim.HasField("dim_value"):
            continue
        size = given[axis] if given is not None else _with_symbols(dim.dim_param, symbols) if dim.dim_param else None
        if size is None or size == dim.dim_param:
            continue
        dim.Clear()
        if isinstance(size, int):
            dim.dim_value = size
        else:
            dim.dim_param = size
        changed = True
    return changed


def apply_input_shapes(model: onnx.ModelProto, shapes: dict[str, list[int]] | None) -> dict[str, tuple[int, ...]]:
    """Write ``shapes`` into ``model``'s inputs in place; return the inputs it changed, if now static."""
    inputs = {v.name: v for v in _graph_inputs(model)}
    shapes = dict(shapes or {})
    unknown = sorted(set(shapes) - set(inputs))
    if unknown:
        raise ModelError(f"shapes= names {unknown}, which are not model inputs; the inputs are {sorted(inputs)}")
    checked = {name: _check_shape(inputs[name], shape) for name, shape in shapes.items()}
    symbols = _bound_symbols(inputs, checked)
    fixed = {}
    for name, value in inputs.items():
        changed = _fix_dims(value, checked.get(name), symbols)
        dims = _dims(value)
        if changed and all(d.HasField("dim_value") for d in dims):
            fixed[name] = tuple(d.dim_value for d in dims)
    return fixed


def value_has_shape(value: onnx.ValueInfoProto) -> bool:
    return value.type.tensor_type.HasField("shape")


def _should_fold(node: ir.Node) -> bool | None:
    """Never fold quantized weights, random ops or ops outside the default domain; fold masks.

    onnxscript keeps ``ConstantOfShape`` to keep files small; lutc folds it (up to
    ``FOLD_OUTPUT_LIMIT``) because the masks built from it fold only then.
    """
    if node.domain not in DEFAULT_DOMAINS or node.op_type in NEVER_FOLDED:
        return False
    return True if node.op_type == "ConstantOfShape" else None


def _input_dims(model: onnx.ModelProto) -> list[tuple]:
    return [tuple(d.dim_value or d.dim_param or None for d in _dims(v)) for v in model.graph.input]


def _run_symbolic_inference(model: onnx.ModelProto, auto_merge: bool) -> tuple[onnx.ModelProto, bool]:
    """ONNX Runtime's symbolic shape inference: (the model with what it inferred, whether it is all).

    ``SymbolicShapeInference.infer_shapes`` writes ``sym_shape_infer_temp.onnx`` and its data into
    the working directory when inference is incomplete; its loop is run here instead, writing nothing.
    """
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    inference = SymbolicShapeInference(2**31 - 1, auto_merge, False, 0)
    inference._preprocess(model)
    complete = False
    while inference.run_:
        complete = inference._infer_impl()
    inference._update_output_from_vi()
    return inference.out_mp_, complete


def _symbolic_inference(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """Symbolic shape inference that knows ORT's contrib ops (``MatMulNBits``, ...).

    Strict first; a graph it cannot complete (dynamo's ``Dim.AUTO`` gives equal dims distinct
    symbols) is retried with ``auto_merge``, kept only if no input dim became a number (a merge
    once turned ``seq`` into a head count); else the strict, partial result.
    """
    before = _input_dims(model)
    partial = None
    for auto_merge in (False, True):
        try:
            inferred, complete = _run_symbolic_inference(model, auto_merge)
        except Exception:
            continue
        after = _input_dims(inferred)
        kept = all(isinstance(b, int) or not isinstance(a, int) for bs, as_ in zip(before, after, strict=True)
                   for b, a in zip(bs, as_, strict=True))  # fmt: skip
        if complete and kept:
            return inferred
        partial = partial or (inferred if not auto_merge else None)
    return partial


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Symbolic shape inference, else ONNX's with data propagation, else the model as it is."""
    inferred = _symbolic_inference(model)
    if inferred is not None:
        return inferred
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # inference is an aid: TVM's importer infers shapes itself
        return model


def _fold(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = ir.serde.deserialize_model(model)
    passes = ir.passes.Sequential(
        common_passes.InlinePass(),
        _constant_folding.FoldConstantsPass(
            shape_inference=True,
            input_size_limit=FOLD_INPUT_LIMIT,
            output_size_limit=FOLD_OUTPUT_LIMIT,
            should_fold=_should_fold,
        ),
        common_passes.RemoveUnusedNodesPass(),
    )
    passes(graph)
    return ir.serde.serialize_model(graph)


def _op_counts(model: onnx.ModelProto) -> Counter:
    return Counter(node.op_type for node in model.graph.node)


def _weight_k(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> int | None:
    """K of a quantized matmul reading a graph input: ``MatMulNBits``'s attribute, or the rows of
    a constant ``MatMul`` weight."""
    if node.op_type == "MatMulNBits":
        return next((a.i for a in node.attribute if a.name == "K"), None)
    if node.op_type in ("MatMul", "Gemm") and node.domain in DEFAULT_DOMAINS and node.input[1] in initializers:
        dims = initializers[node.input[1]].dims
        transposed = any(a.name == "transB" and a.i for a in node.attribute)
        return dims[1 if transposed else 0] if len(dims) == 2 else None
    return None


def bind_weight_dims(model: onnx.ModelProto) -> dict[str, int]:
    """Dims the weights fix: an input's symbolic last dim read by a matmul of K rows is K.

    Written into the inputs in place, so a call with another size is refused by name instead of
    reading past the weight (an ``A[batch, seq, k]`` against K = 64 accepted any k).
    """
    inputs = {v.name: v for v in _graph_inputs(model)}
    initializers = {t.name: t for t in model.graph.initializer}
    symbols = {}
    for node in model.graph.node:
        value = inputs.get(node.input[0]) if node.input else None
        k = _weight_k(node, initializers) if value is not None else None
        last = _dims(value)[-1] if value is not None and _dims(value) else None
        if k is not None and last is not None and last.dim_param:
            symbols[last.dim_param] = k
    for value in inputs.values():
        _fix_dims(value, None, symbols)
    return symbols


def prepare_graph(
    model: onnx.ModelProto,
    shapes: dict[str, list[int]] | None = None,
    *,
    fold: bool = True,
    last_logits: bool = False,
) -> tuple[onnx.ModelProto, PrepareReport]:
    """A prepared copy of ``model`` (static where ``shapes`` says, shape subgraphs folded unless not
    ``fold``; with ``last_logits``, logits of the last position only where the graph allows it)."""
    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    static = apply_input_shapes(prepared, shapes)
    head = slice_logits_to_last_position(prepared) if last_logits else None
    bind_weight_dims(prepared)
    if not fold:
        return prepared, PrepareReport(len(model.graph.node), len(prepared.graph.node), static, last_position=head)
    try:
        folded = _fold(_infer_shapes(prepared))
    except Exception as err:
        raise ModelError(f"graph preparation failed: {type(err).__name__}: {err}") from None
    before, after = _op_counts(model), _op_counts(folded)
    removed = {op: n for op, n in (before - after).items() if op != "Constant"}
    report = PrepareReport(len(model.graph.node), len(folded.graph.node), static, removed, head)
    return folded, report
