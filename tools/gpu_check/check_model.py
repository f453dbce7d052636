#!/usr/bin/env python3
"""Run a ``make_model_bundle.py`` bundle: whole lutc models on an NVIDIA GPU through the bundle's
runtime-only TVM (no TVM, no lutc installed there), checked against ONNX Runtime's CPU outputs,
and the fused decoder block timed against its ``fuse=False`` build.

    python3 check_model.py BUNDLE [--out results.json] [--reps 200] [--load-only] [--site-dir DIR]

Needs Python 3 with numpy, nvcc (CUDA 12 or 13) and a CUDA driver. ``site.tar.xz`` is unpacked
into a temporary directory (or ``--site-dir``) and imported with ``TVM_USE_RUNTIME_LIB=1``.
TVM's CUDA runtime library is loaded by hand (a runtime-only ``import tvm`` loads no device
backend). A CUDA library exported without a GPU holds CUDA C; TVM compiles it on load through
``tvm_callback_cuda_compile``, registered here to call nvcc for the GPU's own arch with the
flags TVM's nvcc path uses.

Weights: each library's ``main`` takes its inputs, then one tuple of weight tensors in the order
its sidecar (``<library>.lutc.json``, format 3) lists them. They are read here from the weight file
the sidecar names (beside the library; ``lutc.weight_file``'s layout, read with numpy only), each
checked against the sidecar's sha1, and put on the device once per case. A missing, damaged or
foreign weight file fails its case with a message naming the file.

``--load-only``: unpack, import, load and JIT-compile every library and check its weight file, then
stop (needs no GPU: ``tests/test_model_bundle.py`` runs it against a stub ``libcuda``).

Correctness: every output of every feed against the stored ORT output, with
``tests/test_corpus.py``'s bounds (error relative to the largest reference value, and cosine).
Timing: per feed, the fused and unfused builds alternate call by call (``--reps`` each after 10
warm-ups; wall time of the VM call and a device sync), min and median.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

MANIFEST_VERSION = 2
DEFAULT_REPS = 200
WARMUP = 10
NVCC_FLAGS = (
    "--fatbin", "-O3", "--use_fast_math", "--expt-relaxed-constexpr", "--expt-extended-lambda",
    "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
)  # fmt: skip
"""``tvm.support.nvcc._compile_cuda_nvcc`` (0.27) for a fatbin, less its ptxas verbosity."""


class BundleError(Exception):
    """The bundle or the machine cannot run the check; the message says why."""


class WeightFileError(Exception):
    """A library's sidecar or weight file is missing, damaged or not the pair it was exported as."""


# ---------------------------------------------------------------------------- weights

SIDECAR_SUFFIX = ".lutc.json"
SIDECAR_FORMAT = 3
WEIGHT_MAGIC = b"LUTCWTS1"
WEIGHT_ALIGNMENT = 4096
"""``lutc.weight_file``'s layout, read here without lutc: the magic, the header's length
(little-endian uint64), the JSON header ``{"tensors": [{key, shape, dtype, offset, nbytes, sha1}]}``,
then each tensor's bytes at its ``offset``, counted from the first 4 KiB boundary after the header."""


