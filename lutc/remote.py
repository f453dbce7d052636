"""Devices behind TVM RPC: reach one through a tracker, upload a compiled module, run it there.

A model or kernel built here for another machine (``target="arm"`` on an x86 host) is linked
with the target's cross compiler, uploaded to a TVM RPC server on that machine (an aarch64 board,
or the emulated device of ``tools/arm_device.py``) and called through the session:

>>> device = lutc.remote.RpcTracker.parse("127.0.0.1:9190", "aarch64-qemu")   # doctest: +SKIP
>>> model = lutc.build("model.onnx", target="arm").on(device.connect())       # doctest: +SKIP
>>> y = model(x)   # runs on the device; numpy in, numpy out                  # doctest: +SKIP

The server needs only TVM's runtime (``TVM_USE_RUNTIME_LIB=1``) and numpy: it gets a linked
shared library, never source to compile.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass

import tvm
from tvm import rpc
from tvm.target import Target

from .errors import LutcError
from .targets import cross_compiler, target_arch

DEFAULT_SESSION_TIMEOUT = 600
"""Seconds a session may last: the emulated device runs kernels 20-100x slower than hardware."""


class DeviceError(LutcError, ConnectionError):
    """An RPC device cannot be reached, or refused what was sent to it."""


@dataclass(frozen=True)
class RpcTracker:
    """A TVM RPC tracker and the device key to request from it."""

    host: str
    port: int
    key: str

    @staticmethod
    def parse(address: str, key: str) -> RpcTracker:
        """``HOST:PORT`` and a key, checked."""
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"RPC tracker must be HOST:PORT; got {address!r}")
        if not key:
            raise ValueError("an RPC tracker needs a device key (--rpc-key)")
        return RpcTracker(host, int(port), key)

    def __str__(self) -> str:
        return f"{self.key}@{self.host}:{self.port}"

    def connect(self, session_timeout: int = DEFAULT_SESSION_TIMEOUT) -> rpc.RPCSession:
        """A session on a free device of this key (waits while all are busy)."""
        try:
            tracker = rpc.connect_tracker(self.host, self.port)
            return tracker.request(self.key, session_timeout=session_timeout)
        except Exception as err:
            reason = (str(err).strip().splitlines() or [""])[-1]
            where = f"the RPC tracker at {self.host}:{self.port}"
            raise DeviceError(f"no device {self.key!r} from {where}: {reason}") from None


def linker(target: Target):
    """``fcompile`` for ``export_library``: the target's cross compiler, checked to exist."""
    compiler = cross_compiler(target)
    if compiler is None:
        return None
    if shutil.which(compiler) is None:
        raise LutcError(f"a module built for {target_arch(target)} links with {compiler}, which is not installed "
                        f"(Debian: apt-get install gcc-{compiler.removesuffix('-gcc')})")  # fmt: skip
    from tvm.support import cc

    return cc.cross_compiler(compiler)


def upload(session: rpc.RPCSession, module, target: Target, name: str = "lutc_module.so"):
    """Link ``module`` (a runtime module or a Relax executable) for ``target``, upload it, load it there.

    Each upload gets a name of its own: overwriting a library the device still has loaded
    crashes its server."""
    with tempfile.TemporaryDirectory(prefix="lutc-upload-") as folder:
        stem, suffix = os.path.splitext(name)
        path = os.path.join(folder, f"{stem}-{uuid.uuid4().hex[:12]}{suffix}")
        module.export_library(path, fcompile=linker(target))
        return upload_file(session, path)


def upload_file(session: rpc.RPCSession, path: str | os.PathLike):
    """Upload a linked shared library and load it on the device (its name there: the file's)."""
    name = os.path.basename(path)
    try:
        session.upload(str(path))
        return session.load_module(name)
    except Exception as err:
        reason = (str(err).strip().splitlines() or [""])[-1]
        raise DeviceError(f"the device refused {name}: {reason}") from None


def is_local(device: tvm.runtime.Device) -> bool:
    """Whether ``device`` is this process's CPU (not a device of an RPC session)."""
    return device.dlpack_device_type() == tvm.cpu().dlpack_device_type()


__all__ = ["DeviceError", "RpcTracker", "is_local", "linker", "upload", "upload_file"]
