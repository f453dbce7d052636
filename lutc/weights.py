"""A compiled model's weights: what ``main`` takes, computing them from the ONNX model once,
exporting them beside the library and loading them back.

After lutc's pipeline, ``main`` takes its inputs then its weights, each known by a key
(:mod:`lutc.frontend.weight_params`). :func:`compute_weights` makes them tensor by tensor,
straight into their final memory (one region on 2 MiB pages on the CPU): read from the
memory-mapped external data, packed, copied, the source pages dropped. Weights computed from
others (``transformed:`` keys) come out of the lifted weight stages
(:class:`~lutc.relay_passes.LutcLiftWeights`), run once.

A :class:`WeightSet` holds the tensors by key, so the prompt and step builds of one decoder share
them (:func:`lutc.build_decoder`), and their exports share one weight file
(:mod:`lutc.weight_file`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from .errors import LoadError, LutcError, ModelError
from .frontend.weight_params import WEIGHTS_ATTR, num_inputs, split_key
from .quant.layout import as_half
from .relay_passes.lift_weights import stages, weight_stages
from .runtime import cpu_tensor, huge_page_arrays
from .weight_file import digest, matches, read_header, read_into


@dataclass(frozen=True)
class WeightSpec:
    """One weight ``main`` takes: its key, shape and dtype."""

    key: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    @property
    def transformed(self) -> bool:
        return split_key(self.key)[0] == "transformed"

    def as_dict(self) -> dict:
        return {"key": self.key, "shape": list(self.shape), "dtype": self.dtype, "nbytes": self.nbytes}


def _specs(func: relax.Function, types) -> tuple[WeightSpec, ...]:
    keys = [str(k) for k in func.attrs[WEIGHTS_ATTR]]
    fields = list(types)
    if len(keys) != len(fields):
        raise LutcError(f"lutc's pipeline left {len(fields)} weights but {len(keys)} keys")
    return tuple(
        WeightSpec(k, tuple(int(d) for d in t.shape.values), str(t.dtype)) for k, t in zip(keys, fields, strict=True)
    )


@dataclass(frozen=True)
class WeightStage:
    """A lifted weight preprocessing function (``main_weights_<i>``): what it takes, in order, and
    the keys of what it returns."""

    function: str
    sources: tuple[WeightSpec, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class WeightLayout:
    """The weights of a compiled ``main`` in the order it takes them (after its inputs), and the
    stages that compute the ``transformed:`` ones, in order."""

    weights: tuple[WeightSpec, ...] = ()
    stages: tuple[WeightStage, ...] = ()
    stage_module: tvm.IRModule | None = field(default=None, compare=False)
    """The stages and the kernels they call (:data:`~lutc.relay_passes.lift_weights.STAGES_ATTR`),
    to compile for this machine's CPU; ``None`` for a layout read back from a sidecar."""

    @staticmethod
    def of(mod: tvm.IRModule) -> WeightLayout:
        """The layout of a module after lutc's pipeline (before ``tvm.compile``)."""
        main = mod["main"]
        if main.attrs is None or WEIGHTS_ATTR not in main.attrs:
            return WeightLayout()
        held = weight_stages(mod)
        functions = [held[name] for name in stages(mod)]
        outputs = [func.attrs[WEIGHTS_ATTR] for func in functions[1:]] + [main.attrs[WEIGHTS_ATTR]]
        found = tuple(
            WeightStage(name, _specs(func, func.params[0].ty.fields), tuple(str(k) for k in keys))
            for name, func, keys in zip(stages(mod), functions, outputs, strict=True)
        )
        return WeightLayout(_specs(main, [p.ty for p in main.params[num_inputs(main) :]]), found, held)

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes for w in self.weights)


class WeightSet:
    """Weight tensors by key, on one device (shared by the builds of one model); their digests
    once computed (for export)."""

    def __init__(self) -> None:
        self.tensors: dict[str, tvm.runtime.Tensor] = {}
        self.digests: dict[str, str] = {}

    def ordered(self, layout: WeightLayout) -> list[tvm.runtime.Tensor]:
        return [self.tensors[w.key] for w in layout.weights]

    def digest_of(self, key: str) -> str:
        if key not in self.digests:
            self.digests[key] = digest(host_array(self.tensors[key]))
        return self.digests[key]


def _on_cpu(tensor: tvm.runtime.Tensor) -> bool:
    return tensor.device.dlpack_device_type() == tvm.cpu().dlpack_device_type()


