"""``lutc.build``: a quantized ONNX model in, a compiled, callable model out."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import tvm
from tvm import relax
from tvm.target import Target

from .backend import backend_of, device_of, missing_on_host
from .compiled import CompiledModel
from .description import ModelDescription
from .errors import CompileError, LutcError, ModelError
from .frontend import ModelInfo, import_onnx
from .frontend.float_weights import quantize_float_matmuls
from .frontend.model_info import TensorInfo
from .frontend.weights import ModelSource, WeightReader
from .gguf.convert import MODEL_FILE, converted
from .pipeline import get_pipeline, lut_passes
from .quant.formats import get_format
from .relay_passes import DECISIONS_ATTR, RewriteOptions
from .runtime import set_threads
from .targets import converts_half, resolve_target
from .tuning.apply import warn_untuned
from .tuning.apply_tuning_log import tuning_summary
from .weights import WeightLayout, WeightSet, compute_weights


@dataclass(frozen=True)
class BuildOptions:
    """How to compile: table mode, symmetrization, threads and per-node overrides."""

    mode: Literal["fast", "exact"] = "fast"
    symmetrize: Literal["auto", "on", "off"] = "auto"
    threads: int | None = None
    keep_dequantize: tuple[str, ...] = ()
    quantize: str | None = None
    shapes: dict[str, list[int]] | None = field(default=None, hash=False)
    fuse: bool = True
    last_logits: bool = False
    half_scales: Literal["auto", "on", "off"] = "auto"

    def __post_init__(self) -> None:
        if self.mode not in ("fast", "exact"):
            raise ValueError(f"mode must be 'fast' or 'exact'; got {self.mode!r}")
        for name in ("symmetrize", "half_scales"):
            if getattr(self, name) not in ("auto", "on", "off"):
                raise ValueError(f"{name} must be 'auto', 'on' or 'off'; got {getattr(self, name)!r}")
        if self.half_scales == "on" and self.mode == "exact":
            raise ValueError("half_scales='on' needs mode='fast': exact mode keeps the model's scales")
        if self.quantize is not None:
            get_format(self.quantize)
        if isinstance(self.keep_dequantize, str) or not all(isinstance(n, str) for n in self.keep_dequantize):
            raise ValueError(f"keep_dequantize takes a tuple of node names; got {self.keep_dequantize!r}")
        for name in ("fuse", "last_logits"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False; got {getattr(self, name)!r}")

    def rewrite_options(self, target: Target | None = None) -> RewriteOptions:
        """``auto`` symmetrizes exact-mode tables (faster float lookups), not int8 ones, and gives
        fast-mode kernels half scales where ``target`` converts float16 in hardware
        (:func:`lutc.targets.converts_half`; no target: none)."""
        symmetric = self.symmetrize == "on" or (self.symmetrize == "auto" and self.mode == "exact")
        auto_half = self.mode == "fast" and target is not None and converts_half(target)
        half = self.half_scales == "on" or (self.half_scales == "auto" and auto_half)
        return RewriteOptions(self.mode, symmetric, frozenset(self.keep_dequantize), self.fuse, half)


def build(
    model: ModelSource,
    target: str | dict | Target = "x86",
    *,
    tuning_logs: str | Path | None = None,
    base_dir: str | Path | None = None,
    **options,
) -> CompiledModel:
    """Compile a quantized ONNX model for ``target`` (a name of :data:`lutc.targets.TARGET_NAMES`
    such as ``"x86"``, ``"arm"`` or ``"cuda-sm90"``, a dict or a Target).

    ``model``: a path (external data files are read beside it, memory-mapped) or a ``ModelProto``
    (``base_dir``: the folder of its external data files, if it has any). Weights are read once,
    tensor by tensor, into the compiled model's memory; the graph is prepared without them.

    Options (:class:`BuildOptions`): ``mode`` (``"fast"`` int8 tables or ``"exact"`` float
    tables), ``symmetrize`` (``"auto"``/``"on"``/``"off"``), ``threads``, ``keep_dequantize``
    (node names left on TVM's dequantize path), ``quantize`` (a preset such as ``"w2g128"``
    to quantize float MatMul/Gemm weights at build time), ``shapes`` (static input shapes) and
    ``fuse`` (default ``True``; ``False``: one table per matmul and every norm its own kernel,
    to measure what the fusion passes buy or to rule them out when debugging) and ``last_logits``
    (default ``False``; ``True``: a decoder's ``logits`` for the last position only,
    ``[batch, 1, vocab]``, as a generation's prompt needs: the LM head reads one row).

    ``tuning_logs``: a directory written by :func:`lutc.tune`; kernels with a record in its
    ``<target-tag>/`` log use the tuned schedule, the others the default (with a warning).
    """
    return build_sharing(model, target, WeightSet(), tuning_logs=tuning_logs, base_dir=base_dir, **options)


def build_sharing(
    model: ModelSource,
    target: str | dict | Target,
    weights: WeightSet,
    *,
    tuning_logs: str | Path | None = None,
    base_dir: str | Path | None = None,
    **options,
) -> CompiledModel:
    """:func:`build`, taking the weights ``weights`` already holds (another build of the same model:
    :func:`lutc.build_decoder`) and adding the ones it makes."""
    opts = BuildOptions(**options)
    tvm_target = resolve_target(target, opts.threads)
    backend_of(tvm_target)  # an unsupported kind fails before the import
    if opts.threads is not None:
        set_threads(opts.threads)
    mod, info = _imported(model, opts, base_dir=base_dir)
    lowered = _lower(mod, tvm_target, opts.rewrite_options(tvm_target), tuning_logs)
    outputs = _static_output_dims(lowered, info.outputs)
    layout = WeightLayout.of(lowered)
    executable = _compile(lowered, tvm_target)
    _compute_weights(layout, WeightReader(info.weights, info.quantized), tvm_target, weights)
    decisions, tuning = _decisions(lowered), _tuning(lowered)
    description = ModelDescription.of_build(info, outputs, decisions, tvm_target, opts, layout, tuning)
    return CompiledModel(executable, description, weights)


def _compute_weights(layout: WeightLayout, reader: WeightReader, target: Target, weights: WeightSet):
    """The model's weights into ``weights``: on the target's device where its code runs here, else in
    this machine's memory (they travel with an export)."""
    device = device_of(target) if not missing_on_host(target) else tvm.cpu()
    compute_weights(layout, reader, weights, device=device, huge_pages=backend_of(target).HUGE_PAGES)


def _lower(mod: tvm.IRModule, target: Target, options: RewriteOptions, tuning_logs: str | Path | None) -> tvm.IRModule:
    """The imported module after lutc's whole pipeline for ``target`` (:func:`lutc.pipeline.phases`;
    TVM's internal errors become a :class:`CompileError`)."""
    try:
        pipeline = get_pipeline(target, options, tuning_logs)  # reads the tuning log
        with target:
            return pipeline(mod)
    except LutcError:
        raise
    except Exception as err:
        raise _compile_error(err) from err


def _compile(lowered: tvm.IRModule, target: Target):
    """``tvm.compile`` of a lowered module; TVM's internal errors become a :class:`CompileError`."""
    try:
        return tvm.compile(lowered, target, relax_pipeline=None)
    except LutcError:
        raise
    except Exception as err:
        raise _compile_error(err) from err


def _compile_error(err: Exception) -> CompileError:
    reason = (str(err).strip().splitlines() or [""])[0]
    return CompileError(f"TVM failed to compile the imported model ({type(err).__name__}: {reason}); "
                        "this is a lutc limitation: please report it with the model")  # fmt: skip


def lut_module(
    model: ModelSource, opts: BuildOptions, *, base_dir: str | Path | None = None, target: Target | None = None
) -> tuple[tvm.IRModule, ModelInfo]:
    """The model's Relax module after the pipeline's LUT phase (kernels not yet scheduled) for
    ``target``, and its I/O: the kernels :func:`lutc.tune` tunes."""
    mod, info = _imported(model, opts, base_dir=base_dir)
    return tvm.transform.Sequential(lut_passes(opts.rewrite_options(target)))(mod), info


def _imported(
    model: ModelSource, opts: BuildOptions, *, base_dir: str | Path | None = None
) -> tuple[tvm.IRModule, ModelInfo]:
    """The model as TVM's importer (with lutc's converters) gives it, and its I/O (a GGUF path: its
    conversion, :func:`lutc.gguf.convert.converted`)."""
    if isinstance(model, str | Path) and Path(model).suffix.lower() == ".gguf":
        model = converted(model) / MODEL_FILE
    if opts.quantize is not None:
        model = quantize_float_matmuls(model, get_format(opts.quantize))
    mod, info = import_onnx(model, opts.shapes, base_dir=base_dir, last_logits=opts.last_logits)
    unknown = sorted(set(opts.keep_dequantize) - set(info.quantized))
    if unknown:
        raise ModelError(f"keep_dequantize names {unknown}, which are not quantized matmuls; "
                         f"those are {sorted(info.quantized)}")  # fmt: skip
    return mod, info


def _tuning(lowered: tvm.IRModule) -> dict | None:
    """What the pipeline's tuning phase recorded (``metadata["tuning"]``), its fallbacks warned
    about; ``None`` for a build without a tuning log."""
    summary = tuning_summary(lowered)
    if summary is not None:
        warn_untuned(summary["log"], summary["default"], stacklevel=3)
    return summary


def _static_output_dims(mod: tvm.IRModule, outputs: tuple[TensorInfo, ...]) -> tuple[TensorInfo, ...]:
    """``outputs`` with the dims the graph names but the compiled function fixes as ints (a KV
    cache's head size that onnxruntime-genai's builder calls ``kv_cache_dim``)."""
    ret = mod["main"].ret_ty
    fields = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    if len(fields) != len(outputs):
        return outputs
    refined = []
    for info, ty in zip(outputs, fields, strict=True):
        values = list(ty.shape.values) if isinstance(ty, relax.TensorType) and hasattr(ty.shape, "values") else []
        if len(values) != len(info.shape):
            refined.append(info)
            continue
        pairs = zip(info.shape, values, strict=True)
        fixed = tuple(int(v) if not isinstance(d, int) and isinstance(v, tvm.tirx.IntImm) else d for d, v in pairs)
        refined.append(replace(info, shape=fixed))
    return tuple(refined)


def _decisions(mod: tvm.IRModule) -> dict[str, str]:
    attrs = mod.attrs
    return {str(k): str(v) for k, v in attrs[DECISIONS_ATTR].items()} if attrs and DECISIONS_ATTR in attrs else {}
