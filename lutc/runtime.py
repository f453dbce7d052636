"""TVM runtime settings lutc exposes: the CPU thread pool size."""

from __future__ import annotations

import tvm_ffi


def set_threads(threads: int) -> None:
    """Use ``threads`` worker threads in TVM's CPU thread pool from now on."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int; got {threads!r}")
    tvm_ffi.get_global_func("runtime.config_threadpool")(0, threads)


def get_threads() -> int:
    """Threads TVM's CPU pool uses now."""
    return int(tvm_ffi.get_global_func("runtime.NumThreads")())
