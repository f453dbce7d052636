"""A model's graph without its weight bytes, and the weights as references read on demand.

Real models are gigabytes. :func:`read_weightless` reads the graph (``onnx.load`` without
external data) and turns every initializer of more than :data:`REFERENCE_ELEMENTS` elements
into a **reference**: the tensor keeps its name, dims and data type, its data location becomes
:data:`REFERENCE_LOCATION`, and its bytes stay where they are, in the external data file (read
through a memory map) or in the caller's proto (kept as the one array read from it). Graph
preparation (ONNX Runtime's shape inference, onnx-ir), the importer and protobuf therefore never
see weight bytes, and protobuf's 2 GB limit never applies. Smaller initializers, which shape
folding may read, are materialized in the graph.

External data is read only from plain files inside the model's folder: an absolute location, a
``..`` part, a symbolic link or a file with several hard links (as ``onnx`` refuses them), a
missing file, or one too short for the tensor is a :class:`ModelError` naming the initializer
and the file.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ModelError
from ..quant.layout import pack
from ..quant.onnx_convert import TensorMeta
from .prepare import FOLD_INPUT_LIMIT
from .weight_params import LOGICAL_PARTS, PACKED_PARTS, split_key

REFERENCE_ELEMENTS = FOLD_INPUT_LIMIT
"""Initializers with more elements than graph preparation may fold stay references."""

REFERENCE_LOCATION = "lutc:weight-reference"
"""The external-data location written into a reference: no file of that name is ever read."""

SUB_BYTE_BITS = {
    onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4, onnx.TensorProto.INT2: 2, onnx.TensorProto.UINT2: 2,
}  # fmt: skip
NEVER_REFERENCED = frozenset({onnx.TensorProto.INT64, onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED})
"""Shape-like and non-numeric tensors are always materialized (converters read int64 tensors as shapes)."""


def storage_bytes(data_type: int, dims: tuple[int, ...]) -> int:
    """Bytes a tensor of ``dims`` takes in raw form (sub-byte types packed two or four to a byte)."""
    count = int(np.prod(dims, dtype=np.int64))
    bits = SUB_BYTE_BITS.get(data_type)
    if bits is not None:
        return (count * bits + 7) // 8
    return count * onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize


@dataclass(frozen=True)
class WeightRef:
    """Where a referenced initializer's bytes are: ``length`` bytes at ``offset`` of ``file``, or
    (``file`` None) in the array the store kept."""

    name: str
    data_type: int
    dims: tuple[int, ...]
    file: Path | None = None
    offset: int = 0
    length: int = 0

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(self.data_type))

    @property
    def nbytes(self) -> int:
        return storage_bytes(self.data_type, self.dims)


class WeightStore:
    """The initializers of one model: references (read on demand) and the graph's own small ones.

    ``store[name]`` is the initializer as ``onnx.numpy_helper.to_array`` would give it (read-only,
    a view of the memory map where the bytes are raw); :meth:`meta` gives shape and dtype without
    reading; :meth:`release` drops a referenced tensor's pages from this process once it is used.
    """

    def __init__(self, refs: dict[str, WeightRef], arrays: dict[str, np.ndarray], graph: onnx.GraphProto | None = None):
        self.refs = refs
        self._arrays = arrays
        self._small = {t.name: t for t in graph.initializer if t.name not in refs} if graph is not None else {}
        self._maps: dict[Path, mmap.mmap] = {}

    def for_graph(self, graph: onnx.GraphProto) -> WeightStore:
        """This store with ``graph``'s own initializers (a prepared graph's folded constants) readable too."""
        store = WeightStore(self.refs, self._arrays, graph)
        store._maps = self._maps
        return store

    def __contains__(self, name: object) -> bool:
        return name in self.refs or name in self._small

    def __iter__(self) -> Iterator[str]:
        return iter([*self.refs, *self._small])

    def __getitem__(self, name: str) -> np.ndarray:
        ref = self.refs.get(name)
        if ref is None:
            return numpy_helper.to_array(self._small[name])
        if ref.file is None:
            return self._arrays[name]
        view = np.frombuffer(self._map(ref.file), np.uint8, ref.length, ref.offset)
        if ref.data_type in SUB_BYTE_BITS:
            tensor = onnx.helper.make_tensor(name, ref.data_type, ref.dims, view.tobytes(), raw=True)
            return numpy_helper.to_array(tensor)
        return view.view(ref.dtype).reshape(ref.dims)

    def meta(self, name: str) -> TensorMeta:
        """Shape and dtype of initializer ``name``, without reading it."""
        ref = self.refs.get(name)
        if ref is not None:
            return TensorMeta(ref.dims, ref.dtype)
        tensor = self._small[name]
        return TensorMeta(tuple(tensor.dims), np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)))

    def release(self, name: str) -> None:
        """Drop the mapped pages of reference ``name`` from this process (the page cache keeps them)."""
        ref = self.refs.get(name)
        if ref is None or ref.file is None or not hasattr(mmap, "MADV_DONTNEED") or ref.length == 0:
            return
        start = ref.offset - ref.offset % mmap.PAGESIZE
        self._map(ref.file).madvise(mmap.MADV_DONTNEED, start, ref.offset + ref.length - start)

    @property
    def nbytes(self) -> int:
        """Bytes of all referenced tensors."""
        return sum(ref.nbytes for ref in self.refs.values())

    def _map(self, path: Path) -> mmap.mmap:
        if path not in self._maps:
            with path.open("rb") as file:
                self._maps[path] = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        return self._maps[path]


ModelSource = str | os.PathLike | bytes | onnx.ModelProto
"""What lutc reads a model from: a path, the serialized bytes (as ``onnx.load_from_string`` takes
them; external data then lives in ``base_dir``) or a ``ModelProto``."""


def proto_from_bytes(data: bytes | bytearray | memoryview) -> onnx.ModelProto:
    """The ``ModelProto`` serialized in ``data``; bytes that are not one are a :class:`ModelError`."""
    try:
        proto = onnx.load_from_string(bytes(data))
    except Exception as err:
        raise ModelError(f"the {len(data)} bytes given are not a serialized ONNX model ({err})") from None
    if not proto.graph.node:
        raise ModelError(f"the {len(data)} bytes given hold no graph nodes: not a serialized ONNX model")
    return proto


def load_model_file(path: Path, *, external_data: bool = False) -> onnx.ModelProto:
    """The model at ``path`` (its external data read in only with ``external_data``); a missing,
    truncated or corrupt file is a :class:`ModelError`."""
    if not path.is_file():
        raise ModelError(f"no ONNX model at {str(path)!r}")
    try:
        proto = onnx.load(str(path), load_external_data=external_data)
    except Exception as err:
        raise ModelError(f"{path} is not a readable ONNX model (truncated or corrupt?): {err}") from None
    if not proto.graph.node:
        raise ModelError(f"{path} holds no graph nodes: truncated or not an ONNX model")
    return proto


def _weightless_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose initializers are copied one at a time (a whole-model ``CopyFrom``
    would hold every weight twice at once)."""
    copy = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name != "graph":
            _copy_field(copy, field, value)
    for field, value in model.graph.ListFields():
        if field.name != "initializer":
            _copy_field(copy.graph, field, value)
    return copy


