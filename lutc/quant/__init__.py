"""Weight formats, the packed kernel layout, the numpy LUT reference and ONNX converters.

This package is the oracle: every kernel and pass in lutc is tested against it.

- :mod:`.formats`: ``IntFormat``, ``TernaryFormat`` and the ``FORMATS`` presets;
- :mod:`.weights`: ``QuantizedWeight``, ``quantize``, ``dequantize``, ``reference_matmul``;
- :mod:`.layout`: the packed kernel layout, ``pack`` and ``unpack``;
- :mod:`.lut`: the LUT algorithm, exact and fast mode, and their error bounds;
- :mod:`.onnx_convert`: ``MatMulNBits`` and blocked ``DequantizeLinear`` converters.
"""

from .formats import FORMATS, IntFormat, TernaryFormat, WeightFormat, get_format
from .layout import TILE_N, PackedWeight, half_scaled, pack, unpack
from .lut import LutConfig, Tables, exact_error_bound, fast_error_bound, lut_gemm, lut_matmul, precompute
from .weights import QuantizedWeight, dequantize, quantize, random_weights, reference_matmul

__all__ = [
    "FORMATS",
    "TILE_N",
    "IntFormat",
    "LutConfig",
    "PackedWeight",
    "QuantizedWeight",
    "Tables",
    "TernaryFormat",
    "WeightFormat",
    "dequantize",
    "exact_error_bound",
    "fast_error_bound",
    "get_format",
    "half_scaled",
    "lut_gemm",
    "lut_matmul",
    "pack",
    "precompute",
    "quantize",
    "random_weights",
    "reference_matmul",
    "unpack",
]
