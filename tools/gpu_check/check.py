#!/usr/bin/env python3
"""Run a bundle of ``make_bundle.py`` on an NVIDIA GPU with CuPy: no TVM, no lutc.

    python3 check.py BUNDLE_DIR [--out results.json] [--reps 100] [--time-limit 540]
    python3 check.py BUNDLE_DIR --dry-run        # validate the bundle; needs no GPU or CuPy

Each kernel module's CUDA source is compiled with ``cupy.RawModule`` (NVRTC with TVM's flags;
nvcc if NVRTC fails) and its kernels are launched in the order, with the grids, blocks and
arguments, that TVM's host code uses (``manifest.json``). Correctness cases are compared with
the numpy references under the tolerances of ``tests/test_kernels.py``; timing cases are timed
with CUDA events, hot (same weights every call) and cold (L2 flushed before every call),
against cuBLAS fp16 (``torch.matmul``) and the measured DRAM bandwidth.

The cases run in a worker process. A launch that kills the CUDA context (an illegal address)
fails its case, and a fresh worker takes the remaining ones. Imports only the standard library
and numpy here; the worker imports cupy (and torch for cuBLAS).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MANIFEST_VERSION = 1
DEFAULT_REPS = 100
WARMUP = 10
FLUSH_BYTES = 512 * 2**20
"""Written before each cold call: well over the L2 of an H100/H200 (50-60 MiB)."""
BANDWIDTH_BYTES = 2 * 2**30
CONTEXT_LOST = 3
"""Worker exit status when the CUDA context is unusable after a failed launch."""
GARBAGE_BYTE = 0xFF
"""Fills every buffer a correctness case does not load: NaN in floats, so an unwritten or
uninitialized-then-read element shows up in the output."""
_KERNEL = re.compile(r'extern "C" __global__ void (?:__launch_bounds__\(\d+(?:, *\d+)*\) )?(\w+)\(([^)]*)\)')


# ---- the bundle ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    """A bundle directory and its manifest."""

    root: Path
    manifest: dict

    @staticmethod
    def load(root: Path) -> Bundle:
        return Bundle(root, json.loads((root / "manifest.json").read_text()))

    @property
    def cases(self) -> list[dict]:
        return self.manifest["cases"]

    def case(self, name: str) -> dict:
        (case,) = [c for c in self.cases if c["name"] == name]
        return case

    def source(self, module: dict) -> str:
        return (self.root / module["source"]).read_text()

    def arrays(self, case: dict) -> dict[str, np.ndarray]:
        if "arrays" not in case:
            return {}
        with np.load(self.root / case["arrays"]) as npz:
            return {key: npz[key] for key in npz.files}


def kernel_signatures(source: str) -> dict[str, int]:
    """``__global__`` kernel name -> number of parameters, from CUDA C source."""
    return {name: len([p for p in params.split(",") if p.strip()]) for name, params in _KERNEL.findall(source)}


def _module_problems(bundle: Bundle, case: dict, module: dict) -> list[str]:
    where = f"{case['name']}/{module['name']}"
    path = bundle.root / module["source"]
    if not path.is_file():
        return [f"{where}: source {module['source']} missing"]
    kernels = kernel_signatures(path.read_text())
    problems = []
    for launch in module["launches"]:
        name = launch["kernel"]
        if name not in kernels:
            problems.append(f"{where}: kernel {name} not in {module['source']}")
        elif kernels[name] != len(launch["args"]):
            problems.append(
                f"{where}: {name} takes {kernels[name]} parameters, the launch passes {len(launch['args'])}"
            )
        threads = int(np.prod(launch["block"]))
        if min(launch["grid"] + launch["block"]) < 1 or threads > 1024:
            problems.append(f"{where}: {name} grid {launch['grid']} block {launch['block']}")
        missing = [
            a["buffer"] for a in launch["args"] if a["buffer"] is not None and a["buffer"] not in case["buffers"]
        ]
        problems += [f"{where}: {name} argument {b} is not a buffer of the case" for b in missing]
    return problems


def _array_problems(bundle: Bundle, case: dict) -> list[str]:
    if case["kind"] != "correctness":
        return []
    if not (bundle.root / case.get("arrays", "")).is_file():
        return [f"{case['name']}: arrays missing"]
    arrays, buffers = bundle.arrays(case), case["buffers"]
    needed = [n for n, b in buffers.items() if b["role"] in ("input", "weight")]
    problems = [f"{case['name']}: array {n} missing" for n in needed if n not in arrays]
    for name in needed:
        if name in arrays and (list(arrays[name].shape), str(arrays[name].dtype)) != (
            buffers[name]["shape"], buffers[name]["dtype"]):  # fmt: skip
            problems.append(
                f"{case['name']}: array {name} {arrays[name].shape} {arrays[name].dtype} != {buffers[name]}"
            )
    for name in ("expected", "reference", "allowed"):
        if name not in arrays or list(arrays[name].shape) != buffers["y"]["shape"]:
            problems.append(f"{case['name']}: {name} missing or not of y's shape {buffers['y']['shape']}")
    if "atol" not in arrays or arrays["atol"].shape != () or not np.isfinite(arrays["atol"]):
        problems.append(f"{case['name']}: atol missing or not a finite scalar")
    return problems


def validate(bundle: Bundle) -> list[str]:
    """Every inconsistency between the manifest, the sources and the arrays."""
    if bundle.manifest.get("version") != MANIFEST_VERSION:
        return [f"manifest version {bundle.manifest.get('version')}, this runner reads {MANIFEST_VERSION}"]
    problems = []
    for case in bundle.cases:
        if [m["name"] for m in case["modules"]] != ["precompute", "matmul"]:
            problems.append(f"{case['name']}: modules {[m['name'] for m in case['modules']]}")
        for module in case["modules"]:
            problems += _module_problems(bundle, case, module)
        problems += _array_problems(bundle, case)
    return problems


def jobs_of(bundle: Bundle) -> list[str]:
    """The worker's jobs, in order: bandwidth, correctness, timing, cuBLAS per timing shape."""
    cases = sorted(bundle.cases, key=lambda c: c["kind"] != "correctness")
    shapes = dict.fromkeys(f"cublas:{c['m']},{c['n']},{c['k']}" for c in cases if c["kind"] == "timing")
    return ["device", "bandwidth", *(f"case:{c['name']}" for c in cases), *shapes]


