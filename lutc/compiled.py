"""A compiled model: call it with numpy arrays, inspect it, export it and load it again."""

from __future__ import annotations

import copy
import functools
import json
import os
import threading
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from . import __version__
from .backend import backend_of, device_of, generated_source, level, missing_on_host
from .errors import InputError, LoadError, LutcError, TargetError
from .frontend.model_info import TensorInfo
from .frontend.positions import PositionLimit
from .frontend.prepare import PrepareReport
from .library import (
    SIDECAR_FORMAT,
    check_library_digest,
    load_library,
    read_sidecar,
    sidecar_of,
    write_atomically,
)
from .remote import linker, upload, upload_file
from .runtime import copy_into, to_numpy
from .weight_file import write as write_weights
from .weights import (
    WeightLayout,
    WeightSet,
    WeightSpec,
    host_array,
    load_weights,
    reusable,
    weight_entries,
    weight_file_name,
)

STAGED_SHAPES = 4
"""Staging tensors kept per input (most recent shapes): a decode loop gives ``attention_mask`` a new
shape every step."""


def memory_config(device: tvm.runtime.Device) -> str | None:
    """The Relax VM's allocator: ``naive`` on the CPU. TVM's pooled allocator keeps every freed block
    of every size for the life of the VM, and a decode step's ``present.*`` outputs take a new size
    every few tokens: +2.2 GiB after 1,500 tokens of a corpus decoder whose KV cache is 6 MB (with
    naive: +37-49 MB, and steps no slower; glibc reuses freed memory itself). Other devices keep the
    pool (a ``cudaMalloc`` per tensor would be slow)."""
    return "naive" if device.dlpack_device_type() == tvm.cpu().dlpack_device_type() else None


