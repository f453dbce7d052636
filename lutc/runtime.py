"""TVM runtime settings lutc exposes: the CPU thread pool size, and weights on huge pages."""

from __future__ import annotations

import functools
import mmap
import os

import numpy as np
import tvm
import tvm_ffi

HUGE_PAGE = 2 << 20
"""x86-64 and aarch64 transparent huge pages: 2 MiB."""


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


def huge_page_arrays(specs: list[tuple[tuple[int, ...], str]]) -> list[np.ndarray]:
    """Writable, 64-byte aligned arrays of these ``(shape, dtype)``, together in one region advised
    to use 2 MiB huge pages (the caller's first writes back it with them).

    Weights streamed from DRAM on 4 KiB pages pay a TLB miss and a hardware-prefetch restart
    every 4 KiB, and a weight's scales, read a few bytes per group, a DRAM latency each: a
    2-bit 4096x4096 matrix (4 MiB codes, 0.5 MiB scales) went from 372 to 213 us per cold call
    on this machine (1 thread) when both sat on huge pages. The arrays share one region, so
    the small ones ride on the big one's pages; under 2 MiB in all they get ordinary memory (a
    partial huge page would waste memory). Where transparent huge pages are off (or not Linux),
    the memory is ordinary pages.
    """
    dtypes = [np.dtype(dtype) for _, dtype in specs]
    sizes = [int(np.prod(shape, dtype=np.int64)) * d.itemsize for (shape, _), d in zip(specs, dtypes, strict=True)]
    offsets = np.cumsum([0] + [_padded(size) for size in sizes])
    total = int(offsets[-1])
    if total < HUGE_PAGE or not hasattr(mmap, "MAP_ANONYMOUS"):
        region = np.empty(total + 64, np.uint8)
        start = -region.ctypes.data % 64
    else:
        region = mmap.mmap(-1, total + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        start = -_address(region) % HUGE_PAGE  # the first 2 MiB boundary inside the region
        if hasattr(mmap, "MADV_HUGEPAGE"):
            region.madvise(mmap.MADV_HUGEPAGE, start, -(-total // HUGE_PAGE) * HUGE_PAGE)
    arrays = []
    for (shape, _), dtype, size, offset in zip(specs, dtypes, sizes, offsets, strict=False):
        view = np.frombuffer(region, np.uint8, count=size, offset=start + int(offset))
        arrays.append(view.view(dtype).reshape(shape))
    return arrays


def huge_page_tensors(*arrays: np.ndarray) -> list[tvm.runtime.Tensor]:
    """CPU tensors holding copies of ``arrays``, together on huge pages (:func:`huge_page_arrays`)."""
    views = huge_page_arrays([(a.shape, a.dtype) for a in arrays])
    for view, array in zip(views, arrays, strict=True):
        view[...] = array
    return [cpu_tensor(view) for view in views]


def cpu_tensor(array: np.ndarray) -> tvm.runtime.Tensor:
    """A CPU tensor over ``array``'s memory (64-byte aligned, C-contiguous), without a copy."""
    return tvm.runtime.from_dlpack(array)


def _padded(nbytes: int, alignment: int = 64) -> int:
    return -(-nbytes // alignment) * alignment


def _address(region: mmap.mmap) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(region))


DLPACK_ERRORS = (TypeError, ValueError, BufferError, RuntimeError)
"""What ``np.from_dlpack`` raises for a tensor numpy cannot view (a dtype its DLPack lacks)."""


def to_numpy(tensor: tvm.runtime.Tensor) -> np.ndarray:
    """An owned numpy copy of a CPU tensor, through DLPack.

    ``Tensor.numpy()`` cost about 60 µs more than this right after a kernel ran (measured on a
    4096-float output; on its own it takes 6 µs): a decode step's whole Python overhead.
    """
    try:
        return np.from_dlpack(tensor).copy()
    except DLPACK_ERRORS:
        return tensor.numpy()


def tensors_of(result) -> tuple[tvm.runtime.Tensor, ...]:
    """A VM call's outputs as a tuple: its one tensor, or the items of its tuple (a TVM FFI
    ``Array``), read with one FFI call each (``tuple(array)`` normalizes each index in Python:
    15 against 7 µs for a decode step's 5 outputs)."""
    if isinstance(result, tvm.runtime.Tensor):
        return (result,)
    if type(result) is not tvm_ffi.Array:
        return tuple(result)
    item = _array_item()
    return tuple(item(result, i) for i in range(len(result)))


@functools.cache
def _array_item():
    return tvm_ffi.get_global_func("ffi.ArrayGetItem")


def host_view(tensor: tvm.runtime.Tensor) -> np.ndarray | None:
    """A numpy view of a CPU tensor's memory (no copy), or ``None`` where numpy cannot view it
    (another device, a dtype numpy's DLPack lacks)."""
    try:
        return np.from_dlpack(tensor)
    except DLPACK_ERRORS:
        return None


def copy_into(tensor: tvm.runtime.Tensor, array: np.ndarray, view: np.ndarray | None = None) -> None:
    """Copy ``array`` into a CPU tensor of its shape and dtype in place, through DLPack
    (``Tensor.copyfrom`` cost 25-70 µs more right after a kernel ran); ``view``: the tensor's
    kept :func:`host_view`, which saves the DLPack exchange."""
    view = view if view is not None else host_view(tensor)
    if view is None:
        tensor.copyfrom(array)
    else:
        np.copyto(view, array, casting="no")
