"""Exported model files: atomic writes, a versioned sidecar, and checks before ``dlopen``.

A model is three files: the shared library (its code), its weight file
(:mod:`lutc.weight_file`, ``<library>.weights`` unless named otherwise) and ``<library>.lutc.json``
(its inputs, outputs, decisions, options, the weights it reads with their digests, and the digest
of the library it describes: a sidecar copied beside another library is refused). All are
written to temporary files in the target directory and moved into place with ``os.replace``, the
sidecar last, so a failed export leaves the previous set intact (and a sidecar never names a
weight file it was not written with: the digests say so on load). Loading checks the sidecar's
schema and the library's ELF headers (a truncated file made ``dlopen`` raise SIGBUS), then
loads a private copy, so a path exported again in the same process loads the new code instead
of the dynamic loader's cached old one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import LoadError, LutcError

SIDECAR_SUFFIX = ".lutc.json"
SIDECAR_FORMAT = 3
"""Version of the sidecar's schema; written as ``format``, checked on load (2: weights in their own
file; 3: the library's digest)."""

SIDECAR_FIELDS = {
    "format": int, "inputs": list, "outputs": list, "decisions": dict, "target": str, "options": dict, "weights": dict,
    "library": dict,
}  # fmt: skip
LIBRARY_FIELDS = {"sha1": str, "bytes": int}
WEIGHTS_FIELDS = {"file": str, "tensors": list}
WEIGHT_FIELDS = {"key": str, "shape": list, "dtype": str, "nbytes": int, "sha1": str}
TENSOR_FIELDS = {"name": str, "shape": list, "dtype": str}

ELF_MAGIC = b"\x7fELF"
ELF64_HEADER = struct.Struct("<16xHHIQQQIHHHHHH")
"""e_type .. e_shstrndx of a little-endian ELF64 header (after the 16-byte ident)."""
ELF64_PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")


def sidecar_of(path: Path) -> Path:
    return Path(str(path) + SIDECAR_SUFFIX)


def _temporary(directory: Path, suffix: str) -> Path:
    handle, name = tempfile.mkstemp(prefix=".lutc-", suffix=suffix, dir=directory)
    os.close(handle)
    return Path(name)


def write_atomically(
    path: Path,
    write_library: Callable[[str], None],
    sidecar: dict,
    weights: tuple[str, Callable[[str], None]] | None = None,
) -> None:
    """Write the library with ``write_library(tmp_path)``, the weight file ``weights = (name,
    write(tmp_path))`` when given (none: the one already there is kept) and the sidecar (``sidecar``
    with the library's digest as ``library``), then move them into place, the sidecar last."""
    if path.is_dir():
        raise LutcError(f"cannot write {path}: it is a directory")
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        raise LutcError(f"cannot write {path}: {path.parent} is not a writable directory")
    library, sidecar_file = _temporary(path.parent, path.suffix or ".so"), _temporary(path.parent, SIDECAR_SUFFIX)
    weight_file = _temporary(path.parent, ".weights") if weights is not None else None
    try:
        if weights is not None:
            weights[1](str(weight_file))
        write_library(str(library))
        record = {"sha1": file_sha1(library), "bytes": library.stat().st_size}
        sidecar_file.write_text(json.dumps({**sidecar, "library": record}, indent=1))
        if weights is not None:
            os.replace(weight_file, path.parent / weights[0])
        os.replace(library, path)
        os.replace(sidecar_file, sidecar_of(path))
    except OSError as err:
        raise LutcError(f"cannot write {path}: {err.strerror or err}") from None
    except Exception as err:  # TVM reports a failed link (a full disk) as "Compilation error"
        reason = (str(err).strip().splitlines() or [""])[0]
        raise LutcError(f"cannot write {path}: the library did not link ({reason}); is the disk full?") from None
    finally:
        for temporary in (library, sidecar_file, weight_file):
            if temporary is not None:
                temporary.unlink(missing_ok=True)