def _copy_field(target, field, value) -> None:
    if field.is_repeated:
        getattr(target, field.name).extend(value)
    elif field.message_type is not None:
        getattr(target, field.name).CopyFrom(value)
    else:
        setattr(target, field.name, value)


def _external_file(tensor: onnx.TensorProto, base_dir: Path | None) -> WeightRef:
    """The reference of an initializer stored in an external data file, checked (module docstring)."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    location, where = info.get("location", ""), f"initializer {tensor.name!r}"
    if not location:
        raise ModelError(f"{where} is stored externally but names no file")
    if base_dir is None:
        raise ModelError(f"{where} is stored in the external file {location!r}: pass base_dir= (the folder holding "
                         "it) with a ModelProto, or build from the model's path")  # fmt: skip
    path = base_dir / location
    if (
        Path(location).is_absolute()
        or ".." in Path(location).parts
        or not path.resolve().is_relative_to(base_dir.resolve())
    ):
        raise ModelError(f"{where}: its external data location {location!r} is outside the model's folder {base_dir}")
    if path.is_symlink() or (path.is_file() and path.stat().st_nlink > 1):
        raise ModelError(f"{where}: its external data file {path} is a link; lutc reads plain files only")
    if not path.is_file():
        raise ModelError(f"{where}: its external data file {path} is missing")
    size, offset = path.stat().st_size, int(info.get("offset", 0))
    expected = storage_bytes(tensor.data_type, tuple(tensor.dims))
    length = int(info.get("length", expected))
    if length != expected:
        raise ModelError(f"{where}: {path} holds {length} bytes for it; dims {list(tensor.dims)} need {expected}")
    if offset < 0 or offset + length > size:
        raise ModelError(f"{where}: {path} has {size} bytes; the tensor needs bytes {offset} to {offset + length} "
                         "(a truncated or foreign data file?)")  # fmt: skip
    return WeightRef(tensor.name, tensor.data_type, tuple(tensor.dims), path, offset, length)


def _is_reference(tensor: onnx.TensorProto) -> bool:
    count = int(np.prod(tensor.dims, dtype=np.int64))
    return count > REFERENCE_ELEMENTS and tensor.data_type not in NEVER_REFERENCED


def _as_reference(tensor: onnx.TensorProto) -> None:
    """Turn ``tensor`` into a reference in place: dims and type stay, the data goes."""
    data_type, dims, name = tensor.data_type, list(tensor.dims), tensor.name
    tensor.Clear()
    tensor.name, tensor.data_type = name, data_type
    tensor.dims.extend(dims)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=REFERENCE_LOCATION)


def _read_bytes(ref: WeightRef) -> bytes:
    with ref.file.open("rb") as file:
        file.seek(ref.offset)
        return file.read(ref.length)


def check_in_proto(tensor: onnx.TensorProto) -> None:
    """Refuse an initializer held in the proto whose data does not fill its dims (raw data sized,
    typed fields read)."""
    if tensor.raw_data:
        expected = storage_bytes(tensor.data_type, tuple(tensor.dims))
        if len(tensor.raw_data) != expected:
            raise ModelError(f"initializer {tensor.name!r} has dims {list(tensor.dims)} ({expected} bytes) "
                             f"but {len(tensor.raw_data)} bytes of data")  # fmt: skip
        return
    _in_proto_array(tensor)


def _in_proto_array(tensor: onnx.TensorProto) -> np.ndarray:
    try:
        array = numpy_helper.to_array(tensor)
    except Exception as err:
        raise ModelError(f"initializer {tensor.name!r} with dims {list(tensor.dims)}: {err}") from None
    array.flags.writeable = False
    return array


def _strip(graph: onnx.GraphProto, source: onnx.GraphProto, base_dir: Path | None) -> tuple[dict, dict]:
    """Fill ``graph``'s initializers from ``source``'s: references for big ones (module docstring),
    small ones materialized (external bytes read in). Returns the references and the in-proto arrays."""
    refs, arrays = {}, {}
    for original in source.initializer:
        tensor = graph.initializer.add()
        tensor.CopyFrom(original)
        external = tensor.data_location == onnx.TensorProto.EXTERNAL
        if not external:
            check_in_proto(tensor)
        ref = _external_file(tensor, base_dir) if external else None
        if not _is_reference(tensor):
            if ref is not None:
                del tensor.external_data[:]
                tensor.data_location = onnx.TensorProto.DEFAULT
                tensor.raw_data = _read_bytes(ref)
            continue
        if ref is None:
            ref = WeightRef(tensor.name, tensor.data_type, tuple(tensor.dims))
            arrays[tensor.name] = _in_proto_array(tensor)
        refs[tensor.name] = ref
        _as_reference(tensor)
    return refs, arrays


def _materialize_nested(graph: onnx.GraphProto, base_dir: Path | None) -> None:
    """Read external data of subgraph initializers (``If``/``Loop`` bodies) into the graph: the
    importer converts those itself."""
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                for tensor in sub.initializer:
                    if tensor.data_location == onnx.TensorProto.EXTERNAL:
                        ref = _external_file(tensor, base_dir)
                        del tensor.external_data[:]
                        tensor.data_location = onnx.TensorProto.DEFAULT
                        tensor.raw_data = _read_bytes(ref)
                _materialize_nested(sub, base_dir)


def read_weightless(
    model: ModelSource, base_dir: str | os.PathLike | None = None
) -> tuple[onnx.ModelProto, WeightStore]:
    """The model's graph with its big initializers as references, and the store that reads them.

    ``model``: a path (external data is looked up beside it), or a ``ModelProto`` (never changed)
    or its serialized bytes (external data is looked up in ``base_dir``). See the module docstring.
    """
    if isinstance(model, bytes | bytearray | memoryview):
        model = proto_from_bytes(model)
    if isinstance(model, onnx.ModelProto):
        source, folder = model, Path(base_dir) if base_dir is not None else None
        if not source.graph.node:
            raise ModelError("the ModelProto holds no graph nodes")
    else:
        path = Path(model)
        source, folder = load_model_file(path), Path(base_dir) if base_dir is not None else path.parent
    graph = _weightless_copy(source)
    refs, arrays = _strip(graph.graph, source.graph, folder)
    _materialize_nested(graph.graph, folder)
    return graph, WeightStore(refs, arrays, graph.graph)


def materialized(model: onnx.ModelProto, store: WeightStore) -> onnx.ModelProto:
    """A copy of ``model`` with every reference's bytes written back into the graph (for small
    models a tool rewrites and saves, such as :func:`lutc.zoo.dequantized_reference`)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for tensor in out.graph.initializer:
        if tensor.name in store.refs:
            tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(store[tensor.name]), tensor.name))
    return out


