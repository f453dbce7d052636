#!/usr/bin/env python3
"""Write a whole-model GPU check bundle: lutc models built for CUDA, ORT's CPU outputs, and a
runtime-only TVM to run them where TVM is not installed.

    .venv/bin/python tools/gpu_check/make_model_bundle.py OUT_DIR [--arch sm_90] [--quick]
    .venv/bin/python tools/gpu_check/make_model_bundle.py OUT_DIR --target x86 --python 3.11   # a CPU bundle (tests)

Contents of ``OUT_DIR``:

- ``models/<case>.so``, ``.so.lutc.json`` and ``.so.weights``: each case as
  ``CompiledModel.export_library`` writes it: the library (code only), its sidecar (format 2:
  inputs, outputs, the weights ``main`` takes with their digests) and its weight file
  (``lutc.weight_file``), which ``check_model.py`` reads, checks and passes to ``main`` as one
  tuple after the inputs. A CUDA export holds the kernels' CUDA C; TVM's runtime compiles it
  when the library loads, through the ``tvm_callback_cuda_compile`` that ``check_model.py``
  registers (nvcc).
- ``arrays/<case>.npz``: for every feed, the inputs (``<feed>/in/<name>``) and ONNX Runtime's CPU
  outputs (``<feed>/ref/<index>``; MatMulNBits at ``accuracy_level`` 0, basic graph optimizations,
  as ``tests/test_corpus.py`` does).
- ``site.tar.xz`` (9 MiB), a runtime-only TVM: ``tvm/``, TVM's Python package
  without its 259 MB compiler library, cutlass headers and sources; ``ffi-cp3XX/tvm_ffi``:
  ``apache-tvm-ffi`` for each Python version (the wheel is CPython-specific; the other versions'
  are downloaded from PyPI); ``cuda/``: this machine's ``libcudart.so.13`` (TVM's CUDA runtime
  library links it), used only when the GPU machine has none.
- ``manifest.json``: the cases, their inputs and outputs in call order, feeds and tolerances.

Cases: two exporter-made corpus models (builder int4 decode, fast and exact; TorchScript 2-bit
prefill), each at the corpus's two input sizes, and a Llama-style decoder block (``lutc.zoo``,
hidden 768, 2-bit g128). Two pairs are also built with ``fuse=False`` and timed against it: the
builder model, where both norm folding (its ``SkipSimplifiedLayerNormalization`` nodes) and
table sharing apply, and the block, whose RMSNorm is spelled out in plain ONNX ops and not
folded, so only table sharing differs there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

import lutc
from lutc import zoo
from lutc.bench.feeds import load_manifest, manifest_feeds
from lutc.bench.model import ort_session, with_accuracy_level
from lutc.library import read_sidecar

ROOT = Path(__file__).resolve().parents[2]
CORPUS_DIR = ROOT / "tests" / "corpus"

MANIFEST_VERSION = 2
"""2: weights in a weight file beside each library (sidecar format 2), passed to ``main`` as one tuple."""
FFI_VERSION = "0.1.14.post0"
DEFAULT_PYTHONS = ("3.12", "3.10", "3.11", "3.13")
"""The GPU machine's Python (3.12.3 in the device notes) and the others TVM 0.27 supports, in
case it changes: 0.3 MiB of archive each."""
SITE_ARCHIVE = "site.tar.xz"
CUDART = Path("/usr/local/cuda/lib64/libcudart.so.13")
TVM_LEFT_OUT = ("lib/libtvm_compiler.so", "3rdparty", "src", "__pycache__")
FFI_LEFT_OUT = ("include", "3rdparty", "src", "share", "__pycache__")
TOLERANCE = {"fast": {"max_rel": 6e-2, "min_cosine": 0.999}, "exact": {"max_rel": 5e-5, "min_cosine": 0.99999}}
"""``tests/test_corpus.py``'s bounds (see its docstring): error relative to the largest reference
value, and cosine; exact mode's cosine floor is implied by its error bound (test_corpus checks
only the error there)."""
BLOCK = {"hidden": 768, "heads": 12, "intermediate": 2048, "bits": 2, "block_size": 128}
"""4 MiB a build (library and weight file): a run carries the working tree too (23 MiB) and the
kernel bundle (14 MiB), 64 MiB in all."""
QUICK_BLOCK = {"hidden": 256, "heads": 4, "intermediate": 512, "bits": 2, "block_size": 128}
BLOCK_FEEDS = {"decode": (1, 1), "prefill": (1, 16)}


@dataclass(frozen=True)
class Case:
    """One library of the bundle: a model, a build, the feeds it runs and checks."""

    name: str
    source: str
    mode: str
    fuse: bool
    timing: bool
    """Timed on the GPU; a fused timing case is timed against its ``fuse=False`` twin."""


@dataclass(frozen=True)
class ModelSpec:
    case: Case
    model: Callable[[], onnx.ModelProto]
    feeds: Callable[[onnx.ModelProto], dict[str, dict[str, np.ndarray]]]


def _corpus_spec(file: str, name: str, mode: str, fuse: bool = True, timing: bool = False) -> ModelSpec:
    entry = next(e for e in load_manifest(CORPUS_DIR / "manifest.json") if e["file"] == file)

    def feeds(_model: onnx.ModelProto) -> dict[str, dict[str, np.ndarray]]:
        return {"primary": manifest_feeds(entry), "alt": manifest_feeds(entry, alt=True)}

    case = Case(name, f"tests/corpus/{file}", mode, fuse=fuse, timing=timing)
    return ModelSpec(case, lambda: onnx.load(str(CORPUS_DIR / file)), feeds)


def _block_specs(shape: dict) -> list[ModelSpec]:
    def model() -> onnx.ModelProto:
        block = zoo.float_decoder_block(shape["hidden"], shape["heads"], shape["intermediate"])
        return zoo.quantize_matmuls(block, shape["bits"], shape["block_size"])

    def feeds(m: onnx.ModelProto) -> dict[str, dict[str, np.ndarray]]:
        return {label: zoo.decoder_inputs(m, *bs) for label, bs in BLOCK_FEEDS.items()}

    source = "lutc.zoo decoder block " + ", ".join(f"{k} {v}" for k, v in shape.items())
    return [ModelSpec(Case(f"block-{'fused' if fuse else 'unfused'}", source, "fast", fuse, True), model, feeds)
            for fuse in (True, False)]  # fmt: skip


def model_specs(quick: bool) -> list[ModelSpec]:
    if quick:
        return [_corpus_spec("llama_genai_int4.onnx", "genai-int4-fast", "fast"), *_block_specs(QUICK_BLOCK)]
    return [
        _corpus_spec("llama_genai_int4.onnx", "genai-int4-fast", "fast", timing=True),
        _corpus_spec("llama_genai_int4.onnx", "genai-int4-unfused", "fast", fuse=False, timing=True),
        _corpus_spec("llama_genai_int4.onnx", "genai-int4-exact", "exact"),
        _corpus_spec("llama_ts_prefill_q2b32s.onnx", "torchscript-2bit-fast", "fast"),
        *_block_specs(BLOCK),
    ]


def ort_reference(model: onnx.ModelProto):
    """The reference session: MatMulNBits at ``accuracy_level`` 0, basic graph optimizations."""
    return ort_session(with_accuracy_level(model, 0), threads=2, basic=True)


def write_case(spec: ModelSpec, target: str, out: Path) -> dict:
    """Build, export and record one case; returns its manifest entry."""
    case, started = spec.case, time.perf_counter()
    model = spec.model()
    compiled = lutc.build(model, target=target, mode=case.mode, fuse=case.fuse)
    library = compiled.export_library(out / "models" / f"{case.name}.so")
    weights = library.parent / read_sidecar(library)["weights"]["file"]
    if not weights.is_file():
        raise SystemExit(f"{case.name}: export_library wrote no weight file {weights}")
    arrays, feeds, session = {}, spec.feeds(model), ort_reference(model)
    for label, feed in feeds.items():
        arrays |= {f"{label}/in/{name}": value for name, value in feed.items()}
        arrays |= {f"{label}/ref/{i}": ref for i, ref in enumerate(session.run(None, feed))}
    np.savez_compressed(out / "arrays" / f"{case.name}.npz", **arrays)
    lut = sum(1 for how in compiled.decisions.values() if how.startswith("lut"))
    print(f"  {case.name}: {lut} LUT matmuls, library {library.stat().st_size / 2**20:.1f} MiB, "
          f"weights {weights.stat().st_size / 2**20:.1f} MiB, {time.perf_counter() - started:.0f} s",
          flush=True)  # fmt: skip
    return {
        **asdict(case),
        "library": f"models/{library.name}",
        "weights": f"models/{weights.name}",
        "arrays": f"arrays/{case.name}.npz",
        "inputs": [i.name for i in compiled.inputs],
        "outputs": [o.name for o in compiled.outputs],
        "feeds": list(feeds),
        "lut_matmuls": lut,
        "tolerance": TOLERANCE[case.mode],
    }


def _copy_tree(src: Path, dst: Path, left_out: tuple[str, ...]) -> None:
    def ignore(directory: str, names: list[str]) -> set[str]:
        rel = Path(directory).relative_to(src)
        return {n for n in names if n in left_out or str(rel / n) in left_out}

    shutil.copytree(src, dst, ignore=ignore)


def _ffi_wheel(python: str, cache: Path) -> Path:
    """The ``apache-tvm-ffi`` wheel for CPython ``python``, downloaded into ``cache`` once."""
    tag = "cp" + python.replace(".", "")
    found = sorted(cache.glob(f"apache_tvm_ffi-{FFI_VERSION}-{tag}-*.whl"))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", f"apache-tvm-ffi=={FFI_VERSION}",
                        "--python-version", python, "--only-binary=:all:", "--no-deps", "-d", str(cache)],
                       check=True)  # fmt: skip
        found = sorted(cache.glob(f"apache_tvm_ffi-{FFI_VERSION}-{tag}-*.whl"))
    if not found:
        raise SystemExit(f"no apache-tvm-ffi {FFI_VERSION} wheel for Python {python} in {cache}")
    return found[0]


def write_site(out: Path, pythons: tuple[str, ...], cache: Path) -> dict:
    """``site.tar.xz``: the runtime-only TVM (``tvm``, ``ffi-cpXY/tvm_ffi`` per Python, ``cuda``)."""
    with tempfile.TemporaryDirectory() as tmp:
        info = _fill_site(Path(tmp) / "site", pythons, cache)
        with tarfile.open(out / SITE_ARCHIVE, "w:xz") as archive:
            archive.add(Path(tmp) / "site", arcname=".")
    return info


def _fill_site(site: Path, pythons: tuple[str, ...], cache: Path) -> dict:
    import tvm
    import tvm_ffi

    _copy_tree(Path(tvm.__file__).parent, site / "tvm", TVM_LEFT_OUT)
    local = f"{sys.version_info.major}.{sys.version_info.minor}"
    for python in pythons:
        dest = site / f"ffi-cp{python.replace('.', '')}"
        if python == local:
            _copy_tree(Path(tvm_ffi.__file__).parent, dest / "tvm_ffi", FFI_LEFT_OUT)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            zipfile.ZipFile(_ffi_wheel(python, cache)).extractall(tmp)
            _copy_tree(Path(tmp) / "tvm_ffi", dest / "tvm_ffi", FFI_LEFT_OUT)
    if CUDART.is_file():
        (site / "cuda").mkdir()
        shutil.copy2(CUDART.resolve(), site / "cuda" / CUDART.name)
    return {"archive": SITE_ARCHIVE, "pythons": list(pythons), "cudart": CUDART.name if CUDART.is_file() else None}


CARRY_LIMIT = 64 * 2**20
"""What a device ``run`` sends: the working tree (tracked and untracked, not ignored) plus ``carry``."""
KERNEL_BUNDLE = ROOT / "build" / "gpu_bundle"


def bundle_bytes(out: Path) -> int:
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def working_tree_bytes() -> int:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout  # fmt: skip
    files = (ROOT / name for name in listed.decode().split("\0") if name)
    return sum(f.stat().st_size for f in files if f.is_file())


def carry_line(out: Path) -> str:
    """What a run carrying this bundle (and ``build/gpu_bundle`` when it exists) sends, against the limit."""
    parts = {"working tree": working_tree_bytes(), str(out): bundle_bytes(out)}
    if KERNEL_BUNDLE.is_dir() and KERNEL_BUNDLE.resolve() != out.resolve():
        parts[str(KERNEL_BUNDLE.relative_to(ROOT))] = bundle_bytes(KERNEL_BUNDLE)
    total = sum(parts.values())
    verdict = "fits" if total <= CARRY_LIMIT else "DOES NOT FIT"
    sizes = " + ".join(f"{name} {size / 2**20:.1f}" for name, size in parts.items())
    return f"a device run carrying it sends {sizes} = {total / 2**20:.1f} MiB: {verdict} in 64 MiB"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the bundle directory (replaced if it exists)")
    parser.add_argument("--arch", default="sm_90", help="CUDA arch of the GPU machine (default sm_90, the H200)")
    parser.add_argument("--target", default=None, help="build for this lutc target instead of cuda-<arch> "
                        "(x86: a bundle check_model.py runs on this machine's CPU, for tests)")  # fmt: skip
    parser.add_argument("--python", action="append", default=None, metavar="X.Y",
                        help=f"the GPU machine's Python version(s) (default {', '.join(DEFAULT_PYTHONS)})")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="one corpus model and a hidden-256 block (tests)")
    parser.add_argument("--wheel-cache", type=Path, default=ROOT / "build" / "wheels",
                        help="where downloaded tvm-ffi wheels are kept (default build/wheels)")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    target = args.target or "cuda-" + args.arch.replace("_", "")
    if args.out.exists():
        shutil.rmtree(args.out)
    for sub in ("models", "arrays"):
        (args.out / sub).mkdir(parents=True)
    started = time.perf_counter()
    print(f"building for {target}:", flush=True)
    cases = [write_case(spec, target, args.out) for spec in model_specs(args.quick)]
    site = write_site(args.out, tuple(args.python or DEFAULT_PYTHONS), args.wheel_cache)
    manifest = {"version": MANIFEST_VERSION, "target": target, "device": "cpu" if args.target else "cuda",
                "arch": args.arch, "lutc_version": lutc.__version__, "site": site, "cases": cases}  # fmt: skip
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    size = bundle_bytes(args.out)
    print(f"wrote {args.out}: {len(cases)} cases, {size / 2**20:.1f} MiB, {time.perf_counter() - started:.0f} s")
    print(carry_line(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
