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
    "BuildOptions", "CompiledModel", "Generator", "Sampling", "__version__", "build", "build_decoder", "export_decoder",
    "generate", "load", "load_decoder", "quant", "tune",
]  # fmt: skip

_LAZY = {
    "build": ".builder",
    "BuildOptions": ".builder",
    "load": ".compiled",
    "CompiledModel": ".compiled",
    "tune": ".tune_model",
    "generate": ".decode",
    "build_decoder": ".decode",
    "export_decoder": ".decode",
    "load_decoder": ".decode",
    "Generator": ".generator",
    "Sampling": ".sampling",
}


def __getattr__(name: str):
    """``build``/``load`` and the submodules (``lutc.decode``, ``lutc.zoo``, ...) import TVM's
    compiler on first use, keeping ``import lutc`` cheap."""
    from importlib import import_module
    from importlib.util import find_spec

    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    if not name.startswith("_") and find_spec(f"{__name__}.{name}") is not None:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module 'lutc' has no attribute {name!r}")