def file_sha1(path: Path) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_library_digest(path: Path, copy: Path, metadata: dict) -> None:
    """Refuse a library (read from ``copy``, the bytes that will be loaded) other than the one
    ``path``'s sidecar was written with."""
    record = metadata["library"]
    found = file_sha1(copy)
    if found != record["sha1"]:
        raise LoadError(f"{path} is not the library {sidecar_of(path)} describes (sha1 {found[:12]}, "
                        f"{copy.stat().st_size} bytes; the sidecar was written for sha1 {record['sha1'][:12]}, "
                        f"{record['bytes']} bytes): the files come from different exports; export the model "
                        "again, or copy a library with its own .lutc.json and weight file")  # fmt: skip


def _check_fields(where: str, data: dict, fields: dict[str, type], file: Path) -> None:
    for name, kind in fields.items():
        if name not in data:
            raise LoadError(f"{file}: {where} has no field {name!r}")
        if not isinstance(data[name], kind):
            raise LoadError(f"{file}: {where}field {name!r} must be a {kind.__name__}; got {type(data[name]).__name__}")


def read_sidecar(path: Path) -> dict:
    """The sidecar of library ``path``, schema-checked; errors name the file and the field."""
    sidecar = sidecar_of(path)
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise LoadError(f"{sidecar}: cannot read it ({err})") from None
    except json.JSONDecodeError as err:
        raise LoadError(f"{sidecar}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict):
        raise LoadError(f"{sidecar}: expected a JSON object; got a {type(data).__name__}")
    if data.get("format") != SIDECAR_FORMAT:
        raise LoadError(f"{sidecar}: sidecar format {data.get('format')!r}; this lutc reads format {SIDECAR_FORMAT}")
    _check_fields("", data, SIDECAR_FIELDS, sidecar)
    _check_fields("weights ", data["weights"], WEIGHTS_FIELDS, sidecar)
    _check_fields("library ", data["library"], LIBRARY_FIELDS, sidecar)
    for kind, fields, items in (
        ("inputs", TENSOR_FIELDS, data["inputs"]),
        ("outputs", TENSOR_FIELDS, data["outputs"]),
        ("weights.tensors", WEIGHT_FIELDS, data["weights"]["tensors"]),
    ):
        for index, tensor in enumerate(items):
            if not isinstance(tensor, dict):
                raise LoadError(f"{sidecar}: {kind}[{index}] must be an object")
            _check_fields(f"{kind}[{index}] ", tensor, fields, sidecar)
    return data


def check_elf(path: Path) -> None:
    """Refuse a file that is not a complete ELF64 shared library before ``dlopen`` maps it."""
    size = path.stat().st_size
    with path.open("rb") as file:
        head = file.read(ELF64_HEADER.size)
        if len(head) < ELF64_HEADER.size or head[:4] != ELF_MAGIC or head[4] != 2 or head[5] != 1:
            raise LoadError(f"{path}: not an ELF64 little-endian shared library (truncated or another file?)")
        _, _, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum, _ = ELF64_HEADER.unpack(head)
        if shoff + shentsize * shnum > size or phoff + phentsize * phnum > size:
            raise LoadError(f"{path}: truncated ({size} bytes; its headers need more)")
        file.seek(phoff)
        for _ in range(phnum):
            _, _, offset, _, _, filesz, _, _ = ELF64_PROGRAM_HEADER.unpack(file.read(ELF64_PROGRAM_HEADER.size))
            if offset + filesz > size:
                raise LoadError(f"{path}: truncated ({size} bytes; a segment ends at byte {offset + filesz})")


def load_library(path: Path, load: Callable[[str], object], metadata: dict) -> object:
    """``load`` a private copy of the checked library (the loader caches libraries by path), after
    checking that it is the one ``metadata`` (its sidecar) describes. The copy is named ``.so``: the
    loader picks the format by suffix, so a library renamed to any name still loads."""
    check_elf(path)
    copy = Path(tempfile.mkdtemp(prefix="lutc-load-")) / "model.so"
    try:
        shutil.copyfile(path, copy)
        check_library_digest(path, copy, metadata)
        return load(str(copy))
    except LoadError:
        raise
    except Exception as err:
        reason = (str(err).strip().splitlines() or [""])[0]
        raise LoadError(f"{path}: cannot load it ({reason})") from None
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)
