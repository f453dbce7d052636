#!/usr/bin/env python3
"""An emulated aarch64 device for lutc's ARM tests: a Debian arm64 root file system run by
qemu-user through binfmt_misc, with TVM's runtime and an RPC server registered with a tracker.

    python3 tools/arm_device.py start --python .venv/bin/python   # build (once) and start
    export LUTC_RPC_TRACKER=127.0.0.1:9190 LUTC_RPC_KEY=aarch64-qemu
    python3 tools/arm_device.py check                              # a NEON kernel end to end
    python3 tools/arm_device.py stop

The root file system (about 750 MB, 8-10 minutes the first time) is cached in
``/var/cache/lutc/arm-device`` (``LUTC_ARM_DEVICE_DIR``) and reused while its recipe is
unchanged. The device runs TVM in runtime-only mode (``TVM_USE_RUNTIME_LIB=1``): it loads
linked shared libraries built and cross-linked on this machine, and compiles nothing.
Emulated timings mean nothing: the device is for correctness. Needs root (chroot, mount).
Standard library only, so it runs before any virtual environment exists.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPE = "1: bookworm minbase python3; tvm 0.27.0.post1, tvm-ffi 0.1.14.post0, numpy, ml_dtypes, cloudpickle, psutil"
"""Changing this string rebuilds the cached device."""
CACHE = Path(os.environ.get("LUTC_ARM_DEVICE_DIR", "/var/cache/lutc/arm-device"))
MIRROR = "http://deb.debian.org/debian"
PACKAGES = [
    "apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post0", "numpy<2.3", "ml_dtypes", "cloudpickle", "psutil",
]  # fmt: skip
SITE = "/opt/lutc-device/site"
"""Where the device's Python packages live inside the root file system."""
HOST_TOOLS = {"debootstrap": "debootstrap", "qemu-aarch64-static": "qemu-user-static",
              "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu"}  # fmt: skip
BINFMT = Path("/proc/sys/fs/binfmt_misc")
AARCH64_MAGIC = (r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00",
                 r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff")  # fmt: skip
MOUNTS = ("proc", "sys", "dev")
READY_TIMEOUT = 180


def rootfs() -> Path:
    return CACHE / "rootfs"


def step(message: str) -> None:
    print(f"[arm-device {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=True, **kwargs)


def ensure_host_tools() -> None:
    """Install debootstrap, qemu-user-static and the aarch64 cross compiler if missing (Debian)."""
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        step(f"installing {', '.join(missing)}")
        run(["apt-get", "update", "-qq"])
        run(["apt-get", "install", "-y", "-qq", *missing], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def ensure_binfmt() -> None:
    """Let the kernel run aarch64 programs with qemu-aarch64-static (flag F: also inside a chroot)."""
    if not (BINFMT / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)])
    entry = BINFMT / "qemu-aarch64"
    if entry.exists() and "qemu-aarch64-static" not in entry.read_text():
        entry.write_text("-1")  # a wrapper registration (Debian's) that breaks inside the chroot
    if not entry.exists():
        magic, mask = AARCH64_MAGIC
        (BINFMT / "register").write_text(f":qemu-aarch64:M::{magic}:{mask}:{shutil.which('qemu-aarch64-static')}:F")


def build() -> Path:
    """The cached root file system, built (atomically) if absent or of another recipe."""
    stamp = CACHE / "recipe"
    if rootfs().is_dir() and stamp.is_file() and stamp.read_text() == RECIPE:
        return rootfs()
    ensure_host_tools()
    ensure_binfmt()
    stop(quiet=True)
    partial = CACHE / "rootfs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(rootfs(), ignore_errors=True)
    partial.mkdir(parents=True)
    start = time.monotonic()
    step("debootstrap, first stage (downloads)")
    run(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase", "--include=python3", "bookworm",
         str(partial), MIRROR], stdout=subprocess.DEVNULL)  # fmt: skip
    shutil.copy2(shutil.which("qemu-aarch64-static"), partial / "usr/bin/qemu-aarch64-static")
    step("debootstrap, second stage (emulated: most of the time)")
    run(["chroot", str(partial), "/debootstrap/debootstrap", "--second-stage"], stdout=subprocess.DEVNULL)
    step("device Python packages (aarch64 wheels, installed from here)")
    install_wheels(partial / SITE.lstrip("/"))
    stamp.write_text(RECIPE)
    partial.rename(rootfs())
    step(f"built {rootfs()} in {time.monotonic() - start:.0f} s ({disk_usage(rootfs())})")
    return rootfs()