# ---- the worker (imports cupy) ------------------------------------------------------------


def _cuda_includes() -> list[str]:
    roots = [os.environ.get(v) for v in ("CUDA_PATH", "CUDA_HOME")]
    nvcc = shutil.which("nvcc")
    roots += [str(Path(nvcc).resolve().parent.parent) if nvcc else None, "/usr/local/cuda"]
    dirs = []
    for root in filter(None, roots):
        for sub in ("include", "include/cccl", "targets/x86_64-linux/include", "targets/x86_64-linux/include/cccl"):
            path = Path(root) / sub
            if path.is_dir() and f"-I{path}" not in dirs:
                dirs.append(f"-I{path}")
    return dirs


@dataclass
class Gpu:
    """CuPy, the compiled modules (by source path) and a buffer to flush the L2 with."""

    cp: object
    bundle: Bundle
    backend: str
    modules: dict = field(default_factory=dict)
    _flush: object = None

    def functions(self, module: dict) -> dict:
        """The module's kernels, compiled on first use; raises naming the failed kernel."""
        key = module["source"]
        if key not in self.modules:
            self.modules[key] = self._compile(self.bundle.source(module), [la["kernel"] for la in module["launches"]])
        return self.modules[key]

    def _compile(self, code: str, names: list[str]) -> dict:
        errors = []
        for backend in ("nvrtc", "nvcc") if self.backend == "auto" else (self.backend,):
            opts = self.bundle.manifest[f"{backend}_options"] + (_cuda_includes() if backend == "nvrtc" else [])
            try:
                mod = self.cp.RawModule(code=code, options=tuple(opts), backend=backend)
                return {"backend": backend, **{name: mod.get_function(name) for name in names}}
            except Exception as err:
                errors.append(f"{backend}: {type(err).__name__}: {str(err).strip()[-2000:]}")
        raise RuntimeError(f"compiling kernels {', '.join(names)} failed: " + " | ".join(errors))

    def launch(self, module: dict, buffers: dict) -> None:
        functions = self.functions(module)
        for la in module["launches"]:
            args = tuple(buffers[a["buffer"]] if a["buffer"] is not None else np.dtype(a["dtype"]).type(a["value"])
                         for a in la["args"])  # fmt: skip
            try:
                functions[la["kernel"]](tuple(la["grid"]), tuple(la["block"]), args, shared_mem=la["shared_mem"])
            except Exception as err:
                raise RuntimeError(f"launching {module['name']} kernel {la['kernel']}: {err}") from err

    def flush(self) -> None:
        if self._flush is None:
            self._flush = self.cp.empty(FLUSH_BYTES, dtype=np.uint8)
        self._flush.fill(1)

    def time_us(self, fn, reps: int, cold: bool) -> list[float]:
        """Per-call times in µs from CUDA events, after a warm-up; ``cold`` flushes L2 first."""
        for _ in range(WARMUP):
            fn()
        start, end = self.cp.cuda.Event(), self.cp.cuda.Event()
        times = []
        for _ in range(reps):
            if cold:
                self.flush()
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(1000.0 * self.cp.cuda.get_elapsed_time(start, end))
        return times


