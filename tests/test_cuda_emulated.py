"""lutc's CUDA kernels run on the CPU by ``tools/gpu_check/emulate.py`` (g++ and ``cuda_emu.h``).

The full correctness bundle is made and every correctness case must pass in the emulator,
through ``check.py``'s own comparison. The shim's intrinsics are checked against Python models
of CUDA's documented semantics on small kernels compiled from strings, and, where nvcc is
installed, against the PTX nvcc emits. Broken kernels (a skipped write, a wrong value, a
deadlock, a read past a buffer) must be reported as failures.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lutc.bench import gpu_bundle as make_bundle
from lutc.targets import resolve_target

TOOLS = Path(__file__).resolve().parent.parent / "tools" / "gpu_check"
pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not on PATH: the emulator compiles with it")
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) not on PATH")


def _load(name: str):
    """A standalone script of ``tools/gpu_check`` (``emulate.py`` and the ``check.py`` it loads run
    where lutc and TVM are not installed, so they are files there, not package modules)."""
    module_name = f"gpu_check_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, TOOLS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[module_name]


emulate = _load("emulate")
CORRECTNESS = [c.name for c in make_bundle.full_cases(resolve_target("cuda-sm90")) if c.kind == "correctness"]


def _emulate(bundle: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(TOOLS / "emulate.py"), str(bundle), "--cache", str(cache), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cuda_emu_cache")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle")
    make_bundle.make_bundle(out, "sm_90")
    return out


@pytest.fixture(scope="module")
def emulated(bundle, cache, tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path_factory.mktemp("results") / "results.json"
    done = _emulate(bundle, cache, "--out", str(out))
    return done, json.loads(out.read_text())["jobs"]


# ---- the bundle's kernels ------------------------------------------------------------------


def test_emulator_runs_every_correctness_case_and_skips_timing(bundle, emulated):
    done, jobs = emulated
    assert sorted(jobs) == sorted(f"case:{name}" for name in CORRECTNESS), done.stdout + done.stderr
    timing = [c for c in json.loads((bundle / "manifest.json").read_text())["cases"] if c["kind"] == "timing"]
    assert timing and f"skipping {len(timing)} timing cases" in done.stdout
    assert re.search(rf"\d+ of {len(CORRECTNESS)} correctness cases passed", done.stdout)
    assert (done.returncode == 0) == all(job.get("passed") for job in jobs.values())


@pytest.mark.parametrize("name", CORRECTNESS)
def test_correctness_case_passes_in_the_emulator(emulated, name):
    result = emulated[1][f"case:{name}"]
    assert "error" not in result, result["error"]
    # check.py's two checks: the own-mode LUT reference within the rounding bound, the real
    # product within the per-element bound; the emulator is deterministic, so repeatable.
    assert result["finite"] and result["repeatable"], result
    assert result["within_expected"], f"max error {result['max_err_expected']:.3g} > atol {result['atol']:.3g}"
    assert result["within_reference"], f"worst error / allowed {result['worst_reference_ratio']:.3g}"


def _broken_copy(bundle: Path, tmp_path: Path, name: str) -> tuple[Path, dict, dict]:
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    (case,) = [c for c in manifest["cases"] if c["name"] == name]
    return broken, manifest, case


def test_a_matmul_that_skips_half_its_blocks_fails(bundle, cache, tmp_path):
    name = "correctness_m1_n256_k512_w4g32_exact_half"
    broken, manifest, case = _broken_copy(bundle, tmp_path, name)
    launch = case["modules"][1]["launches"][-1]  # the kernel that writes y (after the K blocks' partial sums)
    axis = "grid" if launch["grid"][0] > 1 else "block"  # one thread per output row: halve either
    launch[axis][0] //= 2  # the second half of the output rows is never written
    (broken / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "results.json"
    done = _emulate(broken, cache, "--only", name, "--out", str(out))
    assert done.returncode == 1, done.stdout
    result = json.loads(out.read_text())["jobs"][f"case:{name}"]
    y = case["buffers"]["y"]["shape"]
    assert result["passed"] is False and result["reason"] == f"{y[0] * y[1] // 2} non-finite outputs"
    assert f"FAILED {name}" in done.stdout and "0 of 1 correctness cases passed" in done.stdout


def test_a_matmul_with_a_wrong_output_value_fails(bundle, cache, tmp_path):
    name = "correctness_m16_n256_k512_w2g128a_exact_full"
    broken, _, case = _broken_copy(bundle, tmp_path, name)
    source = broken / case["modules"][1]["source"]
    text, stores = re.subn(r"(\by_ptr\[[^\]]*\] = )", r"\g<1>1.0f + ", source.read_text())
    assert stores >= 1
    source.write_text(text)
    out = tmp_path / "results.json"
    done = _emulate(broken, cache, "--only", name, "--out", str(out))
    assert done.returncode == 1, done.stdout
    result = json.loads(out.read_text())["jobs"][f"case:{name}"]
    assert result["finite"] and not result["within_expected"] and not result["within_reference"]
    assert result["max_err_expected"] == pytest.approx(1.0, abs=0.01)


# ---- the shim, on small kernels ------------------------------------------------------------


class Kernels:
    """The kernels of a CUDA C string, compiled for the host and launched like CuPy's."""

    def __init__(self, source: str, cache: Path) -> None:
        gpu = emulate.EmulatedGpu(emulate.HostArrays, None, "emulator", cache=cache)
        self.source = textwrap.dedent(source)
        self.functions = gpu._compile(self.source, list(emulate.check.kernel_signatures(self.source)))

    def __call__(self, name: str, grid, block, *args, shared_mem: int = 0) -> None:
        device = [emulate.HostArrays.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
        self.functions[name](grid, block, device, shared_mem=shared_mem)
        for host, dev in zip(args, device, strict=True):
            if isinstance(host, np.ndarray):
                host[...] = dev


def _bytes(words: np.ndarray) -> np.ndarray:
    """``[..., 4]`` bytes of uint32 words, least significant first."""
    return words.astype(np.uint32)[..., None].view(np.uint8)[..., :4]


def byte_perm_reference(x: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """CUDA Math API: byte ``n`` of the result is byte ``s<4n+2:4n>`` of ``y:x``."""
    pool = np.concatenate([_bytes(x), _bytes(y)], axis=-1)
    picks = np.stack([(s >> (4 * n)) & 7 for n in range(4)], axis=-1).astype(np.intp)
    return np.take_along_axis(pool, picks, axis=-1).copy().view(np.uint32)[..., 0]


def dp4a_reference(a: np.ndarray, b: np.ndarray, c: np.ndarray, signed_a: bool, signed_b: bool) -> np.ndarray:
    """``c + sum_i a_i * b_i`` over the four bytes, each signed or not, modulo 2**32."""
    av = _bytes(a).view(np.int8) if signed_a else _bytes(a)
    bv = _bytes(b).view(np.int8) if signed_b else _bytes(b)
    c64 = c.astype(np.int64) if (signed_a or signed_b) else c.view(np.uint32).astype(np.int64)
    total = c64 + (av.astype(np.int64) * bv.astype(np.int64)).sum(-1)
    return (total & 0xFFFFFFFF).astype(np.uint32).view(np.int32)


INTRINSICS = r"""
extern "C" __global__ void perm(unsigned* __restrict__ out, const unsigned* __restrict__ x,
                                const unsigned* __restrict__ y, const unsigned* __restrict__ s) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = __byte_perm(x[i], y[i], s[i]);
}
extern "C" __global__ void dp4a(int* __restrict__ out, const unsigned* __restrict__ a,
                                const unsigned* __restrict__ b, const int* __restrict__ c) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  out[6 * i + 0] = __dp4a((int)a[i], (int)b[i], c[i]);
  out[6 * i + 1] = (int)__dp4a(a[i], b[i], (unsigned)c[i]);
  out[6 * i + 2] = __dp4a(a[i], (int)b[i], c[i]);  // TVM's preamble: dp4a.u32.s32
  out[6 * i + 3] = __dp4a((int)a[i], b[i], c[i]);  // dp4a.s32.u32
  char4 ca = *(const char4*)&a[i], cb = *(const char4*)&b[i];
  uchar4 ua = *(const uchar4*)&a[i], ub = *(const uchar4*)&b[i];
  out[6 * i + 4] = __dp4a(ca, cb, c[i]);
  out[6 * i + 5] = (int)__dp4a(ua, ub, (unsigned)c[i]);
}
extern "C" __global__ void vneg4(unsigned* __restrict__ out, const unsigned* __restrict__ a) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = __vneg4(a[i]);
}
"""


@pytest.fixture(scope="module")
def intrinsics(cache) -> Kernels:
    return Kernels(INTRINSICS, cache)


def _words(rng, n: int) -> np.ndarray:
    return rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)


def test_byte_perm_ignores_bit_3_of_each_selector_nibble(intrinsics):
    rng = np.random.default_rng(0)
    fixed = [0x3210, 0x7654, 0x0123, 0x4567, 0x8888, 0xFFFF, 0xBA98, 0x1C5E, 0xFFFF3210]
    s = np.concatenate([np.array(fixed, np.uint32), _words(rng, 256 - len(fixed))])
    x = np.concatenate([np.full(len(fixed), 0x83828180, np.uint32), _words(rng, 256 - len(fixed))])
    y = np.concatenate([np.full(len(fixed), 0xF7F6F5F4, np.uint32), _words(rng, 256 - len(fixed))])
    out = np.zeros(256, np.uint32)
    intrinsics("perm", (2,), (128,), out, x, y, s)
    np.testing.assert_array_equal(out, byte_perm_reference(x, y, s))
    # prmt's sign-replicate mode (nibble bit 3) would give 0xFFFFFFFF for 0x8888 and 0xFFFF:
    # __byte_perm has no such mode, nvcc masks the selector with 0x7777 (the nvcc test below)
    assert list(out[:8]) == [0x83828180, 0xF7F6F5F4, 0x80818283, 0xF4F5F6F7, 0x80808080, 0xF7F7F7F7,
                             0x83828180, 0x81F4F5F6]  # fmt: skip
    assert out[8] == 0x83828180  # selector bits above 15 are ignored too


def test_dp4a_overloads_with_negative_bytes_and_wraparound(intrinsics):
    rng = np.random.default_rng(1)
    n = 256
    a, b = _words(rng, n), _words(rng, n)
    a[:3], b[:3] = 0x80FF7F01, 0xFF80FF7F  # bytes 1, 127, -1 (255), -128 (128) and 127, -1, -128, -1
    c = rng.integers(-(2**31), 2**31, n, dtype=np.int64).astype(np.int32)
    c[:3] = (2**31 - 1, -(2**31), 0)
    out = np.zeros((n, 6), np.int32)
    intrinsics("dp4a", (2,), (128,), out, a, b, c)
    for column, (signed_a, signed_b) in enumerate([(1, 1), (0, 0), (0, 1), (1, 0), (1, 1), (0, 0)]):
        np.testing.assert_array_equal(out[:, column], dp4a_reference(a, b, c, bool(signed_a), bool(signed_b)))
    # worked by hand: s32.s32 adds 127 - 127 + 128 + 128; u32.s32 reads a's -1, -128 as 255, 128
    assert (out[2, 0], out[2, 2]) == (256, 127 - 127 - 255 * 128 - 128)
    assert (out[0, 0], out[1, 2]) == (-(2**31) + 255, 2**31 - 32768)  # wraps modulo 2**32


def test_vneg4_negates_each_byte_modulo_256(intrinsics):
    rng = np.random.default_rng(2)
    a = np.concatenate([np.array([0x80FF0001, 0x7F817F81], np.uint32), _words(rng, 126)])
    out = np.zeros(128, np.uint32)
    intrinsics("vneg4", (1,), (128,), out, a)
    expected = (-_bytes(a).view(np.int8).astype(np.int16)).astype(np.int8).view(np.uint8).copy().view(np.uint32)
    np.testing.assert_array_equal(out, expected[:, 0])
    assert out[0] == 0x800100FF  # -(-128) wraps to -128


SHUFFLES = r"""
#define N_DELTAS 9
__device__ const int kDeltas[N_DELTAS] = {0, 1, 2, 3, 5, 8, 16, 31, -3};
extern "C" __global__ void shuffles(int* __restrict__ out, float* __restrict__ fout, double* __restrict__ dout) {
  const int t = threadIdx.x, n = blockDim.x;
  const int v = 1000 + t;
  int i = 0;
  for (int width = 32; width >= 1; width /= 2) {
    for (int d = 0; d < N_DELTAS; ++d) {
      const int delta = kDeltas[d];
      if (delta >= 0) {
        out[(i++) * n + t] = __shfl_down_sync(0xffffffffu, v, (unsigned)delta, width);
        out[(i++) * n + t] = __shfl_up_sync(0xffffffffu, v, (unsigned)delta, width);
        out[(i++) * n + t] = __shfl_xor_sync(0xffffffffu, v, delta, width);
      }
      out[(i++) * n + t] = __shfl_sync(0xffffffffu, v, delta + 7 * (t % 3), width);
    }
  }
  fout[t] = __shfl_down_sync(__activemask(), 0.5f * t, 16);
  dout[t] = __shfl_sync(0xffffffffu, 1e300 * t, 31 - t % 32);
}
"""


def shuffle_reference(values: np.ndarray, mode: str, arg: np.ndarray, width: int) -> np.ndarray:
    """CUDA Programming Guide, warp shuffle functions (lane = thread % 32)."""
    idx = np.arange(values.size)
    lanes, warp_base = idx % 32, idx // 32 * 32
    start, pos = warp_base + lanes // width * width, lanes % width
    if mode == "down":  # lane + delta past the segment: own value
        src = np.where(pos + arg < width, idx + arg, idx)
    elif mode == "up":
        src = np.where(pos >= arg, idx - arg, idx)
    elif mode == "xor":  # a later segment gives the own value, an earlier one is readable
        target = lanes ^ arg
        src = np.where(target < (lanes // width + 1) * width, warp_base + target, idx)
    else:  # idx: srcLane modulo width, within the segment
        src = start + np.mod(arg, width)
    return values[src]


def test_shuffles_follow_cuda_semantics_at_warp_and_segment_edges(cache):
    kernels = Kernels(SHUFFLES, cache)
    n = 64  # two warps: no lane reads the other warp
    deltas = [0, 1, 2, 3, 5, 8, 16, 31, -3]
    widths = [32, 16, 8, 4, 2, 1]
    rows = sum(4 if d >= 0 else 1 for d in deltas) * len(widths)
    out, fout, dout = np.zeros((rows, n), np.int32), np.zeros(n, np.float32), np.zeros(n, np.float64)
    kernels("shuffles", (1,), (n,), out, fout, dout)
    values, t = 1000 + np.arange(n), np.arange(n)
    expected = []
    for width in widths:
        for delta in deltas:
            if delta >= 0:
                expected += [
                    shuffle_reference(values, mode, np.full(n, delta), width) for mode in ("down", "up", "xor")
                ]
            expected.append(shuffle_reference(values, "idx", delta + 7 * (t % 3), width))
    np.testing.assert_array_equal(out, np.array(expected))
    # __shfl_down_sync at the warp's edge: lanes 16-31 keep their own value
    np.testing.assert_array_equal(fout, np.where(t % 32 < 16, 0.5 * (t + 16), 0.5 * t).astype(np.float32))
    np.testing.assert_array_equal(dout, 1e300 * (t // 32 * 32 + 31 - t % 32))


SYNC = r"""
extern "C" __global__ void rotate(float* __restrict__ out) {
  __shared__ float s[256];
  const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int n = blockDim.x * blockDim.y * blockDim.z;
  float v = t + 1000.0f * (blockIdx.x + gridDim.x * blockIdx.y);
  for (int round = 0; round < 3; ++round) {
    s[t] = v;
    __syncthreads();  // every write of this round before any read
    v = s[(t + 1) % n] + 1.0f;
    __syncthreads();  // every read before the next round's writes
  }
  out[(blockIdx.x + gridDim.x * blockIdx.y) * n + t] = v;
}
extern "C" __global__ void early_exit(float* __restrict__ out) {
  __shared__ float s[128];
  const int t = threadIdx.x;
  if (t % 2) return;  // the barrier below waits for the even threads only
  s[t] = t;
  __syncthreads();
  out[t] = s[(t + 2) % 128];
}
extern "C" __global__ void unwritten(float* __restrict__ out) {
  __shared__ float s[64];
  if (blockIdx.x == 0 || threadIdx.x < 32) s[threadIdx.x] = blockIdx.x + 1.0f;
  __syncthreads();
  out[blockIdx.x * 64 + threadIdx.x] = s[threadIdx.x];
}
extern "C" __global__ void __launch_bounds__(128) dynamic(float* __restrict__ a_ptr, float* __restrict__ b_ptr) {
  extern __shared__ __align__(64) float s_ptr[];
  s_ptr[((int)threadIdx.x)] = a_ptr[((((int)blockIdx.x) * 128) + ((int)threadIdx.x))];
  __syncthreads();
  b_ptr[((((int)blockIdx.x) * 128) + ((int)threadIdx.x))] = s_ptr[(127 - ((int)threadIdx.x))];
}
extern "C" __global__ void deadlock(int* __restrict__ out) {
  if (threadIdx.x < 16) out[threadIdx.x] = __shfl_sync(0xffffffffu, (int)threadIdx.x, 0);
  else __syncthreads();
}
extern "C" __global__ void partner_gone(int* __restrict__ out) {
  if (threadIdx.x == 31) return;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, (int)threadIdx.x, 1);
}
extern "C" __global__ void scalars(float* __restrict__ out, int n, float scale) {
  out[threadIdx.x] = threadIdx.x < n ? scale * threadIdx.x : -1.0f;
}
"""


@pytest.fixture(scope="module")
def sync(cache) -> Kernels:
    return Kernels(SYNC, cache)


def test_syncthreads_orders_shared_memory_across_a_3d_block(sync):
    block, grid = (8, 4, 2), (3, 2)
    n, blocks = 64, 6
    out = np.zeros(blocks * n, np.float32)
    sync("rotate", grid, block, out)
    t, b = np.arange(n), np.arange(blocks)[:, None]
    np.testing.assert_array_equal(out.reshape(blocks, n), (t + 3) % n + 1000.0 * b + 3)


def test_returned_threads_do_not_hold_a_barrier(sync):
    out = np.zeros(128, np.float32)
    sync("early_exit", (1,), (128,), out)
    even = np.arange(0, 128, 2)
    np.testing.assert_array_equal(out[even], (even + 2) % 128)


def test_shared_memory_starts_as_nan_in_every_block(sync):
    out = np.zeros(128, np.float32)
    sync("unwritten", (2,), (64,), out)
    np.testing.assert_array_equal(out[:64], 1.0)
    np.testing.assert_array_equal(out[64:96], 2.0)
    assert np.isnan(out[96:]).all()  # not block 0's leftovers


def test_dynamic_shared_memory_in_tvm_s_form(sync):
    a, b = np.arange(256, dtype=np.float32), np.zeros(256, np.float32)
    sync("dynamic", (2,), (128,), a, b, shared_mem=512)
    np.testing.assert_array_equal(b, np.concatenate([a[127::-1], a[:127:-1]]))
    with pytest.raises(RuntimeError, match="__launch_bounds__"):
        sync("dynamic", (1,), (256,), a, b, shared_mem=1024)


def test_scalar_arguments_and_argument_count(sync):
    out = np.zeros(32, np.float32)
    sync("scalars", (1,), (32,), out, np.int32(20), np.float32(0.5))
    np.testing.assert_array_equal(out, np.where(np.arange(32) < 20, 0.5 * np.arange(32), -1.0))
    with pytest.raises(RuntimeError, match="takes 3 parameters, the launch passes 2"):
        sync("scalars", (1,), (32,), out, np.int32(20))


def test_a_deadlock_fails_the_launch_with_who_waits_where(sync):
    out = np.zeros(32, np.int32)
    with pytest.raises(RuntimeError, match=r"deadlock in block \(0,0,0\) of 32 threads.*16 at __syncthreads.*"
                                           r"16 at a warp shuffle"):  # fmt: skip
        sync("deadlock", (1,), (32,), out)
    sync("scalars", (1,), (32,), np.zeros(32, np.float32), np.int32(1), np.float32(1))  # usable after


def test_a_shuffle_partner_that_returned_fails_the_launch(sync):
    with pytest.raises(RuntimeError, match="lane 0 waits with mask 0xffffffff, but lane 31 has returned"):
        sync("partner_gone", (1,), (32,), np.zeros(32, np.int32))


OVERRUN = r"""
import importlib.util, sys
import numpy as np
spec = importlib.util.spec_from_file_location("gpu_check_emulate", sys.argv[1])
emulate = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = emulate
spec.loader.exec_module(emulate)
source = 'extern "C" __global__ void overrun(float* __restrict__ a, float* __restrict__ b) ' \
         '{ b[threadIdx.x] = a[threadIdx.x + 1024]; }'
gpu = emulate.EmulatedGpu(emulate.HostArrays, None, "emulator", cache=emulate.Path(sys.argv[2]))
kernel = gpu._compile(source, ["overrun"])["overrun"]
a, b = (emulate.HostArrays.asarray(np.zeros(1024, np.float32)) for _ in range(2))
kernel((1,), (32,), (a, b))
print("read past the end went unnoticed")
"""


def test_a_read_past_a_buffer_crashes(cache):
    done = subprocess.run([sys.executable, "-c", OVERRUN, str(TOOLS / "emulate.py"), str(cache)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == -11, done.stdout + done.stderr  # SIGSEGV on the guard page


# ---- the shim against nvcc -------------------------------------------------------------------


@needs_nvcc
def test_nvcc_emits_the_semantics_the_shim_implements(bundle, tmp_path):
    """``__byte_perm`` masks its selector with 0x7777 before ``prmt`` (no sign-replicate mode);
    with TVM's preamble, ``__dp4a(unsigned, int, int)`` is ``dp4a.u32.s32``."""
    preambles = [re.search(r"#if defined\(__CUDA_ARCH__\) && \(__CUDA_ARCH__ >= 610\).*?#endif // __CUDA_ARCH__ >= 610",
                           p.read_text(), re.S) for p in sorted((bundle / "sources").glob("*.cu"))]  # fmt: skip
    preamble = next(m[0] for m in preambles if m)
    probe = textwrap.dedent("""
        extern "C" __global__ void probe(unsigned* o, unsigned a, int b, int c, unsigned s) {
          o[0] = __byte_perm(a, b, s);
          o[1] = __dp4a(a, b, c);
          o[2] = __dp4a((int)a, b, c);
          o[3] = __dp4a(a, (unsigned)b, (unsigned)c);
        }
    """)
    source = tmp_path / "probe.cu"
    source.write_text(preamble + probe)
    ptx = subprocess.run(["nvcc", "-arch=sm_90", "-ptx", str(source), "-o", "-"], capture_output=True, text=True,
                         timeout=120, check=True).stdout  # fmt: skip
    assert re.search(r"and\.b32\s+(%r\d+), %r\d+, 30583;\s+prmt\.b32\s+%r\d+, %r\d+, %r\d+, \1;", ptx), ptx
    assert re.findall(r"dp4a\.\w+\.\w+", ptx) == ["dp4a.u32.s32", "dp4a.s32.s32", "dp4a.u32.u32"]
