"""Benchmarks: ``python -m lutc.bench kernels`` times lutc's LUT GEMM against other libraries.

One run measures, on the same inputs and with the same Python timing loop,

- lutc's compiled LUT kernels (fast and exact mode);
- ONNX Runtime ``com.microsoft::MatMulNBits`` (``accuracy_level=4``; for 2 bits also with
  ``mlas.use_lut_gemm=1``) and ONNX Runtime fp32 ``MatMul`` on dequantized weights;
- numpy fp32 ``x @ W.T`` on dequantized weights (BLAS limited to the thread count);
- TVM's default path: a Relax dequantize + matmul, legalized, scheduled by dlight's CPU rules;

and the machine's read bandwidth (the memory roofline). Importing this package is cheap: TVM,
ONNX Runtime and matplotlib are imported by the modules that use them.
"""

from .cli import main

__all__ = ["main"]
