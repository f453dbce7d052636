"""Per-kernel resource usage of CUDA C source, from ``ptxas -v`` (works without a GPU).

:func:`ptxas_report` compiles the source to a cubin with ``nvcc`` and parses what ptxas
prints for each ``.entry``: registers, spill stores and loads, stack frame and static shared
memory. A schedule that spills or puts a per-thread array on the stack shows up here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

NVCC_TIMEOUT_S = 300

_FUNCTION = re.compile(r"Compiling entry function '(?P<name>[^']+)' for '(?P<arch>sm_\w+)'")
_FRAME = re.compile(
    r"(?P<stack>\d+) bytes stack frame, (?P<stores>\d+) bytes spill stores, (?P<loads>\d+) bytes spill loads"
)
_USED = re.compile(r"Used (?P<registers>\d+) registers")
_SMEM = re.compile(r"(?P<smem>\d+) bytes smem")


@dataclass(frozen=True)
class KernelResources:
    """What ptxas reports for one kernel on one architecture."""

    name: str
    arch: str
    registers: int
    spill_stores: int
    spill_loads: int
    stack_frame: int
    shared_bytes: int

    @property
    def spills(self) -> bool:
        return self.spill_stores > 0 or self.spill_loads > 0


def _arch_number(arch: str) -> str:
    match = re.fullmatch(r"(?:sm_|compute_)?(\d+[a-z]?)", arch)
    if match is None:
        raise ValueError(f"CUDA arch must look like 'sm_80' or '80'; got {arch!r}")
    return match.group(1)


def nvcc_command(source: Path, cubin: Path, arch: str) -> list[str]:
    """The ``nvcc`` call :func:`ptxas_report` makes (``arch`` like ``sm_80``)."""
    number = _arch_number(arch)
    return [
        "nvcc", "--cubin", "-gencode", f"arch=compute_{number},code=sm_{number}", "-O3",
        "-Xptxas", "-v,--warn-on-spills,--warn-on-local-memory-usage", "-o", str(cubin), str(source),
    ]  # fmt: skip


def parse_ptxas(output: str) -> dict[str, KernelResources]:
    """Per-kernel resources from ptxas' verbose output (one ``Compiling entry function``
    line, then ``stack frame`` and ``Used ... registers`` lines, per kernel)."""
    kernels: dict[str, KernelResources] = {}
    current: dict | None = None
    for line in output.splitlines():
        if found := _FUNCTION.search(line):
            current = {"name": found["name"], "arch": found["arch"], "registers": 0, "spill_stores": 0,
                       "spill_loads": 0, "stack_frame": 0, "shared_bytes": 0}  # fmt: skip
            kernels[current["name"]] = KernelResources(**current)
            continue
        if current is None:
            continue
        if found := _FRAME.search(line):
            current.update(stack_frame=int(found["stack"]), spill_stores=int(found["stores"]),
                           spill_loads=int(found["loads"]))  # fmt: skip
        if found := _USED.search(line):
            current["registers"] = int(found["registers"])
            if smem := _SMEM.search(line):
                current["shared_bytes"] = int(smem["smem"])
        kernels[current["name"]] = KernelResources(**current)
    return kernels


def ptxas_report(cuda_source: str, arch: str) -> dict[str, KernelResources]:
    """Compile ``cuda_source`` for ``arch`` (``sm_80``, ``sm_90``, ...) and return the
    resources of each kernel by name. Raises ``RuntimeError`` with nvcc's message when nvcc
    is missing or the compilation fails."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise RuntimeError("nvcc not found on PATH: install the CUDA toolkit to check CUDA kernels")
    with tempfile.TemporaryDirectory(prefix="lutc_ptxas_") as tmp:
        source, cubin = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.cubin"
        source.write_text(cuda_source)
        command = [nvcc, *nvcc_command(source, cubin, arch)[1:]]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=NVCC_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(f"nvcc timed out after {NVCC_TIMEOUT_S} s for {arch}") from err
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"nvcc failed for {arch} (exit {done.returncode}):\n{output.strip()}")
    kernels = parse_ptxas(output)
    if not kernels:
        raise RuntimeError(f"ptxas reported no kernels for {arch}:\n{output.strip()}")
    return kernels