def _fill(gpu: Gpu, info: dict, rng: np.random.Generator, garbage: bool):
    shape, dtype = tuple(info["shape"]), np.dtype(info["dtype"])
    if garbage or info["role"] not in ("input", "weight"):
        return gpu.cp.asarray(
            np.full(int(np.prod(shape)) * dtype.itemsize, GARBAGE_BYTE, np.uint8).view(dtype).reshape(shape)
        )
    if dtype.kind == "f":
        scale = 0.01 if info["role"] == "weight" else 1.0
        return gpu.cp.asarray((rng.standard_normal(shape) * scale).astype(dtype))
    return gpu.cp.asarray(rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, shape, endpoint=True, dtype=dtype))


def buffers_for(gpu: Gpu, case: dict, arrays: dict[str, np.ndarray], seed: int = 0) -> dict:
    """Device buffers of a case: its arrays where given, else garbage (correctness) or random."""
    rng = np.random.default_rng(seed)
    garbage = case["kind"] == "correctness"
    return {name: gpu.cp.asarray(arrays[name]) if name in arrays else _fill(gpu, info, rng, garbage)
            for name, info in case["buffers"].items()}  # fmt: skip


def _run_once(gpu: Gpu, case: dict, arrays: dict) -> np.ndarray:
    buffers = buffers_for(gpu, case, arrays)
    for module in case["modules"]:
        gpu.launch(module, buffers)
    gpu.cp.cuda.runtime.deviceSynchronize()
    return gpu.cp.asnumpy(buffers["y"])


def check_case(gpu: Gpu, case: dict) -> dict:
    """``tests/test_kernels.py``'s two checks: the own-mode reference within ``atol``, the real
    product within ``allowed`` per element; and whether a second run is bit-identical."""
    arrays = gpu.bundle.arrays(case)
    y = _run_once(gpu, case, arrays)
    finite = bool(np.isfinite(y).all())
    err_expected = float(np.abs(y - arrays["expected"]).max())
    margin = np.abs(y - arrays["reference"]) / np.maximum(arrays["allowed"], np.finfo(np.float64).tiny)
    ok_expected = finite and err_expected <= float(arrays["atol"])
    ok_reference = finite and bool(np.all(np.abs(y - arrays["reference"]) <= arrays["allowed"]))
    repeat = _run_once(gpu, case, arrays)
    reason = "" if finite else f"{int((~np.isfinite(y)).sum())} non-finite outputs"
    return {"passed": ok_expected and ok_reference, "finite": finite, "max_err_expected": err_expected,
            "atol": float(arrays["atol"]), "worst_reference_ratio": float(np.nanmax(margin)) if finite else None,
            "within_expected": ok_expected, "within_reference": ok_reference,
            "repeatable": bool(np.array_equal(y, repeat, equal_nan=True)), "reason": reason}  # fmt: skip


