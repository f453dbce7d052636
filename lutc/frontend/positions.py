"""How many positions a decoder can address: :func:`position_limit`.

A rotary model reads one row of its ``cos_cache``/``sin_cache`` per position, so the caches' rows
bound ``past + new tokens`` of every call (the compiled model refuses more, :mod:`.rotary`); the
configuration files next to an onnxruntime-genai or transformers export state the same kind of
bound. The smallest of them is the model's limit; :func:`lutc.generate` stops there.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx

from .contrib import CONTRIB_DOMAIN

ROTARY_CACHE_INPUTS = {"GroupQueryAttention": (7, 8), "RotaryEmbedding": (2, 3)}
"""Per ``com.microsoft`` op: the input indices of its ``cos_cache`` and ``sin_cache``."""

CONFIG_LIMITS = (
    ("genai_config.json", ("model", "context_length")),
    ("genai_config.json", ("search", "max_length")),
    ("config.json", ("max_position_embeddings",)),
)
"""The files (in the model's folder) and keys whose value bounds the positions."""


@dataclass(frozen=True)
class PositionLimit:
    """At most ``positions`` positions per sequence: past + new tokens of one call (the prompt
    plus every generated token fed back); ``source`` says where the number comes from."""

    positions: int
    source: str

    def __post_init__(self):
        if self.positions < 1:
            raise ValueError(f"a position limit must be positive; got {self.positions} ({self.source})")

    def describe(self) -> str:
        return f"{self.positions} positions ({self.source})"


def _constant_tensors(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Initializers and ``Constant`` node values by name (their dims; the data is never read)."""
    tensors = {tensor.name: tensor for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                tensors[node.output[0]] = value
    return tensors


def _reads_caches(node: onnx.NodeProto) -> bool:
    if node.domain != CONTRIB_DOMAIN or node.op_type not in ROTARY_CACHE_INPUTS:
        return False
    if node.op_type == "GroupQueryAttention":  # its caches are read only with do_rotary=1
        return any(a.name == "do_rotary" and a.i for a in node.attribute)
    return True


def _cache_limits(model: onnx.ModelProto) -> Iterator[PositionLimit]:
    tensors = _constant_tensors(model.graph)
    for node in model.graph.node:
        if not _reads_caches(node):
            continue
        for label, index in zip(("cos_cache", "sin_cache"), ROTARY_CACHE_INPUTS[node.op_type], strict=True):
            tensor = tensors.get(node.input[index]) if index < len(node.input) else None
            if tensor is not None and len(tensor.dims) == 2 and tensor.dims[0] > 0:
                yield PositionLimit(int(tensor.dims[0]), f"{label} rows of {node.op_type} node {node.name!r}")


def _read_json(path: Path) -> dict | None:
    """``path``'s object; ``None`` where it is missing or unreadable, or (with a warning) malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        warnings.warn(f"{path} is not valid JSON ({err}); its position limits are ignored", stacklevel=4)
        return None
    if not isinstance(value, dict):
        warnings.warn(f"{path} holds a JSON {type(value).__name__}, not an object; ignored", stacklevel=4)
        return None
    return value


def _config_limits(model_dir: Path) -> Iterator[PositionLimit]:
    files: dict[str, dict | None] = {}
    for name, keys in CONFIG_LIMITS:
        if name not in files:
            files[name] = _read_json(model_dir / name)
        value = files[name]
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            continue
        source = f"{name} {'.'.join(keys)}"
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            warnings.warn(f"{model_dir / name}: {'.'.join(keys)} is {value!r}, not a positive integer; ignored",
                          stacklevel=3)  # fmt: skip
            continue
        yield PositionLimit(value, source)


def position_limit(model: onnx.ModelProto, model_dir: Path | None = None) -> PositionLimit | None:
    """The smallest of the model's position limits, or ``None`` where it states none: the rows of
    every rotary cache initializer (``GroupQueryAttention`` with ``do_rotary=1``,
    ``RotaryEmbedding``; dims only, so a model loaded without its external data will do) and, in
    ``model_dir``, ``genai_config.json``'s ``model.context_length`` and ``search.max_length`` and
    ``config.json``'s ``max_position_embeddings``. A missing or unreadable file is skipped; a
    malformed one is skipped with a warning."""
    limits = list(_cache_limits(model))
    if model_dir is not None:
        limits += _config_limits(Path(model_dir))
    return min(limits, key=lambda limit: limit.positions, default=None)