class CompiledModel:
    """A quantized ONNX model compiled by :func:`lutc.build`.

    Call it with inputs by position or by ONNX input name; it returns a numpy array (one
    output) or a tuple of arrays in ONNX output order.

    Thread-safe: TVM's Relax VM is not (concurrent calls crashed it), so calls from several
    threads take turns on one lock (no measurable cost: 4096x4096 2-bit GEMV, 269 us median with
    and without it); each call's inputs are checked before it waits.

    A model built for a CPU this machine is not (``x86-avx512`` on an AVX2 machine, ``arm`` on
    x86) can be inspected and exported; calling it raises :class:`lutc.errors.TargetError`
    instead of crashing on an illegal instruction.
    """

    def __init__(self, executable, metadata: dict, weights: WeightSet | None = None, session=None, uploaded=None):
        self._executable = executable
        self.metadata = metadata
        self.layout = layout_of(metadata)
        """The weights ``main`` takes (keys, shapes, dtypes)."""
        self._weights = weights if weights is not None else WeightSet()
        self.inputs = tuple(
            TensorInfo(i["name"], tuple(i["shape"]), i["dtype"], i.get("index_limit")) for i in metadata["inputs"]
        )
        self.outputs = tuple(TensorInfo(o["name"], tuple(o["shape"]), o["dtype"]) for o in metadata["outputs"])
        self.session = session
        """The TVM RPC session the model runs on (:meth:`on`), or ``None``: this machine."""
        self._uploaded = None
        """The module on the RPC session's device (a session model's code)."""
        target = stored_target(metadata)
        if session is None:
            self._device = device_of(target)
            self.missing_features = missing_on_host(target)
            """What this machine lacks to run the model (empty when it runs here or remotely)."""
            self._main = None if self.missing_features else self._vm(executable)["main"]
            self._weight_args = tuple(self._weights.ordered(self.layout)) if self._main is not None else ()
        else:
            self._device, self.missing_features = device_of(target, session), []
            if uploaded is None:
                uploaded = upload(session, executable, target, "lutc_model.so")
            self._uploaded = uploaded
            self._main = self._vm(uploaded)["main"]
            weights = self._weights.ordered(self.layout)
            self._weight_args = tuple(tvm.runtime.tensor(t.numpy(), self._device) for t in weights)
        self._staging: dict[str, OrderedDict] = {}
        """Input name -> (shape, dtype) -> tensor, the most recent last (at most :data:`STAGED_SHAPES`)."""
        self._lock = threading.Lock()

    def __reduce__(self):
        raise TypeError("a CompiledModel cannot be pickled (it holds compiled code and device memory): save it "
                        "with model.export_library(path) and read it back with lutc.load(path), in this process or "
                        "another")  # fmt: skip

    def __copy__(self) -> CompiledModel:
        """A model of its own (its own VM, staging and lock: calls in two threads run at once)
        sharing this one's compiled code and weights, which nothing changes."""
        return CompiledModel(self._executable, copy.deepcopy(self.metadata), self._weights, self.session,
                             uploaded=self._uploaded)  # fmt: skip

    def __deepcopy__(self, memo: dict) -> CompiledModel:
        """As :meth:`__copy__`: the code and weights are immutable, so they are shared, not copied."""
        return self.__copy__()

    def _vm(self, module) -> relax.VirtualMachine:
        return relax.VirtualMachine(module, self._device, memory_cfg=memory_config(self._device))

    def on(self, session) -> CompiledModel:
        """This model on the device of a TVM RPC ``session`` (``lutc.remote.RpcTracker(...).connect()``):
        linked with the target's cross compiler, uploaded and loaded there; called as a local one
        (numpy in, numpy out). Raises :class:`lutc.remote.DeviceError` if the device refuses it."""
        return CompiledModel(self._executable, self.metadata, self._weights, session)

    @property
    def position_limit(self) -> PositionLimit | None:
        """How many positions (past + new tokens of one call) the model can address, where it says
        (rotary cache rows, ``genai_config.json``, ``config.json``): :func:`lutc.generate` stops there."""
        stored = self.metadata.get("position_limit")
        return PositionLimit(**stored) if stored else None

    @property
    def weights(self) -> dict[str, tvm.runtime.Tensor]:
        """The weights ``main`` reads, by key (:mod:`lutc.frontend.weight_params`), in its order."""
        return {w.key: self._weights.tensors[w.key] for w in self.layout.weights}

    @property
    def weight_set(self) -> WeightSet:
        """The weights this model holds (shared with the other build or load of a decoder)."""
        return self._weights

    @property
    def weight_arguments(self) -> tuple:
        """What follows the inputs in a call of the executable's ``main``: the weights, in order."""
        return self._weight_args

    @property
    def weight_bytes(self) -> int:
        """Bytes of the weights the model holds (packed as its kernels read them)."""
        return self.layout.nbytes

    @property
    def decisions(self) -> dict[str, str]:
        """Quantized node -> how it runs (``lut fast w2g128``, ``dequantize path: ...``)."""
        return dict(self.metadata["decisions"])

    def source(self, kind: str = "cuda") -> str:
        """The generated source of the model's ``kind`` device code (``"cuda"``: the CUDA C of a
        CUDA build; empty for a CPU build); what :meth:`export_library` stores for that device."""
        if self._executable is None:
            raise LutcError("this model was loaded onto a device from a library file; its source is in that file")
        return generated_source(self._executable.mod, kind)

    def summary(self) -> str:
        isa = level(stored_target(self.metadata))
        lines = [f"lutc model for {isa}: {self.metadata['target']}  (mode {self.metadata['options']['mode']})"]
        if self.missing_features:
            lines += [f"not runnable here: needs {', '.join(self.missing_features)}"]
        lines += ["inputs:  " + ", ".join(i.describe() for i in self.inputs)]
        lines += ["outputs: " + ", ".join(o.describe() for o in self.outputs)]
        decisions = self.decisions
        lut = sum(1 for d in decisions.values() if d.startswith("lut"))
        lines += [f"quantized matmuls: {len(decisions)} ({lut} as LUT kernels)"]
        lines += [f"  {node}: {how}" for node, how in sorted(decisions.items())]
        if not decisions:
            lines += ["  (none: the model has no quantized matmul; it runs on TVM's default path)"]
        preparation = self.metadata.get("preparation")
        if preparation:
            lines += [PrepareReport.from_dict(preparation).describe()]
        tuning = self.metadata.get("tuning")
        if tuning:
            lines += [f"tuning log {tuning['log']}: {len(tuning['tuned'])} kernel(s) tuned, "
                      f"{len(tuning['default'])} on the default schedule"]  # fmt: skip
            tuned = sorted(tuning["tuned"].items())
            lines += [f"  {name}: tuned, {secs * 1e6:.1f} us when tuned" for name, secs in tuned]
            lines += [f"  {name}: default ({why})" for name, why in sorted(tuning["default"].items())]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def __call__(self, *args: np.ndarray, **kwargs: np.ndarray):
        if self._main is None:
            raise TargetError(foreign_target_message(self.metadata, self.missing_features))
        arrays = _bind_inputs(self.inputs, args, kwargs)
        _check_dims(self.inputs, arrays)
        with self._lock:  # the VM, its staged inputs and its output tensors are shared state
            result = self._run(arrays)
            outputs = [to_numpy(result)] if isinstance(result, tvm.runtime.Tensor) else [to_numpy(r) for r in result]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def run(self, *args, **kwargs) -> tuple[tvm.runtime.Tensor, ...]:
        """Like calling the model, but it returns the output tensors themselves (no copies) and
        takes TVM tensors and DLPack arrays (torch, ...) as well as numpy ones.

        For decode loops: an output passed back as the next call's input (``present.*`` to
        ``past.*``) stays in TVM memory; each call's outputs are new tensors, never overwritten by
        a later call."""
        values = _bind_inputs(self.inputs, args, kwargs)
        _check_dims(self.inputs, values)
        return self.run_ordered(values)

    def check_inputs(self, *args, **kwargs) -> None:
        """Raise the :class:`InputError` a call with these inputs would raise before running."""
        _check_dims(self.inputs, _bind_inputs(self.inputs, args, kwargs))

    def run_ordered(self, values: list) -> tuple[tvm.runtime.Tensor, ...]:
        """:meth:`run` for callers that made the inputs themselves (:func:`lutc.generate`'s loop):
        ``values`` in input order, not checked here (the VM still checks shapes and dtypes)."""
        if self._main is None:
            raise TargetError(foreign_target_message(self.metadata, self.missing_features))
        with self._lock:
            result = self._run(values)
        return (result,) if isinstance(result, tvm.runtime.Tensor) else tuple(result)

    def _run(self, arrays: list):
        """The VM call; its own shape checks (dims the inputs' names do not show) become an InputError."""
        try:
            inputs = (self._device_tensor(info.name, a) for info, a in zip(self.inputs, arrays, strict=True))
            return self._main(*inputs, *self._weight_args)
        except (ValueError, RuntimeError) as err:
            reason = (str(err).strip().splitlines() or [""])[0]
            rules = self.metadata.get("input_rules") or []
            if "ErrorContext(match_cast, ty=R.Shape(" in reason and rules:  # a rule's check, not an input's shape
                reason += " (" + "; ".join(rules) + ")"
            shapes = ", ".join(f"{i.name}{list(a.shape)}" for i, a in zip(self.inputs, arrays, strict=True))
            raise InputError(f"the compiled model's checks refused the inputs ({shapes}): {reason}") from err

    def _device_tensor(self, name: str, value) -> tvm.runtime.Tensor:
        return value if isinstance(value, tvm.runtime.Tensor) else self._staged(name, value)

    def _staged(self, name: str, array: np.ndarray) -> tvm.runtime.Tensor:
        """A device tensor for input ``name``, reused across calls of the same shape.

        Copying into a kept tensor is 4x cheaper than making one, and the VM runs faster on it.
        """
        shapes = self._staging.setdefault(name, OrderedDict())
        key = (array.shape, array.dtype.str)
        tensor = shapes.get(key)
        if tensor is None:
            tensor = shapes[key] = tvm.runtime.empty(array.shape, array.dtype.name, self._device)
            if len(shapes) > STAGED_SHAPES:
                shapes.popitem(last=False)
        else:
            shapes.move_to_end(key)
        copy_into(tensor, array)
        return tensor

    def export_library(self, path: str | os.PathLike, *, weights: str | os.PathLike | None = None) -> Path:
        """Write the shared library, its weight file and its ``.lutc.json`` description atomically
        (see :mod:`lutc.library`); returns the library's path: ``path``, with ``.so`` added when it
        has no suffix.

        The weights go to ``weights`` (a file name beside ``path``; default ``<path>.weights``). A
        weight file that already holds every weight of this model unchanged is reused, not
        rewritten: export the prompt and step builds of a decoder with the same ``weights`` and they
        share one file (:func:`lutc.build_decoder`).
        """
        path = Path(path)
        if path.is_dir():
            raise LutcError(f"cannot write {path}: it is a directory")
        path = path if path.suffix else path.with_name(path.name + ".so")  # the loader picks formats by suffix
        if self._executable is None:
            raise LutcError(f"cannot write {path}: this model was loaded onto a device from a library file; "
                            "export the model it was built from, or copy that file")  # fmt: skip
        try:
            fcompile = linker(stored_target(self.metadata))
        except LutcError as err:
            raise LutcError(f"cannot write {path}: {err}") from None
        write_library = functools.partial(self._executable.export_library, fcompile=fcompile)
        name = weight_file_name(path, weights)
        entries = weight_entries(self.layout, self._weights)
        sidecar = {**self.metadata, "weights": {"file": name, "tensors": entries}}
        write_weight_file = None
        if not reusable(path.parent / name, entries):
            arrays = [self._weights.tensors[w.key] for w in self.layout.weights]
            write_weight_file = (name, functools.partial(_write_weights, entries=entries, tensors=arrays))
        write_atomically(path, write_library, sidecar, write_weight_file)
        return path


