"""The GPU check bundle (``tools/gpu_check``), made and checked without a GPU.

A quick bundle is made, validated by ``check.py --dry-run`` and its sources compiled by nvcc;
the launch extraction is checked on hand-written kernels whose grids and blocks are known;
and the runner is driven end to end by a numpy stand-in for CuPy whose kernels do nothing,
so every correctness case must fail, by name, while the rest of the run completes.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from tvm.script import tirx as T

from lutc.backend.ptxas import ptxas_report
from lutc.bench import gpu_bundle as make_bundle
from lutc.targets import resolve_target

TOOLS = Path(__file__).resolve().parent.parent / "tools" / "gpu_check"
TARGET = resolve_target("cuda-sm90")
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) not on PATH")


def _load(name: str):
    """A standalone script of ``tools/gpu_check`` (``check.py`` runs on a GPU machine without lutc
    or TVM, so it is a file there, not a package module)."""
    spec = importlib.util.spec_from_file_location(f"gpu_check_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle")
    make_bundle.make_bundle(out, "sm_90", quick=True)
    return out


def _check(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(TOOLS / "check.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_dry_run_accepts_the_bundle(bundle):
    done = _check(str(bundle), "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 cases, 0 problems" in done.stdout
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    assert size < 2**20


def test_dry_run_names_a_kernel_missing_from_its_source(bundle, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["cases"][0]["modules"][0]["launches"][0]["kernel"] = "no_such_kernel"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    done = _check(str(broken), "--dry-run")
    assert done.returncode == 1
    assert "kernel no_such_kernel not in sources/" in done.stdout


def test_correctness_arrays_carry_the_kernel_tests_tolerances(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    case = manifest["cases"][0]
    assert case["kind"] == "correctness" and case["mode"] == "fast"
    with np.load(bundle / case["arrays"]) as arrays:
        assert arrays["atol"].shape == () and 0 < float(arrays["atol"]) < np.abs(arrays["expected"]).max()
        assert arrays["allowed"].shape == arrays["reference"].shape == tuple(case["buffers"]["y"]["shape"])
        # fast mode: the table-quantization bound adds to the rounding bound
        assert float(arrays["allowed"].max()) > float(arrays["atol"])
        assert np.all(np.abs(arrays["expected"] - arrays["reference"]) <= arrays["allowed"])


@needs_nvcc
def test_bundled_sources_compile_and_hold_every_launched_kernel(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    case = manifest["cases"][1]  # exact mode, m=16, with offsets
    for module in case["modules"]:
        compiled = ptxas_report((bundle / module["source"]).read_text(), "sm_90")
        assert {launch["kernel"] for launch in module["launches"]} <= set(compiled)


@T.prim_func
def _one_kernel(a: T.Buffer((2, 256), "float32"), b: T.Buffer((2, 256), "float32")):
    for by in T.thread_binding(2, thread="blockIdx.y"):
        for bx in T.thread_binding(4, thread="blockIdx.x"):
            for tx in T.thread_binding(64, thread="threadIdx.x"):
                b[by, bx * 64 + tx] = a[by, bx * 64 + tx] * T.float32(2)


@T.prim_func
def _two_kernels(a: T.Buffer((512,), "float32"), b: T.Buffer((512,), "float32")):
    tmp = T.alloc_buffer((512,), "float32")
    for bx in T.thread_binding(8, thread="blockIdx.x"):
        for tx in T.thread_binding(64, thread="threadIdx.x"):
            tmp[bx * 64 + tx] = a[bx * 64 + tx] + T.float32(1)
    for bx in T.thread_binding(2, thread="blockIdx.x"):
        for tx in T.thread_binding(256, thread="threadIdx.x"):
            b[bx * 256 + tx] = tmp[bx * 256 + tx] * T.float32(3)


def test_launch_extraction_reads_grid_block_and_arguments():
    lowered = make_bundle.lowered_launches(_one_kernel, TARGET)
    (launch,) = lowered.launches
    assert (launch.grid, launch.block, launch.shared_mem) == ((4, 2, 1), (64, 1, 1), 0)
    assert [arg.buffer for arg in launch.args] == ["a", "b"]
    assert [p.name for p in lowered.params] == ["a", "b"] and lowered.scratch == ()


def test_launch_extraction_follows_a_sequence_through_a_scratch_buffer():
    lowered = make_bundle.lowered_launches(_two_kernels, TARGET, prefix="f.")
    first, second = lowered.launches
    assert (first.grid, first.block) == ((8, 1, 1), (64, 1, 1))
    assert (second.grid, second.block) == ((2, 1, 1), (256, 1, 1))
    (scratch,) = lowered.scratch
    assert (scratch.name, scratch.shape, scratch.dtype, scratch.role) == ("f.tmp", (512,), "float32", "scratch")
    assert {arg.buffer for arg in first.args} == {"a", "f.tmp"}
    assert {arg.buffer for arg in second.args} == {"b", "f.tmp"}
    source = make_bundle.cuda_source(_two_kernels, TARGET)
    assert f"void __launch_bounds__(64) {first.kernel}(" in source
    assert f"void __launch_bounds__(256) {second.kernel}(" in source


STUB_CUPY = '''
"""A numpy stand-in for the part of CuPy check.py uses: kernels log their launch, do nothing."""
import json, os, re
import numpy as np

__version__ = "stub"
_CAP = 1 << 20


def asarray(a):
    return np.array(a)


def asnumpy(a):
    return np.asarray(a)


def empty(shape, dtype=np.float32):
    shape = (min(shape, _CAP),) if isinstance(shape, int) else shape
    return np.empty(shape, dtype)


def zeros(shape, dtype=np.float32):
    return np.zeros(shape, dtype)


class RawModule:
    def __init__(self, code, options=(), backend="nvrtc"):
        self.code = code

    def get_function(self, name):
        if not re.search(rf"\\b{name}\\(", self.code):
            raise RuntimeError(f"CUDA_ERROR_NOT_FOUND: named symbol not found: {name}")
        return _Kernel(name)


class _Kernel:
    def __init__(self, name):
        self.name = name

    def __call__(self, grid, block, args, shared_mem=0):
        with open(os.environ["STUB_LOG"], "a") as log:
            log.write(json.dumps([self.name, list(grid), list(block), len(args)]) + "\\n")


class _Runtime:
    @staticmethod
    def deviceSynchronize():
        pass

    @staticmethod
    def getDeviceProperties(i):
        return {"name": b"Stub GPU", "major": 9, "minor": 0, "multiProcessorCount": 2, "totalGlobalMem": 2**30}

    @staticmethod
    def runtimeGetVersion():
        return 13000

    driverGetVersion = runtimeGetVersion


class _Event:
    def record(self):
        pass

    def synchronize(self):
        pass


class cuda:
    runtime = _Runtime
    Event = _Event

    @staticmethod
    def get_elapsed_time(start, end):
        return 0.01
'''


def test_runner_reports_every_case_with_a_gpu_whose_kernels_do_nothing(bundle, tmp_path):
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "cupy.py").write_text(textwrap.dedent(STUB_CUPY))
    log, out = tmp_path / "launches.jsonl", tmp_path / "results.json"
    env = {"PYTHONPATH": str(stub), "STUB_LOG": str(log), "PATH": "/usr/bin:/bin"}
    done = _check(str(bundle), "--out", str(out), "--reps", "3", "--time-limit", "60", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    jobs = json.loads(out.read_text())["jobs"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    correctness, timing = (c for c in manifest["cases"] if c["kind"] == "correctness"), manifest["cases"][-1]
    for case in correctness:
        result = jobs[f"case:{case['name']}"]
        assert result["passed"] is False and "non-finite" in result["reason"], result
    assert jobs[f"case:{timing['name']}"]["total_hot"]["median_us"] == pytest.approx(10.0)
    assert "error" in jobs["cublas:1,4096,4096"]  # no torch here
    first = manifest["cases"][0]
    expected = [
        [la["kernel"], la["grid"], la["block"], len(la["args"])] for m in first["modules"] for la in m["launches"]
    ]
    logged = [rec for rec in map(json.loads, log.read_text().splitlines()) if rec[0] != "read_bw"]
    assert logged[: 2 * len(expected)] == expected * 2  # the check runs each case twice
    table = out.with_suffix(".md").read_text()
    assert f"| {first['name']} | FAIL" in table and timing["name"] in table


def test_sweep_table_ranks_knob_sets_against_the_default():
    check = _load("check")
    knob_sets = {"d": {}, "a": {"tiles": 1, "k_split": 4}, "b": {"tiles": 8, "k_split": 1}}
    cases = [{"name": name, "kind": "timing", "m": 1, "n": 4096, "k": 4096, "format": "w2g32", "knobs": knobs}
             for name, knobs in knob_sets.items()]  # fmt: skip
    cases.append({"name": "alone", "kind": "timing", "m": 16, "n": 4096, "k": 4096, "format": "w2g32", "knobs": {}})
    medians = {"d": 20.0, "a": 10.0, "b": 40.0, "alone": 5.0}
    results = {f"case:{n}": {"matmul_cold": {"median_us": us}, "gbs_cold": 4e3 / us} for n, us in medians.items()}
    rows = check.sweep_table(check.Bundle(Path("."), {"cases": cases}), results)
    assert [row.split("|")[2].strip() for row in rows[2:]] == ["k_split 4, tiles 1", "default", "k_split 1, tiles 8"]
    assert [row.split("|")[5].strip() for row in rows[2:]] == ["2.00", "1.00", "0.50"]
    assert not any("16, 4096" in row for row in rows)  # a shape timed with one knob set has no sweep