def host_array(tensor: tvm.runtime.Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor, a copy of a device one."""
    return np.from_dlpack(tensor) if _on_cpu(tensor) else tensor.numpy()


def _allocate(specs: list[WeightSpec], huge_pages: bool) -> list[np.ndarray]:
    """Host arrays to fill: the final memory (huge pages) on the CPU, staging arrays for a device."""
    if huge_pages:
        return huge_page_arrays([(w.shape, w.dtype) for w in specs])
    return [np.empty(w.shape, w.dtype) for w in specs]


def _to_device(view: np.ndarray, device, huge_pages: bool) -> tvm.runtime.Tensor:
    return cpu_tensor(view) if huge_pages else tvm.runtime.tensor(view, device)


def _checked(spec: WeightSpec, array: np.ndarray) -> np.ndarray:
    if tuple(array.shape) != spec.shape or str(array.dtype) != spec.dtype:
        raise ModelError(f"weight {spec.key!r} is {array.dtype}{list(array.shape)}; the compiled model takes "
                         f"{spec.dtype}{list(spec.shape)}")  # fmt: skip
    return array


HALF_PARTS = ("packed.scales", "packed.offsets")
"""Packed parts a kernel with half scales takes as float16; the reader packs them float32."""


def _narrowed(spec: WeightSpec, array: np.ndarray) -> np.ndarray:
    """``array`` as float16 where ``spec`` is a half-scale kernel's scales or offsets."""
    if spec.dtype != "float16" or array.dtype != np.float32 or split_key(spec.key)[0] not in HALF_PARTS:
        return array
    try:
        return as_half(spec.key, array)
    except ValueError as err:
        raise ModelError(str(err)) from None


def _read(spec: WeightSpec, reader) -> np.ndarray:
    """Weight ``spec`` from ``reader``, in the dtype the compiled model takes, checked."""
    return _checked(spec, _narrowed(spec, reader.read(spec.key)))


def compute_weights(layout: WeightLayout, reader, into: WeightSet, *, device, huge_pages: bool) -> None:
    """Make the weights of ``layout`` that ``into`` lacks: read from ``reader``
    (:class:`lutc.frontend.weights.WeightReader`) straight into their final memory, and the
    ``transformed:`` ones by running the weight stages, compiled for this machine's CPU, then
    moved to the device (onto huge pages on the CPU)."""
    missing = [w for w in layout.weights if w.key not in into.tensors]
    direct = [w for w in missing if not w.transformed]
    for spec, view in zip(direct, _allocate(direct, huge_pages), strict=True):
        view[...] = _read(spec, reader)
        reader.release(spec.key)
        into.tensors[spec.key] = _to_device(view, device, huge_pages)
    transformed = [w for w in missing if w.transformed]
    if not transformed:
        return
    made = _run_stages(layout, reader, into)
    for spec, view in zip(transformed, _allocate(transformed, huge_pages), strict=True):
        view[...] = np.from_dlpack(made[spec.key])
        into.tensors[spec.key] = _to_device(view, device, huge_pages)


def _run_stages(layout: WeightLayout, reader, into: WeightSet) -> dict[str, tvm.runtime.Tensor]:
    """Every stage once, in order, on this machine's CPU; the tensors they make by key."""
    vm = relax.VirtualMachine(tvm.compile(layout.stage_module, tvm.target.Target("llvm")), tvm.cpu())
    made: dict[str, tvm.runtime.Tensor] = {}
    for stage in layout.stages:
        sources = [_source(s, made, into, reader) for s in stage.sources]
        for key, tensor in zip(stage.outputs, vm[stage.function](sources), strict=True):
            made.setdefault(key, tensor)
    return made


def _source(spec: WeightSpec, made: dict, into: WeightSet, reader) -> tvm.runtime.Tensor:
    """A stage's input on the CPU: made by an earlier stage, held already, or read (a temporary)."""
    if spec.key in made:
        return made[spec.key]
    if spec.key in into.tensors:  # the stages take every weight; most pass through untouched
        held = into.tensors[spec.key]
        return held if _on_cpu(held) else tvm.runtime.tensor(held.numpy(), tvm.cpu())
    if spec.transformed:
        raise LutcError(f"weight {spec.key!r} is needed before a stage computes it")
    tensor = tvm.runtime.tensor(np.ascontiguousarray(_read(spec, reader)), tvm.cpu())
    reader.release(spec.key)
    return tensor


def weight_entries(layout: WeightLayout, weights: WeightSet) -> list[dict]:
    """What a sidecar lists of each weight: key, shape, dtype, bytes and digest."""
    return [{**w.as_dict(), "sha1": weights.digest_of(w.key)} for w in layout.weights]


def weight_file_name(library: Path, weights: str | os.PathLike | None) -> str:
    """The weight file's name (in the library's folder): ``weights``, or ``<library>.weights``."""
    if weights is None:
        return library.name + ".weights"
    path = Path(weights)
    if path.parent not in (Path("."), library.parent) or not path.name or path.name == library.name:
        raise LutcError(f"weights={str(weights)!r} must name a file beside {library} (a library reads its weight "
                        "file from its own folder)")  # fmt: skip
    return path.name


def reusable(final: Path, entries: list[dict]) -> bool:
    """Whether the weight file ``final`` already holds every tensor of ``entries``, unchanged."""
    if not final.is_file():
        return False
    try:
        return matches(entries, read_header(final))
    except LoadError:
        return False


def load_weights(path: Path, entries: list[dict], device, huge_pages: bool) -> WeightSet:
    """The weights a sidecar lists, read from weight file ``path`` and checked (:func:`weight_file.read_into`)."""
    specs = [WeightSpec(e["key"], tuple(e["shape"]), e["dtype"]) for e in entries]
    views = _allocate(specs, huge_pages)
    read_into(path, entries, views)
    weights = WeightSet()
    for entry, view in zip(entries, views, strict=True):
        weights.tensors[entry["key"]] = _to_device(view, device, huge_pages)
        weights.digests[entry["key"]] = entry["sha1"]
    return weights
