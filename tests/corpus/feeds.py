"""Numpy-only helpers for the ONNX corpus: read ``manifest.json`` and build valid model inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

CORPUS_DIR = Path(__file__).resolve().parent


def load_manifest(path: Path | str | None = None) -> list[dict[str, Any]]:
    """Return the manifest entries (one per model file); ``entry["file"]`` is relative to the corpus dir."""
    return json.loads(Path(path or CORPUS_DIR / "manifest.json").read_text())


def make_feeds(entry: dict[str, Any], alt: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """Build numpy inputs from a manifest entry's ``feeds`` (or ``feeds_alt`` when ``alt``) recipe.

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