def install_wheels(site: Path) -> None:
    """pip on this machine installs the aarch64 wheels for the device's Python 3.11 into ``site``."""
    platforms = [f"--platform={p}" for p in ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64",
                                             "manylinux_2_17_aarch64", "manylinux2014_aarch64")]  # fmt: skip
    run([sys.executable, "-m", "pip", "install", "-q", "--no-compile", "--target", str(site), "--only-binary=:all:",
         *platforms, "--python-version=3.11", "--implementation=cp", *PACKAGES])  # fmt: skip


def disk_usage(path: Path) -> str:
    return subprocess.run(["du", "-sh", str(path)], capture_output=True, text=True).stdout.split("\t")[0]


def mount_all(root: Path) -> None:
    for name in MOUNTS:
        target = root / name
        if subprocess.run(["mountpoint", "-q", str(target)]).returncode != 0:
            run(["mount", "--rbind" if name != "proc" else "--bind", f"/{name}", str(target)])


def unmount_all(root: Path) -> None:
    for name in MOUNTS:
        target = root / name
        if target.is_dir() and subprocess.run(["mountpoint", "-q", str(target)]).returncode == 0:
            subprocess.run(["umount", "-R", "-l", str(target)], check=False)


def pid_file(name: str) -> Path:
    return CACHE / "run" / f"{name}.pid"


def daemon(name: str, command: list[str]) -> None:
    """Start ``command`` in its own session, output to ``logs/<name>.log``, pid in ``run/<name>.pid``."""
    (CACHE / "logs").mkdir(parents=True, exist_ok=True)
    (CACHE / "run").mkdir(parents=True, exist_ok=True)
    log = open(CACHE / "logs" / f"{name}.log", "w")  # noqa: SIM115 - handed to the daemon
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)  # fmt: skip
    pid_file(name).write_text(f"{process.pid} {start_time(process.pid)}")


def start_time(pid: int) -> str:
    """The kernel's start time of process ``pid`` (field 22 of ``/proc/PID/stat``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()[19]


def pid_of(name: str) -> int | None:
    """The pid in ``run/<name>.pid`` while that process lives (pid and start time must match: a
    pid file left by another boot of this machine may name an unrelated process)."""
    try:
        pid, started = pid_file(name).read_text().split()
        return int(pid) if start_time(int(pid)) == started else None
    except (OSError, ValueError):
        return None


def alive(name: str) -> bool:
    return pid_of(name) is not None


def wait_listening(port: int, timeout: float = 60) -> str | None:
    """``None`` once the tracker accepts connections on ``port``, else why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive("tracker"):
            return "the RPC tracker exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return None
        except OSError:
            time.sleep(0.5)
    return f"the RPC tracker does not listen on port {port} after {timeout:.0f} s"


def start(args: argparse.Namespace) -> int:
    root = build()
    ensure_binfmt()
    mount_all(root)
    if not alive("tracker"):
        daemon("tracker", [args.python, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                           "--port", str(args.tracker_port), "--port-end", str(args.tracker_port + 1)])  # fmt: skip
    error = wait_listening(args.tracker_port)
    if error:
        print(f"the emulated aarch64 device did not start: {error} (logs: {CACHE / 'logs'})", file=sys.stderr)
        return 1
    if alive("server") and wait_ready(args, timeout=1, probe_timeout=30) is not None:
        step("the device's server runs but does not serve: restarting it")
        os.killpg(pid_of("server"), signal.SIGKILL)
    if not alive("server"):
        daemon("server", ["chroot", str(root), "env", "TVM_USE_RUNTIME_LIB=1", f"PYTHONPATH={SITE}", "HOME=/tmp",
                          "python3", "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1",
                          "--port", str(args.server_port), "--port-end", str(args.server_port + 50),
                          "--tracker", f"127.0.0.1:{args.tracker_port}", "--key", args.key])  # fmt: skip
    error = wait_ready(args)
    if error:
        print(f"the emulated aarch64 device did not start: {error} (logs: {CACHE / 'logs'})", file=sys.stderr)
        return 1
    print(f"LUTC_RPC_TRACKER=127.0.0.1:{args.tracker_port}")
    print(f"LUTC_RPC_KEY={args.key}")
    return 0


