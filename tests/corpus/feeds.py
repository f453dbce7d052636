"""The ONNX corpus's folder and manifest; its feed recipes are read by :mod:`lutc.bench.feeds`
(shared with ``tools/gpu_check/make_model_bundle.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lutc.bench.feeds import load_manifest as _load_manifest
from lutc.bench.feeds import manifest_feeds as make_feeds

CORPUS_DIR = Path(__file__).resolve().parent

__all__ = ["CORPUS_DIR", "load_manifest", "make_feeds"]


def load_manifest(path: Path | str | None = None) -> list[dict[str, Any]]:
    """The manifest entries (one per model file); ``entry["file"]`` is relative to the corpus dir."""
    return _load_manifest(path or CORPUS_DIR / "manifest.json")
