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

__all__ = [
    "BuildOptions", "CompiledModel", "__version__", "build", "build_decoder", "export_decoder", "generate", "load",
    "load_decoder", "quant", "tune",
]  # fmt: skip

_LAZY = {
    "build": ".builder",
    "BuildOptions": ".builder",
    "load": ".compiled",
    "CompiledModel": ".compiled",
    "tune": ".tuning.api",
    "generate": ".decode",
    "build_decoder": ".decode",
    "export_decoder": ".decode",
    "load_decoder": ".decode",
}


def __getattr__(name: str):
    """``build``/``load`` import TVM's compiler on first use, keeping ``import lutc`` cheap."""
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'lutc' has no attribute {name!r}")
