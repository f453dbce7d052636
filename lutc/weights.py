"""A compiled model's weights: what ``main`` takes, computing them from the ONNX model once,
exporting them beside the library and loading them back.

After lutc's pipeline, ``main`` takes its inputs then one tuple of weights
(:class:`~lutc.relay_passes.LutcLiftWeights`), each known by a key
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from .errors import LoadError, LutcError, ModelError
from .frontend.weight_params import WEIGHTS_ATTR, split_key
from .relay_passes.lift_weights import stages
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


def _specs(func: relax.Function, tuple_type: relax.TupleType) -> tuple[WeightSpec, ...]:
    keys = [str(k) for k in func.attrs[WEIGHTS_ATTR]]
    fields = list(tuple_type.fields)
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
    """The weights of a compiled ``main`` in the order it takes them (``bundled``: as its last
    parameter, one tuple), and the stages that compute the ``transformed:`` ones, in order."""

    weights: tuple[WeightSpec, ...] = ()
    stages: tuple[WeightStage, ...] = ()
    bundled: bool = False

    @staticmethod
    def of(mod: tvm.IRModule) -> WeightLayout:
        """The layout of a module after lutc's pipeline (before ``tvm.compile``)."""
        main = mod["main"]
        last = main.params[-1].ty if main.params else None
        if main.attrs is None or WEIGHTS_ATTR not in main.attrs or not isinstance(last, relax.TupleType):
            return WeightLayout()
        functions = [mod[name] for name in stages(mod)]
        outputs = [func.attrs[WEIGHTS_ATTR] for func in functions[1:]] + [main.attrs[WEIGHTS_ATTR]]
        found = tuple(
            WeightStage(name, _specs(func, func.params[0].ty), tuple(str(k) for k in keys))
            for name, func, keys in zip(stages(mod), functions, outputs, strict=True)
        )
        return WeightLayout(_specs(main, last), found, True)

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
            self.digests[key] = digest(_host_array(self.tensors[key]))
        return self.digests[key]


def _host_array(tensor: tvm.runtime.Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor, a copy of a device one."""
    if tensor.device.dlpack_device_type() == tvm.cpu().dlpack_device_type():
        return np.from_dlpack(tensor)
    return tensor.numpy()


def _allocate(specs: list[WeightSpec], device, huge_pages: bool) -> list[np.ndarray]:
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


def compute_weights(
    layout: WeightLayout,
    reader,
    vm: relax.VirtualMachine | None,
    into: WeightSet,
    *,
    device,
    huge_pages: bool,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Make the weights of ``layout`` that ``into`` lacks: read from ``reader``
    (:class:`lutc.frontend.weights.WeightReader`) straight into their final memory, and the
    ``transformed:`` ones by running ``vm``'s weight stages; ``progress(bytes)`` as they are made."""
    missing = [w for w in layout.weights if w.key not in into.tensors]
    direct = [w for w in missing if not w.transformed]
    for spec, view in zip(direct, _allocate(direct, device, huge_pages), strict=True):
        view[...] = _checked(spec, reader.read(spec.key))
        reader.release(spec.key)
        into.tensors[spec.key] = _to_device(view, device, huge_pages)
        if progress is not None:
            progress(spec.nbytes)
    transformed = [w for w in missing if w.transformed]
    if transformed:
        made = _run_stages(layout, reader, vm, into, device)
        for spec, view in zip(transformed, _allocate(transformed, device, huge_pages), strict=True):
            view[...] = _host_array(made[spec.key])
            into.tensors[spec.key] = _to_device(view, device, huge_pages)


def _run_stages(layout: WeightLayout, reader, vm, into: WeightSet, device) -> dict[str, tvm.runtime.Tensor]:
    """Every stage once, in order; the tensors they make by key."""
    made: dict[str, tvm.runtime.Tensor] = {}
    for stage in layout.stages:
        sources = [_source(s, made, into, reader, device) for s in stage.sources]
        for key, tensor in zip(stage.outputs, vm[stage.function](sources), strict=True):
            made.setdefault(key, tensor)
    return made


def _source(spec: WeightSpec, made: dict, into: WeightSet, reader, device) -> tvm.runtime.Tensor:
    """A stage's input: made by an earlier stage, held already, or read (a temporary)."""
    for held in (made, into.tensors):
        if spec.key in held:
            return held[spec.key]
    if spec.transformed:
        raise LutcError(f"weight {spec.key!r} is needed before a stage computes it")
    tensor = tvm.runtime.tensor(np.ascontiguousarray(_checked(spec, reader.read(spec.key))), device)
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


def load_weights(
    path: Path, entries: list[dict], device, huge_pages: bool, progress: Callable[[int], None] | None = None
) -> WeightSet:
    """The weights a sidecar lists, read from weight file ``path`` and checked (:func:`weight_file.read_into`)."""
    specs = [WeightSpec(e["key"], tuple(e["shape"]), e["dtype"]) for e in entries]
    views = _allocate(specs, device, huge_pages)
    read_into(path, entries, views, progress)
    weights = WeightSet()
    for entry, view in zip(entries, views, strict=True):
        weights.tensors[entry["key"]] = _to_device(view, device, huge_pages)
        weights.digests[entry["key"]] = entry["sha1"]
    return weights
