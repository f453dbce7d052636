#!/usr/bin/env python3
"""Run a bundle's correctness cases on the CPU: its CUDA C compiled by g++ against ``cuda_emu.h``.

    python3 emulate.py BUNDLE_DIR [--only SUBSTR,...] [--out results.json] [--jobs N] [--cache DIR]

Each kernel module of ``make_bundle.py`` is compiled for the host: its CUDA ``#include`` lines
are dropped, ``cuda_emu.h`` is force-included and one launcher per kernel is appended; the
shared library is cached by the hash of what was compiled. The cases then run through
``check.py``'s own code (:func:`check.check_case`: the buffers, the 0xFF fill, TVM's launch
order, the two tolerance checks and the repeat) with this module's ``EmulatedGpu`` in place of
CuPy: every block of every launch runs on the CPU, its threads as coroutines (see
``cuda_emu.h``). Buffers end at an inaccessible page, so a read past the end crashes the case.
Each case runs in its own process: a crash or a hang fails that case only. Timing cases (4096
and larger, no arrays) are skipped. Needs numpy and g++, not TVM, lutc, CUDA or a GPU.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import hashlib
import importlib.util
import json
import mmap
import multiprocessing
import multiprocessing.connection
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHIM = HERE / "cuda_emu.h"
CXX_FLAGS = (
    "-x", "c++", "-std=gnu++17", "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-w",
    "-fno-strict-aliasing",  # TVM reads int8 tables through int pointers
    "-fwrapv",  # integer overflow wraps as on the GPU instead of being optimized on
    "-ffp-contract=off",  # plain IEEE float: no FMA here, whatever nvcc contracts
)  # fmt: skip
POISON_LOCALS = "-ftrivial-auto-var-init=pattern"
"""Uninitialized locals start as 0xFE bytes (g++ 12+), as unwritten buffers start as 0xFF."""
CUDA_INCLUDE = re.compile(
    r"^[ \t]*#[ \t]*include[ \t]*<(cuda\.h|cuda_runtime\.h|cuda_fp16\.h|cuda_bf16\.h|mma\.h|cuda/[^>]+"
    r"|sm_\d+_intrinsics\.h)>[ \t]*$",
    re.MULTILINE,
)
DYNAMIC_SHARED = re.compile(
    r"extern[ \t]+__shared__[ \t]+(?:(?:__align__|alignas)\(\d+\)[ \t]+)?([\w \t]+?)[ \t]+(\w+)\[\];"
)
LAUNCH_BOUNDS = re.compile(r"__global__ void __launch_bounds__\((\d+)[^)]*\) (\w+)\(")
CASE_TIMEOUT = 300.0
"""Seconds one case may take (it runs twice); a hang in the emulated kernel fails at this."""


def _load_check():
    """``check.py`` next to this file, by path (``tools/gpu_check`` is not a package)."""
    name = "gpu_check_check"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "check.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


check = _load_check()


# ---- compiling a module for the host ------------------------------------------------------


def host_source(source: str) -> str:
    """The module as g++ compiles it: CUDA headers dropped (line numbers kept), ``extern
    __shared__`` arrays bound to the launch's dynamic shared memory, a launcher per kernel."""
    text = CUDA_INCLUDE.sub(lambda m: f"// [cuda_emu] dropped #include <{m[1]}>", source)
    text = DYNAMIC_SHARED.sub(lambda m: f"CUDA_EMU_DYNAMIC_SHARED({m[1]}, {m[2]});", text)
    exports = "".join(f"CUDA_EMU_EXPORT({name})\n" for name in check.kernel_signatures(source))
    return f"{text}\n// [cuda_emu] launchers\n{exports}"


def cuda_arch(arch: str) -> int:
    """``__CUDA_ARCH__`` of a manifest arch: ``sm_90`` and ``sm_90a`` are 900."""
    match = re.fullmatch(r"sm_(\d+)[a-z]?", arch)
    if not match:
        raise ValueError(f"arch {arch!r} is not sm_NN")
    return int(match[1]) * 10


@functools.cache
def _compiler() -> tuple[str, ...]:
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise RuntimeError(f"{cxx} not found: the emulator compiles kernels with a host C++ compiler")
    probe = subprocess.run([cxx, POISON_LOCALS, "-x", "c++", "-fsyntax-only", "-"], input="", capture_output=True)
    return (cxx, *CXX_FLAGS, *((POISON_LOCALS,) if probe.returncode == 0 else ()))


def compile_module(source: str, cache: Path, arch: int = 900) -> Path:
    """The shared library of ``source`` for the host (cached by the hash of all its inputs)."""
    command = (*_compiler(), f"-DCUDA_EMU_ARCH={arch}", "-include", str(SHIM))
    text = host_source(source)
    key = hashlib.sha256("\0".join([*command, SHIM.read_text(), text]).encode()).hexdigest()[:20]
    lib = cache / f"{key}.so"
    if lib.exists():
        return lib
    cache.mkdir(parents=True, exist_ok=True)
    src, tmp = cache / f"{key}.{os.getpid()}.cu", cache / f"{key}.{os.getpid()}.so.tmp"
    src.write_text(text)
    done = subprocess.run([*command, str(src), "-o", str(tmp)], capture_output=True, text=True)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"g++ failed on {src}:\n{done.stderr.strip()[-3000:]}")
    os.replace(tmp, lib)
    return lib


