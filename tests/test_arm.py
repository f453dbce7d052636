"""ARM NEON kernels and models, built here for AArch64 and run on the emulated aarch64 device
(``tools/arm_device.py``, over TVM RPC) against the numpy reference and ONNX Runtime.

Tolerances are those of the x86 kernel tests (:func:`test_kernels._check`): the bound of the
mode's arithmetic, then the numpy reference of the mode up to float32 rounding of the epilogue.
qemu runs the real AArch64 instructions (``tbl``, ``saddl``, ...), so results are the device's;
its timings mean nothing. Without the device these tests skip (and fail in CI, where
``.ci/run`` starts it).
"""

from __future__ import annotations

import gc
import subprocess

import numpy as np
import pytest
from arm_device import request_device
from conftest import random_weights
from corpus.feeds import load_manifest, make_feeds
from test_corpus import _check as check_against_ort
from test_kernels import FORMATS, _check

import lutc
from lutc.gemm import build_lut_gemm
from lutc.kernels import KernelSpec
from lutc.quant import IntFormat, TernaryFormat, pack, quantize
from lutc.remote import RpcTracker

pytestmark = pytest.mark.slow

ARM = "arm"
CPU_TARGETS = ["arm", "arm-cortex-a76", "arm-neoverse-v1"]


@pytest.fixture(scope="module")
def device():
    """A session on the emulated device and the tracker that lent it (skips, or fails in CI, without).
    Released at the module's end: the device's one server serves one session at a time, and a
    session lives until its last reference, cycles included, is collected."""
    found = request_device()
    yield found
    del found
    gc.collect()


def _run_on(device, spec: KernelSpec, target: str = ARM, rows: int | None = None, seed: int = 0):
    session, _ = device
    rng = np.random.default_rng(seed)
    qw = quantize(random_weights(rng, spec.n, spec.k), spec.fmt)
    pw = pack(qw)
    x = rng.standard_normal((rows or spec.m, spec.k)).astype(np.float32)
    bias = rng.standard_normal(spec.n).astype(np.float32) if spec.bias else None
    gemm = build_lut_gemm(spec, target).on(session)
    return gemm(x, gemm.prepare(pw, bias)), x, qw, pw, bias


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_every_format_and_mode_matches_the_reference_on_the_device(device, fmt, mode):
    spec = KernelSpec(3, 72, 256, fmt, mode=mode, bias=True)
    _check(spec, *_run_on(device, spec))


@pytest.mark.parametrize("half_tables", [False, True])
@pytest.mark.parametrize("mode", ["fast", "exact"])
@pytest.mark.parametrize("m", [1, 16])
def test_symmetrization_and_batch_sizes_on_the_device(device, half_tables, mode, m):
    spec = KernelSpec(m, 40, 512, IntFormat(2, 64, symmetric=False), mode=mode, half_tables=half_tables)
    _check(spec, *_run_on(device, spec))


@pytest.mark.parametrize("rows", [1, 5])
@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_dynamic_row_count_kernels_on_the_device(device, rows, mode):
    spec = KernelSpec(None, 64, 256, IntFormat(4, 32, symmetric=False), mode=mode)
    y, x, qw, pw, bias = _run_on(device, spec, rows=rows)
    _check(KernelSpec(rows, 64, 256, spec.fmt, mode=mode), y, x, qw, pw, bias)


@pytest.mark.parametrize("target", CPU_TARGETS)
def test_named_arm_cpus_run_their_kernels(device, target):
    spec = KernelSpec(2, 96, 128, IntFormat(2, 32), mode="fast", bias=True)
    _check(spec, *_run_on(device, spec, target))


def test_ternary_groups_of_32_on_the_device(device):
    spec = KernelSpec(2, 96, 128, TernaryFormat(32), mode="fast", bias=True)
    _check(spec, *_run_on(device, spec))


def test_a_corpus_model_matches_onnx_runtime_on_the_device(device):
    session, _ = device
    [entry] = [e for e in load_manifest() if e["file"] == "llama_ts_prefill_q2b32s.onnx"]
    from corpus.feeds import CORPUS_DIR

    for mode in ("exact", "fast"):
        model = lutc.build(CORPUS_DIR / entry["file"], target=ARM, mode=mode)
        assert any(d.startswith("lut") for d in model.decisions.values())
        check_against_ort(entry, model.on(session), make_feeds(entry), mode)


def test_an_exported_arm_library_runs_on_the_device(device, tmp_path):
    """``export_library`` links with aarch64-linux-gnu-gcc; the device loads the file as it is."""
    from tvm import relax

    from lutc import zoo

    session, _ = device
    model = lutc.build(zoo.single_matmul_nbits(64, 32, 2, 32), target=ARM, mode="exact")
    path = model.export_library(tmp_path / "arm.so")
    assert subprocess.run(["file", path], capture_output=True, text=True).stdout.count("aarch64") >= 1
    session.upload(str(path))
    vm = relax.VirtualMachine(session.load_module("arm.so"), session.cpu())
    x = np.random.default_rng(1).standard_normal((1, 3, 64)).astype(np.float32)
    local = lutc.build(zoo.single_matmul_nbits(64, 32, 2, 32), target="llvm", mode="exact")
    import tvm

    weights = [tvm.runtime.tensor(t.numpy(), session.cpu()) for t in model.weights.values()]
    y = vm["main"](tvm.runtime.tensor(x, session.cpu()), *weights).numpy()
    np.testing.assert_allclose(y, local(A=x), rtol=1e-5, atol=1e-5)


def test_rpc_tracker_is_a_device_address(device):
    _, tracker = device
    assert isinstance(tracker, RpcTracker) and tracker.key
