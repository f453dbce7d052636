"""``lutc.build``: a quantized ONNX model in, a compiled, callable model out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import onnx
import tvm
from tvm.target import Target

from .compiled import CompiledModel, metadata_for
from .frontend import import_onnx
from .frontend.float_weights import quantize_float_matmuls
from .pipeline import get_pipeline, lut_passes
from .quant.formats import get_format
from .relay_passes import DECISIONS_ATTR, RewriteOptions
from .runtime import set_threads
from .targets import resolve_target


@dataclass(frozen=True)
class BuildOptions:
    """How to compile: table mode, symmetrization, threads and per-node overrides."""

    mode: Literal["fast", "exact"] = "fast"
    symmetrize: Literal["auto", "on", "off"] = "auto"
    threads: int | None = None
    keep_dequantize: tuple[str, ...] = ()
    quantize: str | None = None
    shapes: dict[str, list[int]] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if self.mode not in ("fast", "exact"):
            raise ValueError(f"mode must be 'fast' or 'exact'; got {self.mode!r}")
        if self.symmetrize not in ("auto", "on", "off"):
            raise ValueError(f"symmetrize must be 'auto', 'on' or 'off'; got {self.symmetrize!r}")
        if self.quantize is not None:
            get_format(self.quantize)

    def rewrite_options(self) -> RewriteOptions:
        """``auto`` symmetrizes exact-mode tables (faster float lookups), not int8 ones."""
        symmetric = self.symmetrize == "on" or (self.symmetrize == "auto" and self.mode == "exact")
        return RewriteOptions(self.mode, symmetric, frozenset(self.keep_dequantize))


def build(
    model: str | Path | onnx.ModelProto,
    target: str | dict | Target = "x86",
    *,
    tuning_logs: str | Path | None = None,
    **options,
) -> CompiledModel:
    """Compile a quantized ONNX model for ``target`` (``"x86"``, ``"llvm"``, a dict or a Target).

    Options (:class:`BuildOptions`): ``mode`` (``"fast"`` int8 tables or ``"exact"`` float
    tables), ``symmetrize`` (``"auto"``/``"on"``/``"off"``), ``threads``, ``keep_dequantize``
    (node names left on TVM's dequantize path), ``quantize`` (a preset such as ``"w2g128"``
    to quantize float MatMul/Gemm weights at build time) and ``shapes`` (static input shapes).
    """
    if tuning_logs is not None:
        raise NotImplementedError("tuning logs arrive with auto-tuning (issue 5); build without tuning_logs")
    opts = BuildOptions(**options)
    tvm_target = resolve_target(target, opts.threads)
    if opts.threads is not None:
        set_threads(opts.threads)
    if opts.quantize is not None:
        model = quantize_float_matmuls(model, get_format(opts.quantize))
    mod, info = import_onnx(model, opts.shapes)
    if tvm_target.kind.name != "llvm":
        raise NotImplementedError(f"lutc.build supports LLVM CPU targets; got {tvm_target.kind.name}")
    mod = tvm.transform.Sequential(lut_passes(opts.rewrite_options()))(mod)
    executable = tvm.compile(mod, tvm_target, relax_pipeline=get_pipeline(tvm_target, None))
    return CompiledModel(executable, metadata_for(info, _decisions(mod), tvm_target, opts))


def _decisions(mod: tvm.IRModule) -> dict[str, str]:
    attrs = mod.attrs
    return {str(k): str(v) for k, v in attrs[DECISIONS_ATTR].items()} if attrs and DECISIONS_ATTR in attrs else {}