# ---- the stand-in for CuPy: host arrays and emulated kernels --------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_PROT_NONE = 0
_ALIGN = 16


def guarded_empty(nbytes: int) -> np.ndarray:
    """``nbytes`` uint8 that end (to within 16 bytes of alignment) at an inaccessible page and
    start after another: a kernel reading past its buffer crashes instead of reading garbage."""
    page = mmap.PAGESIZE
    span = -(-max(nbytes, 1) // page) * page
    region = mmap.mmap(-1, span + 2 * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    for start in (base, base + page + span):
        if _libc.mprotect(start, page, _PROT_NONE) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
    offset = page + span - -(-nbytes // _ALIGN) * _ALIGN
    return np.frombuffer(region, np.uint8, nbytes, offset)


class _Runtime:
    @staticmethod
    def deviceSynchronize() -> None:  # launches are synchronous
        pass


class _Cuda:
    runtime = _Runtime


class HostArrays:
    """The part of CuPy ``check.check_case`` uses; "device" arrays are guarded host arrays."""

    cuda = _Cuda

    @staticmethod
    def asarray(a) -> np.ndarray:
        a = np.asarray(a)
        out = guarded_empty(a.nbytes).view(a.dtype).reshape(a.shape)
        out[...] = a
        return out

    @staticmethod
    def asnumpy(a) -> np.ndarray:
        return np.array(a)


_LAUNCHER_ARGS = (
    ctypes.c_uint * 3, ctypes.c_uint * 3, ctypes.c_ulong, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
    ctypes.c_char_p, ctypes.c_ulong,
)  # fmt: skip


class EmulatedKernel:
    """A kernel called as a CuPy ``RawKernel``: ``kernel(grid, block, args, shared_mem=0)``."""

    def __init__(self, lib: ctypes.CDLL, name: str, max_threads: int | None) -> None:
        self.name, self.max_threads = name, max_threads
        self.fn = getattr(lib, f"cuda_emu_launch_{name}")
        self.fn.argtypes, self.fn.restype = _LAUNCHER_ARGS, ctypes.c_int

    def __call__(self, grid, block, args, shared_mem: int = 0) -> None:
        grid, block = (*grid, 1, 1)[:3], (*block, 1, 1)[:3]
        if self.max_threads is not None and int(np.prod(block)) > self.max_threads:
            raise RuntimeError(f"block {block} exceeds {self.name}'s __launch_bounds__({self.max_threads})")
        values = [ctypes.c_void_p(a.ctypes.data) if isinstance(a, np.ndarray) else np.array(a) for a in args]
        pointers = (ctypes.c_void_p * max(len(values), 1))(
            *(ctypes.addressof(v) if isinstance(v, ctypes.c_void_p) else v.ctypes.data for v in values)
        )
        error = ctypes.create_string_buffer(2048)
        rc = self.fn((ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), shared_mem, pointers, len(values),
                     error, len(error))  # fmt: skip
        if rc != 0:
            raise RuntimeError(error.value.decode(errors="replace"))


@dataclass
class EmulatedGpu(check.Gpu):
    """``check.Gpu`` whose modules are compiled by g++ against ``cuda_emu.h`` and run here."""

    cache: Path | None = None
    arch: int = 900

    def _compile(self, code: str, names: list[str]) -> dict:
        lib = ctypes.CDLL(str(compile_module(code, self.cache, self.arch)))
        bounds = {name: int(n) for n, name in LAUNCH_BOUNDS.findall(code)}
        return {"backend": "emulator", **{name: EmulatedKernel(lib, name, bounds.get(name)) for name in names}}


# ---- running the cases ----------------------------------------------------------------------


def emulated_gpu(bundle: check.Bundle, cache: Path) -> EmulatedGpu:
    return EmulatedGpu(HostArrays, bundle, "emulator", cache=cache, arch=cuda_arch(bundle.manifest["arch"]))


def run_case(bundle: check.Bundle, name: str, cache: Path) -> dict:
    """``check.check_case`` of one case on the emulator, with its time; errors as ``error``."""
    start = time.perf_counter()
    try:
        result = check.check_case(emulated_gpu(bundle, cache), bundle.case(name))
    except Exception as err:
        result = {"error": f"{type(err).__name__}: {err}"}
    result["seconds"] = time.perf_counter() - start
    return result


def _child(root: str, name: str, cache: str, conn) -> None:
    conn.send(run_case(check.Bundle.load(Path(root)), name, Path(cache)))
    conn.close()


def _died(proc, timed_out: bool, timeout: float) -> dict:
    if timed_out:
        return {"error": f"timed out after {timeout:.0f} s (a hang or an endless loop in an emulated kernel)"}
    code = proc.exitcode
    how = f"signal {-code}" + (" (SIGSEGV: an access outside its buffers, or a thread's stack overflowed)"
                               if code == -11 else "")  # fmt: skip
    return {"error": f"the emulator process died ({how if code and code < 0 else f'exit {code}'})"}


def run_cases(bundle: check.Bundle, names: list[str], cache: Path, jobs: int, timeout: float = CASE_TIMEOUT,
              report=None) -> dict[str, dict]:  # fmt: skip
    """Each case in its own process, ``jobs`` at a time; ``report(name, result)`` as each ends."""
    ctx = multiprocessing.get_context("fork")
    todo, running, results = list(names), {}, {}
    while todo or running:
        while todo and len(running) < jobs:
            name = todo.pop(0)
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(str(bundle.root), name, str(cache), send), daemon=True)
            proc.start()
            send.close()
            running[name] = (proc, recv, time.monotonic())
        ready = multiprocessing.connection.wait([r for _, r, _ in running.values()], timeout=1.0)
        for name, (proc, recv, started) in list(running.items()):
            timed_out = time.monotonic() - started > timeout
            if recv not in ready and not timed_out:
                continue
            try:
                result = recv.recv() if recv in ready else None
            except EOFError:
                result = None
            if result is None and timed_out:
                proc.kill()
            proc.join()
            if result is None:
                result = _died(proc, timed_out, timeout)
            recv.close()
            del running[name]
            results[name] = result
            if report:
                report(name, result)
    return results


def _precompile(bundle: check.Bundle, cases: list[dict], cache: Path, jobs: int) -> dict[str, str]:
    """Compile every module the cases need, ``jobs`` at a time; source -> error message."""
    sources = sorted({m["source"] for c in cases for m in c["modules"]})
    arch = cuda_arch(bundle.manifest["arch"])

    def one(source: str) -> tuple[str, str | None]:
        try:
            compile_module((bundle.root / source).read_text(), cache, arch)
            return source, None
        except Exception as err:
            return source, str(err)

    with ThreadPoolExecutor(jobs) as pool:
        return {source: error for source, error in pool.map(one, sources) if error}


def _default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lutc" / "cuda_emu"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--only", default="", help="comma-separated substrings: run matching cases only")
    parser.add_argument("--out", type=Path, help="write the results (JSON) here and a table next to it (.md)")
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)), help="cases run in parallel")
    parser.add_argument("--cache", type=Path, default=_default_cache(), help="compiled modules")
    parser.add_argument("--timeout", type=float, default=CASE_TIMEOUT, help="seconds per case")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    bundle = check.Bundle.load(args.bundle)
    problems = check.validate(bundle)
    for problem in problems:
        print("INVALID", problem)
    if problems:
        return 1
    wanted = [s for s in args.only.split(",") if s]
    chosen = [c for c in bundle.cases if not wanted or any(s in c["name"] for s in wanted)]
    cases = [c for c in chosen if c["kind"] == "correctness"]
    skipped = len(chosen) - len(cases)
    if skipped:
        print(f"skipping {skipped} timing cases (4096-sized, no arrays: the emulator checks correctness only)")
    errors = _precompile(bundle, cases, args.cache, args.jobs)
    print(f"{len(cases)} correctness cases; compiled their modules in {time.perf_counter() - start:.1f} s", flush=True)
    results: dict[str, dict] = {}
    runnable = []
    for case in cases:
        failed = [f"compiling {m['name']} ({m['source']}): {errors[m['source']]}"
                  for m in case["modules"] if m["source"] in errors]  # fmt: skip
        if failed:
            results[case["name"]] = {"error": failed[0]}
        else:
            runnable.append(case["name"])
    done = iter(range(1, len(cases) + 1))

    def report(name: str, result: dict) -> None:
        seconds = f" ({result['seconds']:.1f} s)" if "seconds" in result else ""
        print(f"  [{next(done)}/{len(cases)}] {name}: {check._summary(result)}{seconds}", flush=True)

    for name, result in results.items():
        report(name, result)
    results.update(run_cases(bundle, runnable, args.cache, max(args.jobs, 1), args.timeout, report))
    jobs = {f"case:{c['name']}": results[c["name"]] for c in cases}
    failed = [name for name, r in jobs.items() if "error" in r or not r.get("passed")]
    if args.out:
        args.out.write_text(json.dumps({"emulator": True, "manifest_arch": bundle.manifest["arch"], "jobs": jobs},
                                       indent=1))  # fmt: skip
        args.out.with_suffix(".md").write_text("\n".join(check.correctness_table(bundle, jobs)) + "\n")
    for name in failed:
        reason = jobs[name].get("reason")
        summary = check._summary(jobs[name]).removeprefix("FAIL ") + (f", {reason}" if reason else "")
        print(f"FAILED {name.removeprefix('case:')}: {summary}")
    print(f"{len(cases) - len(failed)} of {len(cases)} correctness cases passed in the emulator, {len(failed)} failed "
          f"({time.perf_counter() - start:.1f} s)")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
