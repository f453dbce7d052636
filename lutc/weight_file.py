"""The weight file an exported model reads: its weights, each checksummed, beside the library.

Layout: the magic ``LUTCWTS1``, the header's length (little-endian uint64), the header (JSON:
``{"tensors": [{"key", "shape", "dtype", "offset", "nbytes", "sha1"}, ...]}``), then, from the
first 4 KiB boundary after it, each tensor's bytes at its 4 KiB-aligned ``offset`` (counted from
there). ``sha1`` is the digest of the tensor's bytes (an identity
check, not a security one): a library's sidecar lists the digests it was exported with, and
:func:`read_into` recomputes them while it copies, so a swapped, stale, truncated or damaged
weight file is a :class:`~lutc.errors.LoadError` naming the file and the tensor.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .errors import LoadError

MAGIC = b"LUTCWTS1"
ALIGNMENT = 4096
CHUNK = 64 << 20
"""Bytes copied (and hashed) at a time."""
LENGTH = struct.Struct("<Q")


def digest(array: np.ndarray) -> str:
    """The ``sha1`` hex digest of an array's bytes (C order)."""
    return hashlib.sha1(memoryview(np.ascontiguousarray(array)).cast("B")).hexdigest()


def _aligned(offset: int) -> int:
    return -(-offset // ALIGNMENT) * ALIGNMENT


def layout(entries: list[dict]) -> tuple[bytes, list[dict]]:
    """The header bytes (magic, length, JSON, padding) and the entries with their offsets."""
    placed, offset = [], 0
    for entry in entries:
        placed.append({**entry, "offset": offset})
        offset = _aligned(offset + entry["nbytes"])
    text = json.dumps({"tensors": placed}).encode()
    head = MAGIC + LENGTH.pack(len(text)) + text
    start = _aligned(len(head))
    return head + bytes(start - len(head)), [{**e, "offset": e["offset"] + start} for e in placed]


def write(path: Path, entries: list[dict], arrays: Iterable[np.ndarray]) -> None:
    """Write ``arrays`` (one per entry: ``key``, ``shape``, ``dtype``, ``nbytes``, ``sha1``) to ``path``."""
    head, placed = layout(entries)
    with path.open("wb") as file:
        file.write(head)
        for entry, array in zip(placed, arrays, strict=True):
            file.seek(entry["offset"])
            file.write(memoryview(np.ascontiguousarray(array)).cast("B"))
        file.truncate(placed[-1]["offset"] + placed[-1]["nbytes"] if placed else len(head))


def read_header(path: Path) -> list[dict]:
    """The tensor entries of weight file ``path`` (offsets from the file's start); a file that is
    not one is a :class:`LoadError`."""
    try:
        with path.open("rb") as file:
            magic, length = file.read(len(MAGIC)), file.read(LENGTH.size)
            if magic != MAGIC or len(length) != LENGTH.size:
                raise LoadError(f"{path}: not a lutc weight file")
            text = file.read(LENGTH.unpack(length)[0])
            size = os.fstat(file.fileno()).st_size
        start = _aligned(len(MAGIC) + LENGTH.size + len(text))
    except OSError as err:
        raise LoadError(f"{path}: cannot read the weight file ({err.strerror or err})") from None
    try:
        tensors = [{**entry, "offset": entry["offset"] + start} for entry in json.loads(text)["tensors"]]
    except (ValueError, KeyError, TypeError):
        raise LoadError(f"{path}: the weight file's header is damaged") from None
    for entry in tensors:
        if entry["offset"] + entry["nbytes"] > size:
            raise LoadError(f"{path}: truncated ({size} bytes; tensor {entry['key']!r} ends at byte "
                            f"{entry['offset'] + entry['nbytes']})")  # fmt: skip
    return tensors


def matches(entries: list[dict], header: list[dict]) -> bool:
    """Whether a file with ``header`` holds every tensor of ``entries``, with the same digests."""
    held = {e["key"]: e for e in header}
    fields = ("shape", "dtype", "nbytes", "sha1")
    return all(e["key"] in held and all(held[e["key"]][f] == e[f] for f in fields) for e in entries)


def read_into(path: Path, entries: list[dict], views: list[np.ndarray]) -> None:
    """Copy the tensors ``entries`` names (as a sidecar lists them) from ``path`` into ``views``,
    checking each one's digest."""
    held = {e["key"]: e for e in read_header(path)}
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        for entry, view in zip(entries, views, strict=True):
            found = held.get(entry["key"])
            if found is None or any(found[f] != entry[f] for f in ("shape", "dtype", "nbytes")):
                raise LoadError(f"{path}: holds no tensor {entry['key']!r} of shape {entry['shape']} "
                                f"{entry['dtype']}: not the weight file this library was exported with")  # fmt: skip
            _copy_checked(mapped, found["offset"], entry, view, path)


def _copy_checked(mapped: mmap.mmap, offset: int, entry: dict, view: np.ndarray, path: Path) -> None:
    target = view.reshape(-1).view(np.uint8)
    hasher = hashlib.sha1()
    for start in range(0, entry["nbytes"], CHUNK):
        end = min(start + CHUNK, entry["nbytes"])
        chunk = np.frombuffer(mapped, np.uint8, end - start, offset + start)
        target[start:end] = chunk
        hasher.update(memoryview(target[start:end]))
        del chunk
        if hasattr(mmap, "MADV_DONTNEED"):
            page = (offset + start) - (offset + start) % mmap.PAGESIZE
            mapped.madvise(mmap.MADV_DONTNEED, page, offset + end - page)
    if hasher.hexdigest() != entry["sha1"]:
        raise LoadError(f"{path}: tensor {entry['key']!r} has changed since the library was exported "
                        "(its checksum differs): a stale or foreign weight file")  # fmt: skip
