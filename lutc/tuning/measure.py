"""How candidates are built and timed: a builder that works on 2 cores, local or RPC runners.

meta_schedule's default builder imports ``tvm.s_tir.tensor_intrin`` in every fresh worker
(about 45 s of CPU here) and times out. Candidates reach the builder already tensorized, so
lutc's builder skips that import. Artifacts are shared libraries, cross-compiled with
``<triple>-gcc`` when the target's triple is not the host's, so a device needs no compiler.

Timing is cold by default, as when a model's weights stream from DRAM. Locally it is what the
kernel benchmark and a compiled model see: copies of the arguments, on huge pages, together
larger than :data:`COLD_BYTES`, each called in turn. Over RPC the device flushes its CPU caches
before each run instead (TVM's ``cache_flush_cpu_non_first_arg``). ``hot`` times repeated calls
on cached arguments.
"""

from __future__ import annotations

import os
import tempfile
import time
from functools import partial
from typing import Literal

import numpy as np
import tvm
from tvm.s_tir import meta_schedule as ms
from tvm.target import Target

from ..remote import RpcTracker
from ..runtime import huge_page_tensors, set_threads
from ..targets import cross_compiler

COLD_BYTES = 128 << 20
"""Working set of a local cold timing: 4x this machine's 32 MiB L3, as in the kernel benchmark."""
MAX_COPIES = 64
"""Argument copies at most: tiny kernels stay in cache anyway, and each copy costs memory."""

Measure = Literal["cold", "hot"]


def build_kernel(mod, target, _params):
    """meta_schedule's build without the ``tvm.s_tir.tensor_intrin`` import (module docstring)."""
    from tvm.driver import build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def export_shared(mod, compiler: str | None = None) -> str:
    """Write ``mod`` as a linked shared library, with ``compiler`` when cross-compiling."""
    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(prefix="lutc-tune-"), "kernel.so")
    mod.export_library(path, fcompile=cc.cross_compiler(compiler) if compiler else None)
    return path


_COPIES: dict[str, list] = {}
"""Argument copies per argument signature, kept by a runner worker across the candidates of a task."""


def alloc_cold_copies(device, args_info, alloc_repeat: int) -> list[list]:
    """Random argument sets on huge pages, enough to exceed :data:`COLD_BYTES` (``alloc_repeat`` unused)."""
    key = repr(args_info)
    if key not in _COPIES:
        _COPIES.clear()
        specs = _arg_specs(args_info)
        nbytes = sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for dtype, shape in specs)
        copies = min(MAX_COPIES, max(2, -(-COLD_BYTES // max(nbytes, 1))))
        rng = np.random.default_rng(0)
        _COPIES[key] = [huge_page_tensors(*(_random(rng, d, s) for d, s in specs)) for _ in range(copies)]
    return _COPIES[key]


def _arg_specs(args_info) -> list[tuple[str, tuple[int, ...]]]:
    """``(dtype, shape)`` of each argument of meta_schedule's ``("TENSOR", dtype, shape)`` infos."""
    return [(str(info[1]), tuple(int(d) for d in info[2])) for info in args_info]


def _random(rng: np.random.Generator, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(shape).astype(dtype)


def alloc_remote_random(session, device, args_info, alloc_repeat: int) -> list[list]:
    """``alloc_repeat`` random argument sets made here and copied to an RPC device: TVM's
    runtime-only server (``TVM_USE_RUNTIME_LIB=1``) has no ``random_fill_for_measure``."""
    rng = np.random.default_rng(0)
    specs = _arg_specs(args_info)
    return [[tvm.runtime.tensor(_random(rng, d, s), device) for d, s in specs] for _ in range(alloc_repeat)]


def run_cycling(rt_mod, device, evaluator_config, repeated_args: list[list]) -> list[float]:
    """Seconds per call over each pass through all argument copies, ``repeat`` passes after a warm-up."""
    func = rt_mod[rt_mod.entry_name]
    for args in repeated_args:
        func(*args)
    costs = []
    for _ in range(evaluator_config.repeat):
        device.sync()
        start = time.perf_counter()
        for args in repeated_args:
            func(*args)
        device.sync()
        costs.append((time.perf_counter() - start) / len(repeated_args))
    return costs


def make_builder(target: Target, timeout: float) -> ms.builder.Builder:
    """One build worker: the two cores stay free for the runner's timings."""
    export = partial(export_shared, compiler=cross_compiler(target))
    return ms.builder.LocalBuilder(max_workers=1, timeout_sec=timeout, f_build=build_kernel, f_export=export)


def evaluator(measure: Measure, repeat: int) -> ms.runner.EvaluatorConfig:
    """Cold: one call per repeat after a cache flush (RPC; locally :func:`run_cycling` times it);
    hot: calls batched over >= 20 ms."""
    if measure == "cold":
        return ms.runner.EvaluatorConfig(number=1, repeat=repeat, min_repeat_ms=0, enable_cpu_cache_flush=True)
    return ms.runner.EvaluatorConfig(number=1, repeat=repeat, min_repeat_ms=20, enable_cpu_cache_flush=False)


def make_runner(
    threads: int, timeout: float, measure: Measure, repeat: int, rpc: RpcTracker | None
) -> ms.runner.Runner:
    """A local runner with ``threads`` pool threads, or an RPC runner through a tracker."""
    config = evaluator(measure, repeat)
    if rpc is not None:
        rpc_config = ms.runner.RPCConfig(rpc.host, rpc.port, rpc.key, session_timeout_sec=int(timeout))
        return ms.runner.RPCRunner(rpc_config, config, max_workers=1, f_alloc_argument=alloc_remote_random)
    init = partial(set_threads, threads)
    if measure == "cold":
        return ms.runner.LocalRunner(
            timeout, config, f_alloc_argument=alloc_cold_copies, f_run_evaluator=run_cycling, initializer=init
        )
    return ms.runner.LocalRunner(timeout, config, initializer=init)
