"""Valid random inputs for any model the benchmark is given: float noise, token ids, masks, positions.

Dims are sized by name: ``batch`` and ``seq`` from ``--shapes``, any other name (``past``,
``total``, dynamo's ``s53``) from ``--dims NAME=EXPR``, where ``EXPR`` is an int or a sum of
ints and dim names (``total=past+seq``, ``s53=seq``). Integer inputs are read by name:
``*mask*`` -> ones, ``*position*`` -> ``past + arange(seq)``, ``token_type*`` -> zeros, else
token ids below the vocabulary size of the embedding that gathers them.

A model corpus's ``manifest.json`` (``tests/corpus``) gives each model its inputs as recipes
instead: :func:`load_manifest` reads it, :func:`manifest_feeds` makes the arrays (numpy only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx

INT_TYPES = (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
EMBEDDING_OPS = {"Gather": (1, 0), "EmbedLayerNormalization": (0, 2)}
"""Op -> (ids input index, embedding input index)."""


def parse_dims(items: list[str]) -> dict[str, str]:
    """``["past=15", "total=past+seq"]`` -> ``{"past": "15", "total": "past+seq"}``."""
    dims = {}
    for item in items:
        name, sep, expr = item.partition("=")
        if not sep or not name or not expr:
            raise ValueError(f"--dims takes NAME=EXPR (e.g. past=15, total=past+seq); got {item!r}")
        dims[name] = expr
    return dims


def _term_known(term: str, sizes: dict[str, int]) -> bool:
    return term.strip().isdigit() or term.strip() in sizes


def resolve_dims(exprs: dict[str, str], batch: int, seq: int) -> dict[str, int]:
    """Every dim name's size: ``batch``, ``seq`` and the ``--dims`` expressions over them."""
    sizes = {"batch": batch, "seq": seq}
    pending = dict(exprs)
    while pending:
        ready = {n: e for n, e in pending.items() if all(_term_known(t, sizes) for t in e.split("+"))}
        if not ready:
            raise ValueError(f"--dims {sorted(pending)} refer to unknown dims (known: {sorted(sizes)})")
        for name, expr in ready.items():
            sizes[name] = sum(int(t) if t.strip().isdigit() else sizes[t.strip()] for t in expr.split("+"))
            del pending[name]
    return sizes


def _vocab_sizes(model: onnx.ModelProto) -> dict[str, int]:
    """Input name -> rows of the initializer embedding that gathers it."""
    rows = {t.name: t.dims[0] for t in model.graph.initializer if len(t.dims) == 2}
    sizes = {}
    for node in model.graph.node:
        ids, table = EMBEDDING_OPS.get(node.op_type, (None, None))
        if ids is not None and len(node.input) > table and node.input[table] in rows:
            sizes[node.input[ids]] = rows[node.input[table]]
    return sizes


def _int_input(name: str, shape: list[int], sizes: dict[str, int], vocab: int | None, rng) -> np.ndarray:
    lower = name.lower()
    if "mask" in lower:
        return np.ones(shape, np.int64)
    if "position" in lower:
        return np.broadcast_to(sizes.get("past", 0) + np.arange(shape[-1]), shape).copy()
    if "token_type" in lower or vocab is None:
        return np.zeros(shape, np.int64)
    return rng.integers(0, vocab, shape)


def _dim_size(name: str, sizes: dict[str, int]) -> int | None:
    """A named dim's size; a name that is itself a sum (TorchScript's ``past+seq``) is summed."""
    if name in sizes:
        return sizes[name]
    terms = name.split("+")
    if name and all(_term_known(t, sizes) for t in terms):
        return sum(int(t) if t.strip().isdigit() else sizes[t.strip()] for t in terms)
    return None


def model_feeds(model: onnx.ModelProto, sizes: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for every graph input of ``model``, dims sized by ``sizes`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    vocab = _vocab_sizes(model)
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else _dim_size(d.dim_param, sizes) for d in tensor.shape.dim]
        missing = [d.dim_param or "?" for d, size in zip(tensor.shape.dim, shape, strict=True) if size is None]
        if missing:
            raise ValueError(f"input {value.name!r} has dims {missing}: size them with --dims NAME=EXPR")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        if tensor.elem_type in INT_TYPES:
            feeds[value.name] = _int_input(value.name, shape, sizes, vocab.get(value.name), rng).astype(dtype)
        else:
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def load_manifest(path: Path | str) -> list[dict[str, Any]]:
    """The entries of a corpus ``manifest.json`` (one per model file; ``entry["file"]`` is relative to it)."""
    return json.loads(Path(path).read_text())


def manifest_feeds(entry: dict[str, Any], alt: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """Numpy inputs from a manifest entry's ``feeds`` (or ``feeds_alt`` when ``alt``) recipe.

    Recipe kinds: ``ids`` (uniform ints in ``[0, high)``), ``ones``, ``zeros``, ``positions``
    (``start + arange(seq)`` along the last axis, broadcast over batch) and ``normal`` (float noise).
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, rec in entry["feeds_alt" if alt else "feeds"].items():
        shape, dtype, kind = tuple(rec["shape"]), np.dtype(rec["dtype"]), rec["kind"]
        if kind == "ids":
            arr = rng.integers(0, rec["high"], size=shape)
        elif kind == "ones":
            arr = np.ones(shape)
        elif kind == "zeros":
            arr = np.zeros(shape)
        elif kind == "positions":
            arr = np.broadcast_to(rec.get("start", 0) + np.arange(shape[-1]), shape)
        elif kind == "normal":
            arr = rng.standard_normal(shape)
        else:
            raise ValueError(f"unknown feed kind {kind!r} for input {name!r}")
        out[name] = np.ascontiguousarray(arr, dtype=dtype)
    return out
