"""The benchmarked libraries, one module each; importing this package imports none of them."""

from __future__ import annotations

from .base import Library

LUTC_MODES = ("fast", "exact")
BASELINES = ("ort-nbits-acc4", "ort-nbits-lut", "ort-fp32", "tvm-default", "numpy-fp32")
"""Library names (``--baselines``): MatMulNBits with accuracy_level=4, the same plus
``mlas.use_lut_gemm=1`` (2-bit), ORT fp32 MatMul, TVM's Relax + dlight default path, numpy fp32.
numpy runs last in each case: OpenBLAS workers keep spinning for a moment after a call."""


def _baseline(name: str, num_cores: int) -> Library:
    if name.startswith("ort-"):
        from .onnxrt import OrtMatMulFp32, OrtMatMulNBits

        return OrtMatMulFp32() if name == "ort-fp32" else OrtMatMulNBits(lut=name == "ort-nbits-lut")
    if name == "numpy-fp32":
        from .numpy_fp32 import NumpyFp32

        return NumpyFp32()
    if name == "tvm-default":
        from .tvm_default import TvmDefault

        return TvmDefault(num_cores=num_cores)
    raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES}")


def make_libraries(
    lutc_modes: tuple[str, ...],
    baselines: tuple[str, ...],
    num_cores: int,
    target: str,
    tuned: str | None = None,
    compare_targets: tuple[str, ...] = (),
    any_rows: bool = False,
    half_scales: bool = False,
) -> list[Library]:
    """lutc in ``lutc_modes`` (built for ``target``; fast mode also with the tuning log ``tuned``,
    built for any row count where ``any_rows``, with float16 scales where ``half_scales``), the
    same modes built for each of ``compare_targets``, then ``baselines``, in table order."""
    from .lut_kernels import LutcKernels, load_kernels

    if lutc_modes:
        load_kernels()  # fail now, with a clear message, not after the roofline
    lutc = [LutcKernels(mode, target) for mode in LUTC_MODES if mode in lutc_modes]
    if tuned is not None and "fast" in lutc_modes:
        lutc.insert(1, LutcKernels("fast", target, tuning_logs=tuned))
    if any_rows and "fast" in lutc_modes:
        lutc.insert(1, LutcKernels("fast", target, any_rows=True))
    if half_scales and "fast" in lutc_modes:
        lutc.insert(1, LutcKernels("fast", target, half_scales=True))
    lutc += [LutcKernels(mode, other, comparison=True) for other in compare_targets for mode in lutc_modes]
    return lutc + [_baseline(name, num_cores) for name in BASELINES if name in baselines]


__all__ = ["BASELINES", "LUTC_MODES", "Library", "make_libraries"]
