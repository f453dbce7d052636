"""What lutc reads from an ONNX model before import: I/O signatures and quantized weights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..errors import ModelError
from ..quant.formats import AnyFormat
from ..quant.onnx_convert import dequantize_linear_from_node, matmul_nbits_from_node
from ..quant.weights import QuantizedWeight, dequantize
from .positions import PositionLimit
from .prepare import PrepareReport
from .weights import WeightStore

Dim = int | str | None


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, shape (ints, or names/None for dynamic dims) and dtype.

    ``index_limit``: for integer inputs that index an embedding, its row count; values must lie
    in ``[-index_limit, index_limit)`` (TVM's gather reads out of bounds otherwise).
    ``window_rows``: for the past of a window-sized KV cache (``GroupQueryAttention`` with
    ``sliding_window_cache=1``), the rows it needs at least (the window) from the first call on.
    """

    name: str
    shape: tuple[Dim, ...]
    dtype: str
    index_limit: int | None = None
    window_rows: int | None = None

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


@dataclass(frozen=True, eq=False)
class QuantizedNode:
    """A quantized weight found in the graph, in lutc's ``[N, K]`` orientation: what lutc knows of
    it before reading its bytes (shapes, format), and how to read it (:meth:`arrays`, :meth:`weight`)
    from the model's tensors (a :class:`lutc.frontend.weights.WeightStore`).

    ``fmt`` is its lutc format (1-8 bits, ternary). ``zero`` is ``"implied"``, ``"int"`` (uint8
    codes) or ``"float"``.
    """

    node: onnx.NodeProto
    bits: int
    group_len: int
    n: int
    k: int
    zero: str
    implied_zero: float
    scale_dtype: str
    fmt: AnyFormat
    bias: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def op_type(self) -> str:
        return self.node.op_type

    def weight(self, tensors) -> QuantizedWeight:
        """The logical weight, read and checked; a :class:`ModelError` names the node."""
        try:
            if self.op_type == "DequantizeLinear":
                return dequantize_linear_from_node(self.node, tensors)
            return matmul_nbits_from_node(self.node, tensors)[0]
        except ValueError as err:
            raise ModelError(str(err)) from None

    def arrays(self, tensors) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(codes [N, K] uint8, scales [N, groups], zeros or None)``, what ``lut_dequantize`` reads."""
        weight = self.weight(tensors)
        return weight.codes, weight.scales, weight.zeros

    def dequantized(self, tensors) -> np.ndarray:
        """float32 ``[N, K]`` weights, for references and fallbacks."""
        return dequantize(self.weight(tensors))


@dataclass(frozen=True, eq=False)
class ModelInfo:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    quantized: dict[str, QuantizedNode]
    opset: int
    preparation: PrepareReport | None = None
    input_rules: tuple[str, ...] = ()
    """What the inputs must satisfy beyond their shapes, checked when the model runs."""
    weights: WeightStore | None = None
    """The model's tensors, read on demand."""
    position_limit: PositionLimit | None = None
    """How many positions (past + new tokens) the model can address, where it says."""
