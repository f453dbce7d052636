"""Reach the emulated aarch64 device (``tools/arm_device.py``) from the tests.

``.ci/run`` starts it and exports ``LUTC_RPC_TRACKER`` (``HOST:PORT``) and ``LUTC_RPC_KEY``. A
test that needs it skips without it, naming how to start it; in CI (``CI`` set) it fails
instead, so a device that does not start can never pass as skipped tests.
"""

from __future__ import annotations

import os

import pytest

from lutc.remote import DeviceError, RpcTracker

START = "python3 tools/arm_device.py start --python .venv/bin/python, then export the two LUTC_RPC_* lines it prints"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def device_tracker() -> RpcTracker | None:
    """The device's tracker and key from the environment, or ``None``."""
    address, key = os.environ.get("LUTC_RPC_TRACKER", ""), os.environ.get("LUTC_RPC_KEY", "")
    return RpcTracker.parse(address, key) if address and key else None


def _unavailable(reason: str):
    if in_ci():
        pytest.fail(f"the emulated aarch64 device did not start in CI: {reason}")
    pytest.skip(f"no emulated aarch64 device ({reason}); start it with: {START}")


def request_device() -> tuple[object, RpcTracker]:
    """A session on the device and its tracker; skips (fails in CI) when there is none."""
    tracker = device_tracker()
    if tracker is None:
        _unavailable("LUTC_RPC_TRACKER / LUTC_RPC_KEY are not set")
    try:
        return tracker.connect(), tracker
    except DeviceError as err:
        _unavailable(str(err))
