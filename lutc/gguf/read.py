"""What a GGUF file holds: its architecture's hyperparameters (:class:`Hyper`), its tensors by name
and its tokenizer metadata, read with the ``gguf`` package (memory-mapped; no tensor is copied here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LutcError, ModelError

ARCHITECTURES = ("llama", "mistral", "qwen2")
"""``general.architecture`` values converted: Llama (SmolLM2, Llama 2/3), Mistral, Qwen2 (q/k/v biases)."""
PERMUTED = ("llama", "mistral")
"""Architectures whose q/k rows llama.cpp's converter permuted into interleaved rotary pairs."""
MAGIC = b"GGUF"


@dataclass(frozen=True)
class Hyper:
    """A decoder's shape and numerics from the GGUF metadata (``{arch}.*`` keys)."""

    arch: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    context: int
    eps: float
    rope_theta: float
    rope_linear_factor: float = 1.0
    window: int | None = None

    def __post_init__(self) -> None:
        if self.heads % self.kv_heads or self.head_dim % 2:
            raise ModelError(f"GGUF {self.arch}: {self.heads} heads over {self.kv_heads} kv heads of size "
                             f"{self.head_dim} is not a grouped-query attention lutc converts")  # fmt: skip

    @property
    def permuted(self) -> bool:
        return self.arch in PERMUTED


@dataclass(frozen=True, eq=False)
class GgufFile:
    """An opened GGUF file: ``hyper``, ``tensors`` (the reader's, by name) and the metadata ``fields``."""

    path: Path
    hyper: Hyper
    tensors: Mapping[str, Any]
    fields: Mapping[str, Any]

    def value(self, key: str, default: Any = None) -> Any:
        """A metadata value (a list for arrays), or ``default`` where the file has no ``key``."""
        field = self.fields.get(key)
        return default if field is None else field.contents()

    def tensor(self, name: str) -> Any:
        try:
            return self.tensors[name]
        except KeyError:
            needed = f"GGUF has no tensor {name!r} that a {self.hyper.arch} decoder needs"
            raise ModelError(f"{self.path}: {needed}") from None


def open_gguf(path: str | Path) -> GgufFile:
    """Open ``path`` as a GGUF decoder; a :class:`ModelError` for a file that is not GGUF or an
    architecture outside :data:`ARCHITECTURES`."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            magic = file.read(4)
    except OSError as err:
        raise LutcError(f"{path}: cannot read the GGUF model: {err.strerror}") from None
    if magic != MAGIC:
        raise ModelError(f"{path} is not a GGUF file (it starts with {magic!r}, not {MAGIC!r})")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as err:
        raise ModelError(f"{path}: cannot read the GGUF file: {err}") from None
    fields = dict(reader.fields)
    tensors = {t.name: t for t in reader.tensors}
    return GgufFile(path, _hyper(path, fields, tensors), tensors, fields)


def _hyper(path: Path, fields: Mapping[str, Any], tensors: Mapping[str, Any]) -> Hyper:
    arch = _get(fields, "general.architecture", path)
    if arch not in ARCHITECTURES:
        raise ModelError(f"{path}: GGUF architecture {arch!r} is not supported; lutc converts {ARCHITECTURES}")
    key = lambda name, default=None: _get(fields, f"{arch}.{name}", path, default)  # noqa: E731
    hidden, heads = int(key("embedding_length")), int(key("attention.head_count"))
    head_dim = int(key("attention.key_length", hidden // heads))
    rope_dim = int(key("rope.dimension_count", head_dim))
    if rope_dim != head_dim:
        raise ModelError(f"{path}: rotary on {rope_dim} of {head_dim} head dimensions is not supported (only all)")
    window = key("attention.sliding_window")
    return Hyper(arch, int(key("block_count")), hidden, int(key("feed_forward_length")), heads,
                 int(key("attention.head_count_kv", heads)), head_dim, int(key("context_length")),
                 float(key("attention.layer_norm_rms_epsilon")), float(key("rope.freq_base", 10000.0)),
                 _linear_factor(path, arch, fields), int(window) if window else None)  # fmt: skip


def _linear_factor(path: Path, arch: str, fields: Mapping[str, Any]) -> float:
    """Linear rotary scaling's factor (1 without scaling); other scalings are refused by name."""
    kind = _get(fields, f"{arch}.rope.scaling.type", path, "none")
    if kind in ("none", "linear"):
        return float(_get(fields, f"{arch}.rope.scaling.factor", path, 1.0)) if kind == "linear" else 1.0
    raise ModelError(f"{path}: rotary scaling {kind!r} is not supported (none, linear, or llama3's rope_freqs)")


_MISSING = object()


def _get(fields: Mapping[str, Any], key: str, path: Path, default: Any = _MISSING) -> Any:
    field = fields.get(key)
    if field is not None:
        return field.contents()
    if default is _MISSING:
        raise ModelError(f"{path}: GGUF metadata has no {key!r}")
    return default


def float_rows(tensor: Any) -> np.ndarray:
    """A float tensor's values as float32, in the reader's (row-major, ``[N, K]``) shape."""
    return np.asarray(tensor.data, dtype=np.float32)
