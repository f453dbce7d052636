"""The whole-model GPU check (``tools/gpu_check/make_model_bundle.py``, ``check_model.py``) here.

No GPU here, so its two halves are checked apart:
- a CPU bundle runs end to end through the bundle's runtime-only TVM (not the installed one):
  every output within the corpus bounds of ONNX Runtime's, with each library's weights read from
  its weight file and passed to ``main``; the fused/unfused timing rows; a wrong reference fails
  the run, and so does a damaged weight file, naming it;
- a CUDA bundle loads against a stub ``libcuda`` (every driver call fails): TVM's CUDA runtime
  library loads, each library's CUDA C goes through the registered nvcc callback into a fatbin,
  and a run without ``--load-only`` stops with a clear "no GPU" error.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools" / "gpu_check"
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
STUB_LIBCUDA = """
/* libcuda.so.1 without a GPU: every driver call returns CUDA_ERROR_NO_DEVICE (100). */
#define STUB(name) int name(void) { return 100; }
STUB(cuInit) STUB(cuDriverGetVersion) STUB(cuGetProcAddress) STUB(cuGetProcAddress_v2)
STUB(cuDeviceGetName) STUB(cuFuncSetAttribute) STUB(cuLaunchKernelEx) STUB(cuModuleGetFunction)
STUB(cuModuleLoadData) STUB(cuModuleUnload) STUB(cuTensorMapEncodeTiled)
int cuGetErrorName(int e, const char **s) { *s = "CUDA_ERROR_NO_DEVICE"; return 0; }
int cuGetErrorString(int e, const char **s) { *s = "no CUDA-capable device (stub)"; return 0; }
"""

pytestmark = pytest.mark.slow


def _make(out: Path, *flags: str) -> dict:
    subprocess.run([sys.executable, str(TOOLS / "make_model_bundle.py"), str(out), "--quick", "--python", PYTHON,
                    *flags], check=True, capture_output=True)  # fmt: skip
    return json.loads((out / "manifest.json").read_text())


def _check(bundle: Path, *flags: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict | None]:
    results = bundle.parent / f"{bundle.name}-results.json"
    results.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, str(TOOLS / "check_model.py"), str(bundle), "--out", str(results), *flags],
                          capture_output=True, text=True, env=env)  # fmt: skip
    return done, json.loads(results.read_text()) if results.is_file() else None


@pytest.fixture(scope="module")
def cpu_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model_bundle") / "cpu"
    _make(out, "--target", "x86")
    return out


def test_cpu_bundle_runs_on_the_runtime_only_tvm_and_matches_ort(cpu_bundle):
    done, report = _check(cpu_bundle, "--reps", "5")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not Path(report["tvm_path"]).is_relative_to(ROOT / ".venv")
    manifest = json.loads((cpu_bundle / "manifest.json").read_text())
    expected = sum(len(c["feeds"]) * len(c["outputs"]) for c in manifest["cases"])
    assert len(report["correctness"]) == expected and all(r["ok"] for r in report["correctness"])
    assert {r["feed"] for r in report["timing"]} == {"decode", "prefill"}
    assert all(r["fused"]["median_us"] > 0 and r["unfused"]["median_us"] > 0 for r in report["timing"])
    assert all((cpu_bundle / c["weights"]).is_file() for c in manifest["cases"])
    assert report["weight_bytes"].keys() == {c["name"] for c in manifest["cases"]}
    assert all(size > 0 for size in report["weight_bytes"].values())


def test_a_wrong_reference_fails_the_check(cpu_bundle, tmp_path):
    bundle = tmp_path / "bad"
    shutil.copytree(cpu_bundle, bundle)
    path = bundle / "arrays" / "block-fused.npz"
    arrays = dict(np.load(path))
    arrays["decode/ref/0"] = arrays["decode/ref/0"] * 1.5
    np.savez(path, **arrays)
    done, report = _check(bundle, "--reps", "1")
    assert done.returncode == 1
    bad = [(r["case"], r["feed"]) for r in report["correctness"] if not r["ok"]]
    assert bad == [("block-fused", "decode")]


def test_a_damaged_weight_file_fails_its_case_and_names_the_file(cpu_bundle, tmp_path):
    bundle = tmp_path / "damaged"
    shutil.copytree(cpu_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    path = bundle / next(c["weights"] for c in manifest["cases"] if c["name"] == "block-fused")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the file ends with the last tensor's last byte
    path.write_bytes(bytes(data))
    done, report = _check(bundle, "--reps", "1")
    assert done.returncode == 1
    assert len(report["errors"]) == 1 and report["errors"][0].startswith("block-fused: WeightFileError")
    assert f"{path}: tensor" in report["errors"][0] and "sha1" in report["errors"][0]
    assert str(path) in done.stdout
    assert "block-fused" not in {r["case"] for r in report["correctness"]}
    assert report["correctness"] and all(r["ok"] for r in report["correctness"])


def test_a_bundle_without_this_python_says_which_it_has(cpu_bundle, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    subprocess.run(["tar", "xJf", str(cpu_bundle / "site.tar.xz"), "-C", str(site)], check=True)
    tag = f"cp{PYTHON.replace('.', '')}"
    (site / f"ffi-{tag}").rename(site / "ffi-cp39")
    done, _ = _check(cpu_bundle, "--site-dir", str(site))
    assert done.returncode == 2
    assert f"apache-tvm-ffi for cp39, not this Python ({tag})" in done.stderr


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("nvcc") is None, reason="needs gcc and nvcc")
def test_cuda_bundle_compiles_each_library_through_nvcc_on_load(tmp_path):
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "cuda_stub.c").write_text(STUB_LIBCUDA)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(stub / "libcuda.so.1"), str(stub / "cuda_stub.c")], check=True)
    manifest = _make(tmp_path / "cuda")
    assert manifest["target"] == "cuda-sm90" and manifest["device"] == "cuda"
    env = os.environ | {"LD_LIBRARY_PATH": str(stub)}
    done, report = _check(tmp_path / "cuda", "--load-only", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(report["compiles"]) == len(manifest["cases"]) and report["arch"] == "sm_90"
    assert set(report["load_seconds"]) == {c["name"] for c in manifest["cases"]}
    done, _ = _check(tmp_path / "cuda", env=env)
    assert done.returncode == 2 and "no CUDA GPU is visible" in done.stderr