def _stats(times: list[float]) -> dict:
    return {"min_us": float(np.min(times)), "median_us": float(np.median(times)), "reps": len(times)}


def time_case(gpu: Gpu, case: dict, reps: int) -> dict:
    """Precompute + matmul and matmul alone, hot and cold; GB/s of the weight bytes."""
    buffers = buffers_for(gpu, case, {})
    pre, mm = case["modules"]
    both = lambda: (gpu.launch(pre, buffers), gpu.launch(mm, buffers))  # noqa: E731
    alone = lambda: gpu.launch(mm, buffers)  # noqa: E731
    result = {}
    for label, fn in (("total", both), ("matmul", alone)):
        for temp in ("hot", "cold"):
            result[f"{label}_{temp}"] = _stats(gpu.time_us(fn, reps, temp == "cold"))
    gbs = lambda t: case["weight_bytes"] / (t * 1e-6) / 1e9  # noqa: E731
    result["gbs_cold"] = gbs(result["matmul_cold"]["median_us"])
    result["gbs_hot"] = gbs(result["matmul_hot"]["median_us"])
    return result


def bandwidth(gpu: Gpu, reps: int) -> dict:
    """DRAM bandwidth: a device-to-device copy (read + write) and a read-only reduction kernel."""
    cp = gpu.cp
    src, dst = cp.empty(BANDWIDTH_BYTES // 2, np.uint8), cp.empty(BANDWIDTH_BYTES // 2, np.uint8)
    src.fill(1)
    copy = _stats(gpu.time_us(lambda: dst.__setitem__(Ellipsis, src), max(reps // 5, 5), cold=False))
    result = {"copy_gbs": 2 * src.nbytes / (copy["min_us"] * 1e-6) / 1e9}
    try:
        read = _read_kernel(gpu, src.view(np.float32))
        result["read_gbs"] = (
            src.nbytes / (_stats(gpu.time_us(read, max(reps // 5, 5), cold=False))["min_us"] * 1e-6) / 1e9
        )
    except Exception as err:
        result["read_error"] = f"{type(err).__name__}: {err}"
    result["peak_gbs"] = max(result.get("read_gbs", 0.0), result["copy_gbs"])
    return result


READ_KERNEL = r"""
extern "C" __global__ void read_bw(const float4* __restrict__ src, long long n4, float* __restrict__ out) {
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n4; i += stride) {
        float4 v = src[i];
        acc.x += v.x; acc.y += v.y; acc.z += v.z; acc.w += v.w;
    }
    if (acc.x + acc.y + acc.z + acc.w == 12345.f) out[0] = acc.x;
}
"""


def _read_kernel(gpu: Gpu, src):
    kernel = gpu.cp.RawModule(code=READ_KERNEL).get_function("read_bw")
    out = gpu.cp.empty(1, np.float32)
    blocks = 8 * int(gpu.cp.cuda.runtime.getDeviceProperties(0)["multiProcessorCount"])
    return lambda: kernel((blocks,), (256,), (src, np.int64(src.size // 4), out))


def cublas(gpu: Gpu, m: int, n: int, k: int, reps: int) -> dict:
    """``torch.matmul`` of fp16 ``[M, K] @ [K, N]``, hot and cold."""
    import torch

    x = torch.randn(m, k, dtype=torch.float16, device="cuda")
    w = torch.randn(k, n, dtype=torch.float16, device="cuda")
    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    result = {}
    for temp in ("hot", "cold"):
        times = []
        for i in range(WARMUP + reps):
            if temp == "cold":
                flush.fill_(1)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.matmul(x, w)
            end.record()
            end.synchronize()
            if i >= WARMUP:
                times.append(1000.0 * start.elapsed_time(end))
        result[temp] = _stats(times)
    result["weight_bytes"] = k * n * 2
    return result


def device_info(gpu: Gpu) -> dict:
    props = gpu.cp.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return {"name": name, "sm": f"sm_{props['major']}{props['minor']}", "sms": int(props["multiProcessorCount"]),
            "memory_gib": props["totalGlobalMem"] / 2**30, "l2_mib": props.get("l2CacheSize", 0) / 2**20,
            "runtime": gpu.cp.cuda.runtime.runtimeGetVersion(), "driver": gpu.cp.cuda.runtime.driverGetVersion(),
            "cupy": gpu.cp.__version__}  # fmt: skip


def run_job(gpu: Gpu, job: str, reps: int) -> dict:
    kind, _, arg = job.partition(":")
    if kind == "device":
        return device_info(gpu)
    if kind == "bandwidth":
        return bandwidth(gpu, reps)
    if kind == "cublas":
        return cublas(gpu, *map(int, arg.split(",")), reps)
    case = gpu.bundle.case(arg)
    return check_case(gpu, case) if case["kind"] == "correctness" else time_case(gpu, case, reps)


def _context_alive(cp) -> bool:
    try:
        cp.cuda.runtime.deviceSynchronize()
        cp.asnumpy(cp.zeros(1))
        return True
    except Exception:
        return False


def worker(bundle: Bundle, jobs: list[str], records: Path, reps: int, deadline: float, backend: str) -> int:
    """Run ``jobs``, appending a ``start`` and a ``done`` record per job to ``records``."""
    import cupy

    gpu = Gpu(cupy, bundle, backend)
    with records.open("a") as log:
        for i, job in enumerate(jobs):
            write = lambda rec: (log.write(json.dumps(rec) + "\n"), log.flush())  # noqa: E731
            if time.time() > deadline:
                write({"job": job, "event": "done", "result": {"error": "skipped: time limit"}})
                continue
            write({"job": job, "event": "start"})
            start = time.perf_counter()
            try:
                result = run_job(gpu, job, reps)
            except Exception as err:
                result = {"error": f"{type(err).__name__}: {err}"}
            result["seconds"] = time.perf_counter() - start
            write({"job": job, "event": "done", "result": result})
            print(f"  [{i + 1}/{len(jobs)}] {job}: {_summary(result)}", flush=True)
            if "error" in result and not _context_alive(cupy):
                return CONTEXT_LOST
    return 0


def _summary(result: dict) -> str:
    if "error" in result:
        return "ERROR " + result["error"].splitlines()[0][:300]
    if "passed" in result:
        return (
            "ok" if result["passed"] else "FAIL"
        ) + f" err {result['max_err_expected']:.3g} (atol {result['atol']:.3g})"
    if "total_hot" in result:
        return f"{result['total_hot']['median_us']:.1f} µs hot, matmul {result['matmul_cold']['median_us']:.1f} µs cold"
    return f"{result['seconds']:.1f} s"


# ---- the parent: workers, results, report -------------------------------------------------


def _read_records(path: Path) -> tuple[dict[str, dict], set[str]]:
    done, started = {}, set()
    if path.exists():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec["event"] == "start":
                started.add(rec["job"])
            else:
                done[rec["job"]] = rec["result"]
    return done, started - set(done)


def run_workers(bundle_dir: Path, jobs: list[str], reps: int, time_limit: float, backend: str) -> dict[str, dict]:
    """Run the jobs in worker processes; a worker that dies fails its current job and a new one
    takes the rest. Returns each job's result."""
    deadline = time.time() + time_limit
    with tempfile.TemporaryDirectory() as tmp:
        records, jobs_file = Path(tmp) / "records.jsonl", Path(tmp) / "jobs.json"
        results: dict[str, dict] = {}
        for _ in range(len(jobs)):
            todo = [j for j in jobs if j not in results]
            if not todo:
                break
            jobs_file.write_text(json.dumps(todo))
            cmd = [sys.executable, __file__, str(bundle_dir), "--worker", str(jobs_file), "--records", str(records),
                   "--reps", str(reps), "--deadline", str(deadline), "--backend", backend]  # fmt: skip
            proc = subprocess.run(cmd, stderr=subprocess.PIPE, text=True, timeout=max(deadline - time.time(), 0) + 60)
            done, crashed = _read_records(records)
            results.update(done)
            tail = proc.stderr.strip()[-1500:]
            for job in crashed:
                results[job] = {"error": f"worker died (exit {proc.returncode}) during this job: {tail}"}
            if proc.returncode not in (0, CONTEXT_LOST) and not crashed:
                for job in todo:
                    results.setdefault(job, {"error": f"worker failed to start (exit {proc.returncode}): {tail}"})
    return results


def _fmt(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _ratio(blas: float | None, lutc: float) -> str:
    return _fmt(blas / lutc if blas else None, ".2f")


def correctness_table(bundle: Bundle, results: dict[str, dict]) -> list[str]:
    rows = ["| case | result | max abs err vs LUT ref | atol | worst err / allowed vs real product | repeatable |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for case in (c for c in bundle.cases if c["kind"] == "correctness"):
        r = results.get(f"case:{case['name']}", {"error": "not run"})
        if "error" in r:
            rows.append(f"| {case['name']} | ERROR: {r['error'].splitlines()[0][:200]} | | | | |")
            continue
        status = "pass" if r["passed"] else f"FAIL {r['reason']}"
        rows.append(f"| {case['name']} | {status} | {r['max_err_expected']:.3g} | {r['atol']:.3g} | "
                    f"{_fmt(r['worst_reference_ratio'], '.3f')} | {r['repeatable']} |")  # fmt: skip
    return rows


def timing_table(bundle: Bundle, results: dict[str, dict]) -> list[str]:
    peak = results.get("bandwidth", {}).get("peak_gbs")
    rows = ["| case | total µs hot min/med | matmul µs hot min/med | total µs cold med | matmul µs cold med | "
            "GB/s cold | % of DRAM BW | cuBLAS fp16 µs hot/cold | speedup hot/cold |",
            "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for case in (c for c in bundle.cases if c["kind"] == "timing"):
        r = results.get(f"case:{case['name']}", {"error": "not run"})
        if "error" in r:
            rows.append(f"| {case['name']} | ERROR: {r['error'].splitlines()[0][:200]} | | | | | | | |")
            continue
        blas = results.get(f"cublas:{case['m']},{case['n']},{case['k']}", {})
        hot, cold = (blas.get(t, {}).get("median_us") for t in ("hot", "cold"))
        th, tc = r["total_hot"]["median_us"], r["total_cold"]["median_us"]
        rows.append(
            f"| {case['name']} | {r['total_hot']['min_us']:.1f}/{th:.1f} | {r['matmul_hot']['min_us']:.1f}/"
            f"{r['matmul_hot']['median_us']:.1f} | {tc:.1f} | {r['matmul_cold']['median_us']:.1f} | "
            f"{r['gbs_cold']:.0f} | {_fmt(100 * r['gbs_cold'] / peak if peak else None)} | "
            f"{_fmt(hot)}/{_fmt(cold)} | {_ratio(hot, th)}/{_ratio(cold, tc)} |"
        )
    return rows


def sweep_table(bundle: Bundle, results: dict[str, dict]) -> list[str]:
    """The knob sweep: per shape, every timed knob set (``default``: the rule's) by matmul cold
    median, fastest first, with its ratio to the default."""
    groups: dict[tuple, list[dict]] = {}
    for case in (c for c in bundle.cases if c["kind"] == "timing"):
        groups.setdefault((case["m"], case["n"], case["k"], case["format"]), []).append(case)
    rows = ["| M, N, K, format | knobs | matmul µs cold med | GB/s cold | default / this |", "|---|---|---|---|---|"]
    for (m, n, k, fmt), cases in groups.items():
        timed = [(c, results.get(f"case:{c['name']}", {})) for c in cases]
        timed = [(c, r) for c, r in timed if "matmul_cold" in r]
        if len(cases) < 2 or not timed:
            continue
        default = next((r for c, r in timed if not c.get("knobs")), None)
        for case, r in sorted(timed, key=lambda cr: cr[1]["matmul_cold"]["median_us"]):
            knobs = ", ".join(f"{key} {value}" for key, value in sorted(case.get("knobs", {}).items())) or "default"
            median = r["matmul_cold"]["median_us"]
            ratio = _ratio(default["matmul_cold"]["median_us"], median) if default else "-"
            rows.append(f"| {m}, {n}, {k}, {fmt} | {knobs} | {median:.1f} | {r['gbs_cold']:.0f} | {ratio} |")
    return rows if len(rows) > 2 else []


def report(bundle: Bundle, results: dict[str, dict]) -> str:
    """The markdown report: device, bandwidth, correctness and timing tables."""
    dev, bw = results.get("device", {}), results.get("bandwidth", {})
    lines = [f"# lutc GPU check: {dev.get('name', '?')} ({dev.get('sm', '?')}), bundle for {bundle.manifest['arch']}",
             "", f"DRAM bandwidth: copy {_fmt(bw.get('copy_gbs'), '.0f')} GB/s, read {_fmt(bw.get('read_gbs'), '.0f')} "
             f"GB/s{' (' + bw['error'] + ')' if 'error' in bw else ''}", "", "## Correctness", "",
             *correctness_table(bundle, results), "", "## Timing (fast mode; cold = L2 flushed before each call; "
             "GB/s = weight bytes / matmul cold median; speedup = cuBLAS / lutc total)", "",
             *timing_table(bundle, results), ""]  # fmt: skip
    sweep = sweep_table(bundle, results)
    if sweep:
        lines += ["## Knob sweep (lut_matmul's tiles, K split and chunk; fastest first)", "", *sweep, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--out", type=Path, default=Path("results.json"))
    parser.add_argument("--dry-run", action="store_true", help="validate the bundle only (no GPU needed)")
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS)
    parser.add_argument("--time-limit", type=float, default=540.0, help="seconds for all jobs")
    parser.add_argument("--backend", choices=("auto", "nvrtc", "nvcc"), default="auto")
    parser.add_argument("--only", default="", help="comma-separated substrings: run matching cases only")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--records", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    bundle = Bundle.load(args.bundle)
    if args.worker is not None:
        jobs = json.loads(args.worker.read_text())
        return worker(bundle, jobs, args.records, args.reps, args.deadline, args.backend)
    problems = validate(bundle)
    for problem in problems:
        print("INVALID", problem)
    if problems or args.dry_run:
        print(f"{len(bundle.cases)} cases, {len(problems)} problems")
        return 1 if problems else 0
    jobs = [j for j in jobs_of(bundle) if not args.only or not j.startswith("case:")
            or any(s in j for s in args.only.split(","))]  # fmt: skip
    print(f"{len(jobs)} jobs, {args.reps} reps per timing", flush=True)
    results = run_workers(args.bundle, jobs, args.reps, args.time_limit, args.backend)
    text = report(bundle, results)
    args.out.write_text(json.dumps({"manifest_arch": bundle.manifest["arch"], "jobs": results}, indent=1))
    args.out.with_suffix(".md").write_text(text)
    print(text)
    failed = [j for j, r in results.items() if "error" in r or r.get("passed") is False]
    print(f"{len(failed)} of {len(results)} jobs failed or errored; results in {args.out} and its .md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