def _write_weights(target: str, *, entries: list[dict], tensors: list) -> None:
    write_weights(Path(target), entries, (host_array(t) for t in tensors))


def layout_of(metadata: dict) -> WeightLayout:
    """The weight layout a model's metadata (or sidecar) records."""
    stored = metadata.get("weights") or {}
    specs = tuple(WeightSpec(t["key"], tuple(t["shape"]), t["dtype"]) for t in stored.get("tensors", []))
    return WeightLayout(specs)


def load(path: str | os.PathLike, session=None, *, weights: WeightSet | None = None) -> CompiledModel:
    """Load a model written by :meth:`CompiledModel.export_library`; a damaged set of files raises ``LoadError``.

    The weights are read from the weight file the sidecar names (in the library's folder) into the
    model's memory (on 2 MiB pages on the CPU), each checked against the digest the sidecar lists.

    ``session``: a TVM RPC session (:meth:`lutc.remote.RpcTracker.connect`): the file is uploaded
    and runs on that device (a library built for another architecture than this machine's).
    ``weights``: the weights of a model loaded before from the same weight file, shared rather than
    read again (:func:`lutc.load_decoder`); those this model lacks are read into it.
    """
    path = Path(path)
    if not path.is_file() or not sidecar_of(path).is_file():
        raise LoadError(f"{path} and {sidecar_of(path).name} must both exist (written by CompiledModel.export_library)")
    metadata = read_sidecar(path)
    target = stored_target(metadata)
    if session is not None:
        check_library_digest(path, path, metadata)
        weights = _load_weights(path, metadata, target, session, weights)
        return CompiledModel(None, metadata, weights, session, uploaded=upload_file(session, path))
    missing = missing_on_host(target)
    if missing:
        raise LoadError(f"{path}: {foreign_target_message(metadata, missing)}")
    executable = load_library(path, tvm.runtime.load_module, metadata)
    weights = _load_weights(path, metadata, target, session, weights)
    try:
        return CompiledModel(executable, metadata, weights)
    except Exception as err:
        raise LoadError(f"{path}: not a lutc model library ({type(err).__name__}: {err})") from None


