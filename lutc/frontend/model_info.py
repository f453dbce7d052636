"""What lutc reads from an ONNX model before import: I/O signatures and quantized weights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..quant.formats import AnyFormat
from ..quant.weights import QuantizedWeight, dequantize
from .prepare import PrepareReport

Dim = int | str | None


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, shape (ints, or names/None for dynamic dims) and dtype.

    ``index_limit``: for integer inputs that index an embedding, its row count; values must lie
    in ``[-index_limit, index_limit)`` (TVM's gather reads out of bounds otherwise).
    """

    name: str
    shape: tuple[Dim, ...]
    dtype: str
    index_limit: int | None = None

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


@dataclass(frozen=True, eq=False)
class QuantizedNode:
    """A quantized weight found in the graph, in lutc's ``[N, K]`` orientation.

    ``weight`` is set for lutc formats (1-4 bits, ternary); wider codes (5-8 bits) keep only
    ``codes``/``scales``/``zeros`` and run on the dequantize path.
    """

    name: str
    op_type: str
    bits: int
    group_len: int
    codes: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray | None
    implied_zero: float
    weight: QuantizedWeight | None = None
    bias: np.ndarray | None = None

    @property
    def fmt(self) -> AnyFormat | None:
        return None if self.weight is None else self.weight.fmt

    @property
    def n(self) -> int:
        return int(self.codes.shape[0])

    @property
    def k(self) -> int:
        return int(self.codes.shape[1])

    def dequantized(self) -> np.ndarray:
        """float32 ``[N, K]`` weights, for references and fallbacks."""
        if self.weight is not None:
            return dequantize(self.weight)
        repeat = self.k // self.scales.shape[1]
        zeros = self.implied_zero if self.zeros is None else np.repeat(self.zeros.astype(np.float32), repeat, 1)
        return np.repeat(self.scales.astype(np.float32), repeat, 1) * (self.codes.astype(np.float32) - zeros)


@dataclass(frozen=True, eq=False)
class ModelInfo:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    quantized: dict[str, QuantizedNode]
    opset: int
    preparation: PrepareReport | None = None
    input_rules: tuple[str, ...] = ()
    """What the inputs must satisfy beyond their shapes, checked when the model runs."""
