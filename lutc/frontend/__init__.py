"""Model import: ONNX to Relax, with lutc's converters for quantized matmul weights."""

from .onnx_import import ModelInfo, QuantizedNode, TensorInfo, import_onnx, inspect_onnx, load_onnx

__all__ = ["ModelInfo", "QuantizedNode", "TensorInfo", "import_onnx", "inspect_onnx", "load_onnx"]
