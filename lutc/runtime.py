"""TVM runtime settings lutc exposes: the CPU thread pool size."""

from __future__ import annotations

import os

import tvm_ffi


def set_threads(threads: int) -> None:
    """Use ``threads`` worker threads in TVM's CPU thread pool from now on.

    TVM sizes its pool from ``TVM_NUM_THREADS`` when the pool first starts (one thread on
    these VMs otherwise), so this raises that ceiling too before reconfiguring the pool.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int; got {threads!r}")
    ceiling = int(os.environ.get("TVM_NUM_THREADS", "0") or 0) or (os.cpu_count() or 1)
    os.environ["TVM_NUM_THREADS"] = str(max(ceiling, threads))
    tvm_ffi.get_global_func("runtime.config_threadpool")(0, threads)
    if get_threads() != threads:
        raise RuntimeError(f"TVM's thread pool runs {get_threads()} threads, not {threads}; set TVM_NUM_THREADS first")


def get_threads() -> int:
    """Threads TVM's CPU pool uses now."""
    return int(tvm_ffi.get_global_func("runtime.NumThreads")())
