"""lutc: lookup-table mixed-precision GEMM for low-bit quantized ONNX models, on Apache TVM.

Importing lutc is cheap: it loads the numpy reference (:mod:`lutc.quant`) only. TVM is
imported by the modules that compile, and ``tvm.s_tir.tensor_intrin`` never at import time.
"""

from importlib.metadata import PackageNotFoundError, version

from . import quant

try:
    __version__ = version("lutc")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "quant"]