NARROW_WIDENED = {"int4": np.int8, "int2": np.int8, "uint4": np.uint8, "uint2": np.uint8}
"""2/4-bit values are held one to a byte (TVM cannot hold sub-byte numpy arrays)."""


class WeightReader:
    """The arrays behind weight keys (:mod:`lutc.frontend.weight_params`), read from a model's
    store one at a time: an initializer as stored, a quantized node's logical arrays, or its packed
    layout (packed once for the two or three keys of one node)."""

    def __init__(self, store: WeightStore, quantized: dict):
        self.store, self.quantized = store, quantized
        self._last: tuple[str, str, tuple] = ("", "", ())

    def read(self, key: str) -> np.ndarray:
        kind, name = split_key(key)
        if kind == "initializer":
            array = self.store[name]
            widened = NARROW_WIDENED.get(array.dtype.name)
            return array if widened is None else array.astype(widened)
        if kind in LOGICAL_PARTS:
            return self._node_arrays("logical", name)[LOGICAL_PARTS.index(kind)]
        if kind in PACKED_PARTS:
            return self._node_arrays("packed", name)[PACKED_PARTS.index(kind)]
        raise ModelError(f"weight {key!r}: lutc cannot compute weights of kind {kind!r}")

    def release(self, key: str) -> None:
        """Drop the source pages of weight ``key`` from this process (call once its array is copied)."""
        kind, name = split_key(key)
        node = self.quantized.get(name)
        for source in (name,) if kind == "initializer" else tuple(node.node.input) if node is not None else ():
            self.store.release(source)

    def _node_arrays(self, form: str, name: str) -> tuple:
        if self._last[:2] != (form, name):
            node = self.quantized[name]
            if form == "logical":
                arrays = node.arrays(self.store)
            else:
                packed = pack(node.weight(self.store))
                arrays = (packed.data, packed.scales, packed.offsets)
            self._last = (form, name, arrays)
        return self._last[2]