def sidecar_weights(library: Path) -> tuple[list[dict], Path]:
    """(the weight entries in ``main``'s order, the weight file) of ``library``'s sidecar."""
    sidecar = Path(f"{library}{SIDECAR_SUFFIX}")
    try:
        stored = json.loads(sidecar.read_text())
        if stored.get("format") != SIDECAR_FORMAT:
            raise WeightFileError(f"{sidecar}: sidecar format {stored.get('format')!r}, this runner reads "
                                  f"{SIDECAR_FORMAT}")  # fmt: skip
        weights = stored["weights"]
        entries, name = list(weights["tensors"]), str(weights["file"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        why = f"{type(err).__name__}: {err}"
        raise WeightFileError(f"{sidecar}: cannot read the library's weight list ({why})") from None
    if Path(name).name != name:
        raise WeightFileError(f"{sidecar}: its weight file {name!r} is not a file name beside the library")
    return entries, library.parent / name


def _weight_header(path: Path, file) -> dict[str, dict]:
    """The tensors of weight file ``path`` by key, offsets from the file's start."""
    magic, length = file.read(len(WEIGHT_MAGIC)), file.read(8)
    if magic != WEIGHT_MAGIC or len(length) != 8:
        raise WeightFileError(f"{path}: not a lutc weight file (no {WEIGHT_MAGIC.decode()} header)")
    text = file.read(int.from_bytes(length, "little"))
    start = -(-(len(WEIGHT_MAGIC) + 8 + len(text)) // WEIGHT_ALIGNMENT) * WEIGHT_ALIGNMENT
    try:
        return {t["key"]: {**t, "offset": start + int(t["offset"])} for t in json.loads(text)["tensors"]}
    except (ValueError, KeyError, TypeError):
        raise WeightFileError(f"{path}: the weight file's header is damaged") from None


def read_weights(path: Path, entries: list[dict]) -> Iterator[np.ndarray]:
    """The tensors ``entries`` (a sidecar's list) names, one at a time from weight file ``path``,
    each checked against the entry's shape, dtype, size and sha1."""
    try:
        file = path.open("rb")
    except OSError as err:
        raise WeightFileError(f"{path}: cannot read the weight file ({err.strerror or err})") from None
    with file:
        held = _weight_header(path, file)
        for entry in entries:
            key, found = entry["key"], held.get(entry["key"])
            dtype, shape = np.dtype(entry["dtype"]), tuple(entry["shape"])
            if found is None or any(found.get(f) != entry[f] for f in ("shape", "dtype", "nbytes")):
                raise WeightFileError(f"{path}: holds no tensor {key!r} of shape {list(shape)} {dtype}: not the "
                                      "weight file this library was exported with")  # fmt: skip
            if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != entry["nbytes"]:
                raise WeightFileError(f"{path}: tensor {key!r}: {entry['nbytes']} bytes is not {list(shape)} {dtype}")
            file.seek(found["offset"])
            data = file.read(entry["nbytes"])
            if len(data) != entry["nbytes"]:
                raise WeightFileError(f"{path}: truncated: tensor {key!r} ends at byte "
                                      f"{found['offset'] + entry['nbytes']}")  # fmt: skip
            if hashlib.sha1(data).hexdigest() != entry["sha1"]:
                raise WeightFileError(f"{path}: tensor {key!r} does not match its sha1 in the sidecar: the weight "
                                      "file is damaged, stale or foreign")  # fmt: skip
            yield np.frombuffer(data, dtype).reshape(shape)


# ---------------------------------------------------------------------------- the runtime


def unpack_site(bundle: Path, manifest: dict, site: Path | None) -> Path:
    """``site.tar.xz`` unpacked into ``site`` (a temporary directory, removed at exit, if ``None``)."""
    if site is None:
        site = Path(tempfile.mkdtemp(prefix="lutc-site-"))
        atexit.register(shutil.rmtree, site, ignore_errors=True)
    if not (site / "tvm").is_dir():
        with tarfile.open(bundle / manifest["site"]["archive"]) as archive:
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python < 3.10.12 has no filters
            archive.extractall(site, **safe)
    return site


def import_runtime_tvm(site: Path):
    """``import tvm`` from ``site`` with only its runtime library (``TVM_USE_RUNTIME_LIB=1``)."""
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    ffi = site / f"ffi-{tag}"
    if not ffi.is_dir():
        have = sorted(p.name.removeprefix("ffi-") for p in site.glob("ffi-cp*"))
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        raise BundleError(f"the bundle has apache-tvm-ffi for {', '.join(have)}, not this Python ({tag}); "
                          f"make it with make_model_bundle.py --python {version}")  # fmt: skip
    os.environ["TVM_USE_RUNTIME_LIB"] = "1"
    sys.path[:0] = [str(site), str(ffi)]
    import tvm
    import tvm.runtime.vm  # a runtime-only ``import tvm`` does not import it

    if not tvm.base._RUNTIME_ONLY:
        raise BundleError(f"imported a full TVM ({tvm.__file__}), not the bundle's runtime-only one")
    return tvm


def load_cuda_runtime(tvm, site: Path) -> None:
    """``libcudart`` (the system's, else the bundle's), then TVM's CUDA runtime library."""
    try:
        ctypes.CDLL("libcudart.so.13", mode=ctypes.RTLD_GLOBAL)
    except OSError:
        bundled = site / "cuda" / "libcudart.so.13"
        if not bundled.is_file():
            raise BundleError("no libcudart.so.13 on this machine and none in the bundle") from None
        ctypes.CDLL(str(bundled), mode=ctypes.RTLD_GLOBAL)
    library = Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"
    try:
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
    except OSError as err:
        raise BundleError(f"TVM's CUDA runtime library does not load: {err}") from None


def find_nvcc() -> str:
    for candidate in (shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and Path(candidate).is_file():
            return candidate
    raise BundleError("nvcc is not on PATH nor in /usr/local/cuda/bin: TVM needs it to compile the stored CUDA C")


def register_nvcc_compile(nvcc: str, arch: str, log: list[dict]) -> None:
    """``tvm_callback_cuda_compile``: the CUDA C of one library to a fatbin for ``arch`` (``sm_90``)."""
    import tvm_ffi

    number = arch.removeprefix("sm_")

    @tvm_ffi.register_global_func("tvm_callback_cuda_compile", override=True)
    def _compile(code: str) -> bytes:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="lutc-nvcc-") as tmp:
            source, fatbin = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.fatbin"
            source.write_text(code)
            command = [nvcc, *NVCC_FLAGS, "-gencode", f"arch=compute_{number},code=sm_{number}",
                       "-o", str(fatbin), str(source)]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"nvcc failed ({done.returncode}): {done.stderr[-3000:]}")
            log.append({"source_bytes": len(code), "seconds": time.perf_counter() - started})
            return fatbin.read_bytes()


def gpu_arch(tvm, fallback: str) -> tuple[str, str]:
    """(``sm_XY`` of GPU 0, its name); ``fallback`` and ``""`` when no GPU is visible."""
    device = tvm.cuda(0)
    if not device.exist:
        return fallback, ""
    return "sm_" + device.compute_version.replace(".", ""), str(device.device_name)


# ---------------------------------------------------------------------------- running the cases


def outputs_of(result) -> list[np.ndarray]:
    values = [result] if hasattr(result, "numpy") else list(result)
    return [v.numpy() for v in values]


def compare(got: np.ndarray, want: np.ndarray, tolerance: dict) -> dict:
    """``tests/test_corpus.py``'s check: max error relative to the largest |reference|, and cosine."""
    if got.shape != want.shape:
        return {"ok": False, "why": f"shape {list(got.shape)}, expected {list(want.shape)}"}
    if not np.isfinite(got).all():
        return {"ok": False, "why": f"{int((~np.isfinite(got)).sum())} non-finite values"}
    g, w = got.astype(np.float64).ravel(), want.astype(np.float64).ravel()
    scale = float(np.abs(w).max()) or 1.0
    max_rel = float(np.abs(g - w).max()) / scale
    norms = float(np.linalg.norm(g) * np.linalg.norm(w))
    cosine = float(g @ w / norms) if norms else float(np.array_equal(g, w))
    ok = max_rel <= tolerance["max_rel"] and cosine >= tolerance["min_cosine"]
    return {"ok": ok, "max_rel": max_rel, "cosine": cosine}


class LoadedCase:
    """One bundle case's library, loaded and (unless ``load_only``) on a VM for ``device`` with its
    weights there; with ``load_only`` the weight file is read and checked, not copied to the device."""

    def __init__(self, tvm, bundle: Path, case: dict, device, load_only: bool):
        self.case, self.device = case, device
        library = bundle / case["library"]
        entries, weight_file = sidecar_weights(library)
        started = time.perf_counter()
        self.module = tvm.runtime.load_module(str(library))
        self.load_seconds = time.perf_counter() - started
        weights = [a if load_only else tvm.runtime.tensor(a, device) for a in read_weights(weight_file, entries)]
        self.weight_bytes = sum(e["nbytes"] for e in entries)
        self.weight_args = () if load_only else tuple(weights)
        """What follows the inputs in a call of ``main``: the weights, in the sidecar's order."""
        self.main = None if load_only else tvm.runtime.vm.VirtualMachine(self.module, device)["main"]
        self.arrays = np.load(bundle / case["arrays"])
        self._tvm = tvm

    def inputs(self, feed: str) -> list:
        return [self._tvm.runtime.tensor(self.arrays[f"{feed}/in/{name}"], self.device) for name in self.case["inputs"]]

    def references(self, feed: str) -> list[np.ndarray]:
        return [self.arrays[f"{feed}/ref/{i}"] for i in range(len(self.case["outputs"]))]

    def call(self, tensors: list):
        result = self.main(*tensors, *self.weight_args)
        self.device.sync()
        return result


def check_case(loaded: LoadedCase) -> list[dict]:
    rows = []
    for feed in loaded.case["feeds"]:
        got = outputs_of(loaded.call(loaded.inputs(feed)))
        for name, g, w in zip(loaded.case["outputs"], got, loaded.references(feed), strict=True):
            rows.append({"case": loaded.case["name"], "feed": feed, "output": name,
                         **compare(g, w, loaded.case["tolerance"])})  # fmt: skip
    return rows


def _stats(seconds: list[float]) -> dict:
    return {"min_us": min(seconds) * 1e6, "median_us": statistics.median(seconds) * 1e6}


def time_pair(fused: LoadedCase, unfused: LoadedCase, reps: int) -> list[dict]:
    """Fused and unfused alternating call by call, per feed."""
    rows = []
    for feed in fused.case["feeds"]:
        pair = [(fused, fused.inputs(feed)), (unfused, unfused.inputs(feed))]
        for model, tensors in pair:
            for _ in range(WARMUP):
                model.call(tensors)
        times: list[list[float]] = [[], []]
        for rep in range(reps):
            for slot in (0, 1) if rep % 2 == 0 else (1, 0):
                model, tensors = pair[slot]
                started = time.perf_counter()
                model.call(tensors)
                times[slot].append(time.perf_counter() - started)
        a, b = _stats(times[0]), _stats(times[1])
        rows.append({"source": fused.case["source"], "feed": feed, "fused": a, "unfused": b,
                     "speedup_median": b["median_us"] / a["median_us"]})  # fmt: skip
    return rows


def timing_pairs(loaded: dict[str, LoadedCase]) -> list[tuple[LoadedCase, LoadedCase]]:
    """(fused, unfused) cases of the same source model."""
    timed = [c for c in loaded.values() if c.case["timing"]]
    return [(f, u) for f in timed if f.case["fuse"] for u in timed
            if not u.case["fuse"] and u.case["source"] == f.case["source"]]  # fmt: skip


# ---------------------------------------------------------------------------- report


def _compiled(report: dict) -> str:
    if not report["arch"]:
        return ""
    seconds = sum(c["seconds"] for c in report["compiles"])
    return f"compiled on load for `{report['arch']}` ({len(report['compiles'])} nvcc runs, {seconds:.1f} s); "


def markdown(report: dict) -> str:
    lines = [
        f"# lutc whole-model check on {report['device']}",
        "",
        f"Bundle target `{report['target']}`; {_compiled(report)}TVM from `{report['tvm_path']}`.",
        "",
    ]
    if report["correctness"]:
        lines += ["| case | feed | output | max err / max ref | cosine | bound | ok |", "|---|---|---|---|---|---|---|"]
    else:
        lines += ["Nothing was run (`--load-only`)." if report["load_only"] else "No output was checked."]
    tolerance = {c["name"]: c["tolerance"] for c in report["cases"]}
    for r in report["correctness"]:
        bound = tolerance[r["case"]]
        if "max_rel" in r:
            verdict = "yes" if r["ok"] else "NO"
            lines.append(f"| {r['case']} | {r['feed']} | {r['output']} | {r['max_rel']:.2e} | {r['cosine']:.6f} | "
                         f"{bound['max_rel']:g} / {bound['min_cosine']:g} | {verdict} |")  # fmt: skip
        else:
            lines.append(f"| {r['case']} | {r['feed']} | {r['output']} | {r['why']} | | | NO |")
    if report["timing"]:
        lines += ["", f"Fused vs `fuse=False` (µs per call, min / median of {report['reps']}, alternating):", "",
                  "| model | feed | fused | unfused | unfused / fused (median) |", "|---|---|---|---|---|"]  # fmt: skip
        for r in report["timing"]:
            f, u = r["fused"], r["unfused"]
            lines.append(f"| {r['source']} | {r['feed']} | {f['min_us']:.0f} / {f['median_us']:.0f} | "
                         f"{u['min_us']:.0f} / {u['median_us']:.0f} | {r['speedup_median']:.2f}x |")  # fmt: skip
    lines += [f"- {e}" for e in report["errors"]]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, help="a directory written by make_model_bundle.py")
    parser.add_argument("--out", type=Path, default=None, help="write results.json here (and results.md beside it)")
    parser.add_argument(
        "--reps", type=int, default=DEFAULT_REPS, help=f"timed calls per build and feed (default {DEFAULT_REPS})"
    )
    parser.add_argument("--load-only", action="store_true", help="load and compile the libraries, run nothing")
    parser.add_argument("--site-dir", type=Path, default=None, help="unpack site.tar.xz here (default: a new temp dir)")
    return parser.parse_args(argv)


def read_manifest(bundle: Path) -> dict:
    path = bundle / "manifest.json"
    if not path.is_file():
        raise BundleError(f"{path} is missing: not a make_model_bundle.py bundle")
    manifest = json.loads(path.read_text())
    if manifest.get("version") != MANIFEST_VERSION:
        raise BundleError(f"{path}: manifest version {manifest.get('version')}, this runner reads {MANIFEST_VERSION}")
    return manifest


def prepare(args: argparse.Namespace, manifest: dict, compiles: list[dict]):
    """(tvm, device, arch, device name): the runtime imported, CUDA loaded and nvcc registered."""
    site = unpack_site(args.bundle, manifest, args.site_dir)
    tvm = import_runtime_tvm(site)
    if manifest["device"] == "cpu":
        return tvm, tvm.cpu(0), "", "CPU (a CPU bundle)"
    load_cuda_runtime(tvm, site)
    arch, name = gpu_arch(tvm, manifest["arch"])
    if not name and not args.load_only:
        raise BundleError("no CUDA GPU is visible (tvm.cuda(0).exist is False)")
    register_nvcc_compile(find_nvcc(), arch, compiles)
    return tvm, tvm.cuda(0), arch, name or "no GPU (load only)"


def run(args: argparse.Namespace) -> dict:
    manifest, compiles, errors = read_manifest(args.bundle), [], []
    tvm, device, arch, name = prepare(args, manifest, compiles)
    print(f"{name}: {len(manifest['cases'])} cases from {args.bundle}", flush=True)
    loaded, correctness = {}, []
    for case in manifest["cases"]:
        try:
            loaded[case["name"]] = item = LoadedCase(tvm, args.bundle, case, device, args.load_only)
            if not args.load_only:
                correctness += check_case(item)
            print(f"  {case['name']}: loaded in {item.load_seconds:.1f} s, weights "
                  f"{item.weight_bytes / 2**20:.1f} MiB", flush=True)  # fmt: skip
        except Exception as err:  # one case's failure (nvcc, a launch) is reported, the others still run
            errors.append(f"{case['name']}: {type(err).__name__}: {str(err).strip()[:2000]}")
            print(f"  {case['name']}: FAILED: {errors[-1]}", flush=True)
    timing = [] if args.load_only else [r for f, u in timing_pairs(loaded) for r in time_pair(f, u, args.reps)]
    return {"device": name, "target": manifest["target"], "arch": arch, "reps": args.reps, "cases": manifest["cases"],
            "tvm_path": str(Path(tvm.__file__).parent), "load_only": args.load_only,
            "compiles": compiles, "load_seconds": {k: v.load_seconds for k, v in loaded.items()},
            "weight_bytes": {k: v.weight_bytes for k, v in loaded.items()},
            "correctness": correctness, "timing": timing, "errors": errors}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except BundleError as err:
        print(f"check_model: {err}", file=sys.stderr)
        return 2
    text = markdown(report)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(text)
    failed = report["errors"] or not all(r["ok"] for r in report["correctness"])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