def _load_weights(path: Path, metadata: dict, target, session, shared: WeightSet | None) -> WeightSet:
    stored = metadata["weights"]
    file = path.parent / stored["file"]
    if Path(stored["file"]).name != stored["file"]:
        raise LoadError(f"{sidecar_of(path)}: its weight file {stored['file']!r} is not a file name in {path.parent}")
    if not file.is_file():
        raise LoadError(f"{path}: its weight file {file} is missing (export writes it beside the library)")
    shared = shared if shared is not None else WeightSet()
    held = [e for e in stored["tensors"] if e["key"] in shared.tensors]
    for entry in held:
        if shared.digest_of(entry["key"]) != entry["sha1"]:
            raise LoadError(f"{path}: weight {entry['key']!r} differs from the one of the model it shares weights with")
    local = session is None and not missing_on_host(target)
    device = device_of(target) if local else tvm.cpu()
    missing = [e for e in stored["tensors"] if e["key"] not in shared.tensors]
    loaded = load_weights(file, missing, device, local and backend_of(target).HUGE_PAGES)
    shared.tensors.update(loaded.tensors)
    shared.digests.update(loaded.digests)
    return shared


def stored_target(metadata: dict) -> tvm.target.Target:
    """The target a model was built for, from its metadata."""
    return tvm.target.Target(json.loads(metadata["target"]))


def foreign_target_message(metadata: dict, missing: list[str]) -> str:
    target = stored_target(metadata)
    return (f"the model was built for {level(target)} (target {target.attrs.get('mcpu', '') or target.kind.name}) "
            f"and needs {', '.join(missing)}, which this machine does not have; run it on such a machine (here: "
            "model.on(session) or lutc.load(path, session) with a TVM RPC session on it, or 'lutc run "
            "--rpc-tracker'), or build it with target='x86' (this machine's CPU)")  # fmt: skip


def _lutc_version() -> str:
    return __version__