def wait_ready(args: argparse.Namespace, timeout: float = READY_TIMEOUT, probe_timeout: int = 60) -> str | None:
    """``None`` once a session on the device reads back a tensor, else why not (after ``timeout``)."""
    probe = (
        "import sys, numpy as np, tvm\nfrom tvm import rpc\n"
        f"s = rpc.connect_tracker('127.0.0.1', {args.tracker_port}).request({args.key!r}, session_timeout=60)\n"
        "x = np.arange(4, dtype='float32')\n"
        "assert (tvm.runtime.tensor(x, s.cpu()).numpy() == x).all()\n"
    )
    deadline, reason = time.monotonic() + timeout, "no answer"
    while time.monotonic() < deadline:
        if not alive("server"):
            return "the RPC server exited"
        try:
            done = subprocess.run([args.python, "-c", probe], capture_output=True, text=True, timeout=probe_timeout)
        except subprocess.TimeoutExpired:
            reason = f"no session within {probe_timeout} s (a server that stopped serving?)"
            continue
        if done.returncode == 0:
            return None
        reason = (done.stderr.strip().splitlines() or ["no answer"])[-1]
        time.sleep(3)
    return reason


def stop(args: argparse.Namespace | None = None, quiet: bool = False) -> int:
    for name in ("server", "tracker"):
        pid = pid_of(name)
        if pid is not None:
            os.killpg(pid, signal.SIGTERM)
            if not quiet:
                step(f"stopped the {name}")
        pid_file(name).unlink(missing_ok=True)
    if rootfs().is_dir():
        unmount_all(rootfs())
    return 0


def status(args: argparse.Namespace) -> int:
    built = (CACHE / "recipe").is_file() and (CACHE / "recipe").read_text() == RECIPE and rootfs().is_dir()
    print(f"cache {CACHE}: {'built' if built else 'not built'}")
    for name in ("tracker", "server"):
        print(f"{name}: {'running' if alive(name) else 'stopped'}")
    if alive("server"):
        error = wait_ready(args)
        print("healthy" if error is None else f"not healthy: {error}")
    return 0


CHECK = """
import numpy as np, tvm, tvm.support.cc as cc, tempfile, os
from tvm import rpc
from tvm.script import tirx as T

@T.prim_func
def lookup(tab: T.Buffer((16,), "int8"), idx: T.Buffer((16,), "int8"), out: T.Buffer((16,), "int8")):
    lanes = T.ramp(0, 1, 16)
    out[lanes] = T.call_llvm_pure_intrin("int8x16", "llvm.aarch64.neon.tbl1", tab[lanes], idx[lanes])

target = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
lib = tvm.compile(lookup, target=target)
path = os.path.join(tempfile.mkdtemp(), "tbl.so")
lib.export_library(path, fcompile=cc.cross_compiler("aarch64-linux-gnu-gcc"))
session = rpc.connect_tracker("127.0.0.1", PORT).request(KEY, session_timeout=120)
session.upload(path)
func = session.load_module("tbl.so")["lookup"]
rng = np.random.default_rng(0)
tab, idx = rng.integers(-128, 128, 16).astype("int8"), rng.integers(0, 16, 16).astype("int8")
dev = session.cpu()
out = tvm.runtime.tensor(np.zeros(16, "int8"), dev)
func(tvm.runtime.tensor(tab, dev), tvm.runtime.tensor(idx, dev), out)
assert (out.numpy() == tab[idx]).all(), (out.numpy(), tab[idx])
print("check passed: a NEON tbl kernel built here ran on the emulated aarch64 device")
"""


def check(args: argparse.Namespace) -> int:
    code = CHECK.replace("PORT", str(args.tracker_port)).replace("KEY", repr(args.key))
    with tempfile.TemporaryDirectory() as folder:  # TVMScript reads its source from a file
        script = Path(folder, "check.py")
        script.write_text(code)
        return subprocess.run([args.python, str(script)]).returncode


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    top.add_argument("--python", default=sys.executable, help="a Python with tvm, for the host's tracker and checks "
                     "(default: this one)")  # fmt: skip
    top.add_argument("--tracker-port", type=int, default=9190, help="the host RPC tracker's port (default 9190)")
    top.add_argument("--server-port", type=int, default=9091, help="the device RPC server's first port (default 9091)")
    top.add_argument("--key", default="aarch64-qemu", help="the key the device registers under (default aarch64-qemu)")
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build (or reuse) the cached root file system and device packages")
    sub.add_parser("start", help="build if needed, start the tracker and the device's server, wait until usable, "
                   "print the LUTC_RPC_* variables")  # fmt: skip
    sub.add_parser("stop", help="stop the server and the tracker, unmount the device's /proc, /sys, /dev")
    sub.add_parser("status", help="say whether the device is built, running and healthy")
    sub.add_parser("check", help="build a NEON tbl kernel here, run it on the device, compare with numpy")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if os.geteuid() != 0 and args.command in ("build", "start", "stop"):
        print("arm_device.py needs root (debootstrap, chroot, mount)", file=sys.stderr)
        return 1
    commands = {"build": lambda a: (build(), 0)[1], "start": start, "stop": stop, "status": status, "check": check}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
