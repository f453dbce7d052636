"""A compiled model: call it with numpy arrays, inspect it, export it and load it again."""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from .backend import backend_of, device_of, generated_source, level, missing_on_host
from .description import ModelDescription
from .errors import InputError, LoadError, LutcError, TargetError
from .frontend.positions import PositionLimit
from .inputs import InputChecks
from .library import (
    check_library_digest,
    load_library,
    read_sidecar,
    sidecar_of,
    write_atomically,
)
from .remote import linker, upload, upload_file
from .runtime import copy_into, host_view, tensors_of, to_numpy
from .weight_file import write as write_weights
from .weights import (
    WeightSet,
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

    def __init__(
        self, executable, description: ModelDescription, weights: WeightSet | None = None, session=None, uploaded=None
    ):
        self._executable = executable
        self.description = description
        """What the model is (:class:`lutc.description.ModelDescription`); :attr:`metadata` is its JSON."""
        self.layout = description.layout
        """The weights ``main`` takes (keys, shapes, dtypes)."""
        self._weights = weights if weights is not None else WeightSet()
        self.inputs = description.inputs
        self.outputs = description.outputs
        self._input_checks = InputChecks.of(self.inputs)
        self.session = session
        """The TVM RPC session the model runs on (:meth:`on`), or ``None``: this machine."""
        self._uploaded = None
        """The module on the RPC session's device (a session model's code)."""
        target = description.tvm_target
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
        return CompiledModel(self._executable, self.description, self._weights, self.session, uploaded=self._uploaded)

    def __deepcopy__(self, memo: dict) -> CompiledModel:
        """As :meth:`__copy__`: the code and weights are immutable, so they are shared, not copied."""
        return self.__copy__()

    def _vm(self, module) -> relax.VirtualMachine:
        return relax.VirtualMachine(module, self._device, memory_cfg=memory_config(self._device))

    def on(self, session) -> CompiledModel:
        """This model on the device of a TVM RPC ``session`` (``lutc.remote.RpcTracker(...).connect()``):
        linked with the target's cross compiler, uploaded and loaded there; called as a local one
        (numpy in, numpy out). Raises :class:`lutc.remote.DeviceError` if the device refuses it."""
        return CompiledModel(self._executable, self.description, self._weights, session)

    @property
    def metadata(self) -> dict:
        """The description as JSON: what the sidecar stores (a new dict each time)."""
        return self.description.as_json()

    @property
    def position_limit(self) -> PositionLimit | None:
        """How many positions (past + new tokens of one call) the model can address, where it says
        (rotary cache rows, ``genai_config.json``, ``config.json``): :func:`lutc.generate` stops there."""
        return self.description.position_limit

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
        return dict(self.description.decisions)

    def source(self, kind: str = "cuda") -> str:
        """The generated source of the model's ``kind`` device code (``"cuda"``: the CUDA C of a
        CUDA build; empty for a CPU build); what :meth:`export_library` stores for that device."""
        if self._executable is None:
            raise LutcError("this model was loaded onto a device from a library file; its source is in that file")
        return generated_source(self._executable.mod, kind)

    def summary(self) -> str:
        described = self.description
        isa = level(described.tvm_target)
        lines = [f"lutc model for {isa}: {described.target}  (mode {described.options['mode']})"]
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
        if described.preparation is not None:
            lines += [described.preparation.describe()]
        tuning = described.tuning
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
            raise TargetError(foreign_target_message(self.description.tvm_target, self.missing_features))
        arrays = self._input_checks.bind(args, kwargs)
        with self._lock:  # the VM, its staged inputs and its output tensors are shared state
            outputs = tuple(to_numpy(tensor) for tensor in tensors_of(self._run(arrays)))
        return outputs[0] if len(outputs) == 1 else outputs

    def run(self, *args, **kwargs) -> tuple[tvm.runtime.Tensor, ...]:
        """Like calling the model, but it returns the output tensors themselves (no copies) and
        takes TVM tensors and DLPack arrays (torch, ...) as well as numpy ones.

        For decode loops: an output passed back as the next call's input (``present.*`` to
        ``past.*``) stays in TVM memory; each call's outputs are new tensors, never overwritten by
        a later call."""
        return self.run_ordered(self._input_checks.bind(args, kwargs))

    def check_inputs(self, *args, **kwargs) -> None:
        """Raise the :class:`InputError` a call with these inputs would raise before running."""
        self._input_checks.bind(args, kwargs)

    def run_ordered(self, values: list) -> tuple[tvm.runtime.Tensor, ...]:
        """:meth:`run` for callers that made the inputs themselves (:func:`lutc.generate`'s loop):
        ``values`` in input order, not checked here (the VM still checks shapes and dtypes)."""
        if self._main is None:
            raise TargetError(foreign_target_message(self.description.tvm_target, self.missing_features))
        with self._lock:
            return tensors_of(self._run(values))

    def _run(self, arrays: list):
        """The VM call; its own shape checks (dims the inputs' names do not show) become an InputError."""
        try:
            names = self._input_checks.names
            inputs = [self._device_tensor(name, a) for name, a in zip(names, arrays, strict=True)]
            return self._main(*inputs, *self._weight_args)
        except (ValueError, RuntimeError) as err:
            reason = (str(err).strip().splitlines() or [""])[0]
            rules = self.description.input_rules
            if "ErrorContext(match_cast, ty=R.Shape(" in reason and rules:  # a rule's check, not an input's shape
                reason += " (" + "; ".join(rules) + ")"
            shapes = ", ".join(f"{i.name}{list(a.shape)}" for i, a in zip(self.inputs, arrays, strict=True))
            raise InputError(f"the compiled model's checks refused the inputs ({shapes}): {reason}") from err

    def _device_tensor(self, name: str, value) -> tvm.runtime.Tensor:
        return value if isinstance(value, tvm.runtime.Tensor) else self._staged(name, value)

    def _staged(self, name: str, array: np.ndarray) -> tvm.runtime.Tensor:
        """A device tensor for input ``name``, reused across calls of the same shape.

        Copying into a kept tensor is 4x cheaper than making one, and the VM runs faster on it;
        the tensor's numpy view (CPU) is kept with it, so a call copies without a DLPack exchange.
        """
        shapes = self._staging.setdefault(name, OrderedDict())
        key = (array.shape, array.dtype)
        staged = shapes.get(key)
        if staged is None:
            tensor = tvm.runtime.empty(array.shape, array.dtype.name, self._device)
            staged = shapes[key] = (tensor, host_view(tensor))
            if len(shapes) > STAGED_SHAPES:
                shapes.popitem(last=False)
        else:
            shapes.move_to_end(key)
        tensor, view = staged
        copy_into(tensor, array, view)
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
            fcompile = linker(self.description.tvm_target)
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
    description = ModelDescription.from_json(metadata)
    target = description.tvm_target
    if session is not None:
        check_library_digest(path, path, metadata)
        weights = _load_weights(path, metadata, target, session, weights)
        return CompiledModel(None, description, weights, session, uploaded=upload_file(session, path))
    missing = missing_on_host(target)
    if missing:
        raise LoadError(f"{path}: {foreign_target_message(target, missing)}")
    executable = load_library(path, tvm.runtime.load_module, metadata)
    weights = _load_weights(path, metadata, target, session, weights)
    try:
        return CompiledModel(executable, description, weights)
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


def foreign_target_message(target: tvm.target.Target, missing: list[str]) -> str:
    return (f"the model was built for {level(target)} (target {target.attrs.get('mcpu', '') or target.kind.name}) "
            f"and needs {', '.join(missing)}, which this machine does not have; run it on such a machine (here: "
            "model.on(session) or lutc.load(path, session) with a TVM RPC session on it, or 'lutc run "
            "--rpc-tracker'), or build it with target='x86' (this machine's CPU)")  # fmt: skip
