"""``lutc tune`` over RPC on the emulated aarch64 device (``tools/arm_device.py``).

A module of its own: the device's one RPC server serves one session at a time, and
``tests/test_arm.py`` holds one for all its tests (torn down when that module ends), which
would leave the tuner waiting for the device.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
from arm_device import request_device

import lutc
from lutc import cli
from lutc.tuning import TuningLog

pytestmark = pytest.mark.slow

ARM = "arm"


@pytest.fixture
def tracker():
    """The device's tracker, with no session held (skips, or fails in CI, without a device)."""
    gc.collect()  # a session test_arm.py left in a reference cycle would hold the device's one server
    session, found = request_device()
    del session  # closes it: the tuner needs the device's server
    gc.collect()
    return found


def test_lutc_tune_over_rpc_writes_a_log_a_later_build_applies(tracker, tmp_path):
    from lutc import zoo

    path = tmp_path / "one.onnx"
    path.write_bytes(zoo.single_matmul_nbits(256, 64, 2, 64).SerializeToString())
    command = ["tune", str(path), "--target", ARM, "--trials", "2", "--log-dir", str(tmp_path / "logs"),
               "--rpc-tracker", f"{tracker.host}:{tracker.port}", "--rpc-key", tracker.key]  # fmt: skip
    assert cli.main(command) == 0
    target = lutc.targets.resolve_target(ARM)
    assert len(TuningLog(tmp_path / "logs", target).read().records) >= 1
    model = lutc.build(path, target=ARM, tuning_logs=tmp_path / "logs")
    assert model.metadata["tuning"]["tuned"], model.summary()
    check = lutc.build(path, target="llvm", mode="fast", half_scales="on")  # as the ARM build, by default
    x = np.random.default_rng(2).standard_normal((1, 2, 256)).astype(np.float32)
    want = check(A=x)  # the same int8 sums; float epilogues differ by rounding (FMA contraction on ARM)
    np.testing.assert_allclose(model.on(tracker.connect())(A=x), want, rtol=0, atol=1e-5 * float(np.abs(want).max()))