def metadata_for(info, decisions: dict, target, options, layout: WeightLayout) -> dict:
    """The JSON-ready description stored with a compiled model."""
    return {
        "weights": {"tensors": [w.as_dict() for w in layout.weights]},
        "position_limit": asdict(info.position_limit) if info.position_limit is not None else None,
        "format": SIDECAR_FORMAT,
        "lutc_version": _lutc_version(),
        "inputs": [asdict(i) for i in info.inputs],
        "outputs": [asdict(o) for o in info.outputs],
        "decisions": {str(k): str(v) for k, v in decisions.items()},
        "target": str(target),
        "options": asdict(options),
        "preparation": info.preparation.as_dict() if info.preparation is not None else None,
        "input_rules": list(info.input_rules),
    }


def _bind_inputs(inputs: tuple[TensorInfo, ...], args: tuple, kwargs: dict) -> list[np.ndarray]:
    names = [i.name for i in inputs]
    if len(args) > len(inputs):
        raise InputError(f"the model takes {len(inputs)} inputs ({', '.join(names)}); got {len(args)} positional")
    unknown = sorted(set(kwargs) - set(names))
    if unknown:
        raise InputError(f"unknown input names {unknown}; the model takes {names}")
    bound = dict(zip(names, args, strict=False))
    twice = sorted(set(bound) & set(kwargs))
    if twice:
        raise InputError(f"inputs {twice} given both by position and by name")
    bound.update(kwargs)
    missing = [n for n in names if n not in bound]
    if missing:
        raise InputError(f"missing inputs {missing}; the model takes {names}")
    return [_checked(info, bound[info.name]) for info in inputs]


def _checked(info: TensorInfo, value):
    """A checked numpy array or TVM tensor for input ``info`` (DLPack arrays become TVM tensors)."""
    if not isinstance(value, np.ndarray | tvm.runtime.Tensor) and hasattr(value, "__dlpack__"):
        value = _from_dlpack(value)
    if isinstance(value, tvm.runtime.Tensor):
        return _checked_tensor(info, value)
    if not isinstance(value, np.ndarray):
        raise InputError(f"input {info.name!r} must be a numpy array, a TVM tensor or a DLPack array "
                         f"({info.describe()}); got {type(value).__name__}")  # fmt: skip
    if value.dtype != info.dtype:  # not dtype.name: a Python property, 20 µs slower per call here
        raise InputError(f"input {info.name!r} has dtype {value.dtype}; the model takes {info.describe()}")
    if not _shape_fits(info, value.shape):
        raise InputError(f"input {info.name!r} has shape {value.shape}; the model takes {info.describe()}")
    limit = info.index_limit
    if limit is not None and (value.min() < -limit or value.max() >= limit):
        raise InputError(f"input {info.name!r} indexes an embedding of {limit} rows: its values must lie in "
                         f"[{-limit}, {limit}); got min {value.min()}, max {value.max()}")  # fmt: skip
    return value if value.flags.c_contiguous else value.copy(order="C")  # ascontiguousarray makes 0-d 1-d


def _shape_fits(info: TensorInfo, shape: tuple[int, ...]) -> bool:
    """``shape`` has the input's rank and its fixed dims."""
    if len(shape) != len(info.shape):
        return False
    return all(not isinstance(d, int) or d == v for d, v in zip(info.shape, shape, strict=True))


def _from_dlpack(value):
    """A TVM tensor sharing ``value``'s memory, or (TVM takes only 64-byte aligned data) a numpy view."""
    try:
        return tvm.runtime.from_dlpack(value)
    except RuntimeError:
        return np.from_dlpack(value)


def _checked_tensor(info: TensorInfo, tensor: tvm.runtime.Tensor) -> tvm.runtime.Tensor:
    shape = tuple(int(d) for d in tensor.shape)
    if str(tensor.dtype) != info.dtype:
        raise InputError(f"input {info.name!r} has dtype {tensor.dtype}; the model takes {info.describe()}")
    if not _shape_fits(info, shape):
        raise InputError(f"input {info.name!r} has shape {shape}; the model takes {info.describe()}")
    if info.index_limit is not None:
        _checked(info, np.from_dlpack(tensor))
    return tensor


def _check_dims(inputs: tuple[TensorInfo, ...], arrays: list[np.ndarray]) -> None:
    """Named dynamic dimensions must agree across inputs."""
    seen: dict[str, tuple[str, int]] = {}
    for info, array in zip(inputs, arrays, strict=True):
        for dim, size in zip(info.shape, array.shape, strict=True):
            if isinstance(dim, str):
                first = seen.setdefault(dim, (info.name, size))
                if first[1] != size:
                    raise InputError(f"dimension {dim!r} is {first[1]} in {first[0]!r} but {size} in {info.name!r}")
