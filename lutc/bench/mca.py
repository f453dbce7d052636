"""Static speed estimates of the lookup kernels' inner loops with llvm-mca (no hardware needed).

For each CPU: build lutc's ``lut_matmul`` for its target, take the hot loop of the assembly (the
innermost loop with the most lookup instructions), count its instructions and lookups, and ask
llvm-mca how many cycles an iteration takes on that CPU's scheduling model. Beside it, the same
estimate for an ONNX Runtime style int8 dot-product loop doing the same work: 4-bit (or 2-bit)
weights unpacked to int8 with ``and``/shift and dotted with int8 activations (``sdot`` on NEON
after subtracting the zero point, as MLAS's NEON int8 kernel does; ``vpdpbusd`` or
``vpmaddubsw`` + ``vpmaddwd`` on unsigned weights on x86, where MLAS folds the zero point into
per-block activation sums). Scales apply per block, outside the loop, as in ORT. One lookup covers
4 K elements of one row and one bit-plane, so 32 lookups of a b-bit kernel equal ``32 * 4 / b``
multiply-accumulates.

Estimates, not measurements: llvm-mca models the core (ports, latencies) with every load an L1
hit, and knows nothing of caches, DRAM or the loops around the hot one.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

TRIPLES = {"aarch64": "aarch64-linux-gnu", "x86_64": "x86_64-linux-gnu"}
LOOKUP_LANES = {
    ("aarch64", "fast"): {"tbl1": 16},
    ("aarch64", "exact"): {"tbl4": 4},
    ("x86_64", "fast"): {"vpshufb": 32, "vpermb": 32, "vpermi2b": 32},
    ("x86_64", "exact"): {"vpermps": 8, "vpermd": 8},
}
"""Lookups per instruction by (arch, mode), see ``schedules/{arm,x86}/*_intrin.py``: a
one-register ``tbl`` gives 16 int8 lookups, a four-register one 4 floats (exact mode's one-register
``tbl`` replicates offsets: no lookup); x86 lanes are for ymm, doubled for zmm. ``vpermt2b``
(AVX-512 transposes) is no lookup; LLVM emits the exact kernels' ``vpermps`` as ``vpermd``."""
DOT_MACS = {"aarch64": {"sdot": 16, "udot": 16}, "x86_64": {"vpdpbusd": 32, "vpmaddubsw": 32}}
"""Multiply-accumulates per dot-product instruction (x86: ymm, doubled for zmm)."""
MODEL_NAMES = {
    "A55": "cortex-a55",
    "A57": "cortex-a57",
    "N1": "neoverse-n1",
    "N2": "neoverse-n2",
    "V1": "neoverse-v1",
    "V2": "neoverse-v2",
    "HW": "haswell",
    "SKL": "skylake",
    "SKX": "skylake-avx512",
    "ICX": "icelake-server",
    "SPR": "sapphirerapids",
    "Zn": "znver1",
    "Zn2": "znver2",
    "Zn3": "znver3",
    "Zn4": "znver4",
}
"""LLVM scheduling models by the prefix of their resource names (``A57UnitB``, ``Zn4ALU0``)."""


@dataclass(frozen=True)
class McaCpu:
    """A CPU to estimate: the lutc target whose kernels it runs and LLVM's ``-mcpu`` name."""

    target: str
    mcpu: str
    arch: str
    note: str = ""


CPUS = (
    McaCpu("arm-cortex-a76", "cortex-a76", "aarch64"),
    McaCpu("arm-cortex-a76", "neoverse-n1", "aarch64", "Neoverse N1 is an A76-class core"),
    McaCpu("arm-neoverse-v1", "neoverse-v1", "aarch64"),
    McaCpu("x86-avx2", "znver2", "x86_64"),
    McaCpu("x86-avx2", "haswell", "x86_64"),
    McaCpu("x86-avx512", "znver4", "x86_64"),
    McaCpu("x86-avx512", "icelake-server", "x86_64"),
)
"""Default CPUs; ``cortex-a76`` is scheduled with the Cortex-A57 model up to LLVM 22 at least,
so the Neoverse N1 model (the A76's server sibling) stands beside it."""


@dataclass(frozen=True)
class LoopEstimate:
    """One hot loop and llvm-mca's estimate of it."""

    instructions: int
    vector_instructions: int
    work: float
    """Lookups (LUT kernels) or multiply-accumulates (dot-product loops) per iteration."""
    cycles: float
    """Cycles per iteration (llvm-mca's total cycles over its iterations)."""
    block_rthroughput: float
    model: str
    """The scheduling model llvm-mca used, named from its resources."""
    mix: tuple[tuple[str, int], ...]
    stack_loads: int
    """Loads addressing the stack pointer (reloads of spilled registers) in the loop."""
    stack_stores: int

    def per(self, work: float) -> float:
        """Cycles for ``work`` lookups or MACs."""
        return self.cycles / self.work * work

    def vector_per(self, work: float) -> float:
        return self.vector_instructions / self.work * work


def _version_key(path: Path) -> int:
    match = re.search(r"llvm-(\d+)/bin/llvm-mca$|llvm-mca-(\d+)$", str(path))
    return int(next(g for g in match.groups() if g)) if match else 0


def find_mca(explicit: str | None = None) -> str:
    """``explicit``, else the newest ``/usr/lib/llvm-NN/bin/llvm-mca`` or ``llvm-mca-NN`` on PATH,
    else ``llvm-mca``; raises ``FileNotFoundError`` when there is none."""
    if explicit:
        if not (Path(explicit).is_file() or shutil.which(explicit)):
            raise FileNotFoundError(f"no llvm-mca at {explicit}")
        return explicit
    found = [*Path("/usr/lib").glob("llvm-*/bin/llvm-mca"), *map(Path, _on_path_versions())]
    if found:
        return str(max(found, key=_version_key))
    path = shutil.which("llvm-mca")
    if path is None:
        raise FileNotFoundError("llvm-mca is not installed (Debian bookworm: apt-get install llvm-22)")
    return path


def _on_path_versions() -> list[str]:
    return [p for n in range(10, 40) if (p := shutil.which(f"llvm-mca-{n}"))]


def available() -> bool:
    try:
        return bool(find_mca())
    except FileNotFoundError:
        return False


def mca_version(mca: str) -> str:
    out = subprocess.run([mca, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"LLVM version (\S+)", out)
    return match.group(1) if match else "unknown"


def _functions(asm: str) -> dict[str, list[str]]:
    """The assembly's functions (``.type NAME,@function``), each as its lines."""
    names = set(re.findall(r"\.type\s+([^,\s]+),\s*[@%]function", asm))
    functions: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in asm.splitlines():
        label = re.match(r"^([^\s:]+):", line)
        if label and label.group(1) in names:
            current = functions.setdefault(label.group(1), [])
        elif current is not None:
            current.append(line)
    return functions


def matmul_asm(asm: str, name: str = "lut_matmul") -> list[str]:
    """The lines of the functions whose name contains ``name``, with the parallel lambdas they
    reference (TVM outlines a parallel loop into ``.L__tvm_parallel_lambda*``)."""
    functions = _functions(asm)
    own = [n for n in functions if name in n]
    if not own:
        raise ValueError(f"no function named *{name}* in the assembly")
    text = "\n".join(line for n in own for line in functions[n])
    lambdas = [n for n in functions if "parallel_lambda" in n and re.search(re.escape(n) + r"\b", text)]
    return [line for n in own + lambdas for line in functions[n]]


def instructions(lines: Iterable[str], arch: str) -> list[str]:
    """Instructions and local labels, without comments and directives."""
    comment = r"//.*" if arch == "aarch64" else r"#.*"
    out = []
    for raw in lines:
        line = re.sub(comment, "", raw).strip()
        if re.match(r"^\.L\w*:$", line) or (line and not line.startswith(".") and not line.endswith(":")):
            out.append(line.removeprefix("{vex} ").replace("\t", " "))
    return out


def _back_target(line: str, arch: str) -> str | None:
    """The label a branch goes to, else None."""
    branch = r"^(b(\.?\w\w)?|cbn?z|tbn?z)\s" if arch == "aarch64" else r"^j\w+\s"
    match = re.match(branch + r".*?(\.L\w+)$", line)
    return match.group(match.lastindex) if match else None


def loops(lines: list[str], arch: str) -> list[tuple[int, int]]:
    """Every loop as (header label index, back-edge index)."""
    labels = {line[:-1]: i for i, line in enumerate(lines) if line.endswith(":")}
    found = []
    for i, line in enumerate(lines):
        header = labels.get(_back_target(line, arch) or "")
        if header is not None and header < i:
            found.append((header, i))
    return found


def hot_loop(lines: list[str], arch: str, weights: dict[str, int]) -> list[str]:
    """The body (header label to back-edge) of the innermost loop with the most instructions of
    ``weights``'s kinds (see :func:`classify`); any loop if no innermost one has them."""
    spans = loops(lines, arch)
    if not spans:
        raise ValueError("no loop in the assembly")
    inner = [(h, e) for h, e in spans if not any(h <= h2 and e2 < e and (h2, e2) != (h, e) for h2, e2 in spans)]
    bodies = [[x for x in lines[h + 1 : e + 1] if not x.endswith(":")] for h, e in spans]
    inner_bodies = [[x for x in lines[h + 1 : e + 1] if not x.endswith(":")] for h, e in inner]
    count = lambda body: sum(classify(x, arch) in weights for x in body)  # noqa: E731
    for candidates in (inner_bodies, bodies):
        best = max(candidates, key=lambda body: (count(body), -len(body)))
        if count(best):
            return best
    raise ValueError(f"no loop holds a {sorted(weights)} instruction")


def classify(line: str, arch: str) -> str:
    """An instruction's kind: ``tbl1``/``tbl4`` (table registers) for ``tbl``, else its mnemonic."""
    mnemonic = line.split()[0]
    if arch == "aarch64" and mnemonic in ("tbl", "tbx"):
        return f"{mnemonic}{line.split('{')[1].split('}')[0].count('v')}"
    return mnemonic


def lanes(line: str, arch: str, table: dict[str, int]) -> int:
    """Lookups or MACs of one instruction, by its kind's entry in ``table``."""
    per = table.get(classify(line, arch), 0)
    return per * 2 if arch == "x86_64" and "zmm" in line else per


def lookups(line: str, arch: str, mode: str = "fast") -> int:
    return lanes(line, arch, LOOKUP_LANES[arch, mode])


def _is_vector(line: str, arch: str) -> bool:
    pattern = r"\bv\d+\.|\b[qd]\d+\b" if arch == "aarch64" else r"%[xyz]mm\d+|^prefetch"
    return bool(re.search(pattern, line)) and not line.startswith("prefetch")


def _stack_access(line: str, arch: str) -> str | None:
    """``load`` or ``store`` for an instruction addressing the stack pointer, else None."""
    if not re.search(r"\[sp\b" if arch == "aarch64" else r"\(%rsp\)|\(%rsp,", line):
        return None
    if arch == "aarch64":
        return "store" if re.match(r"st", line) else "load"
    return "store" if re.search(r"\(%rsp[^)]*\)$", line) else "load"


def run_mca(body: list[str], arch: str, mcpu: str, mca: str, iterations: int = 200) -> str:
    """llvm-mca's report on ``body``; raises ``RuntimeError`` with its message when it fails."""
    with tempfile.NamedTemporaryFile("w", suffix=".s") as file:
        file.write("\n".join(body) + "\n")
        file.flush()
        cmd = [mca, f"-mtriple={TRIPLES[arch]}", f"-mcpu={mcpu}", f"-iterations={iterations}", file.name]
        out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed: {out.stderr.strip()[-500:]}")
    return out.stdout + out.stderr


def parse_cycles(report: str) -> float:
    """Cycles per iteration of an llvm-mca report; a report without them raises ``ValueError``."""
    iterations = re.search(r"^Iterations:\s+(\d+)\s*$", report, re.M)
    total = re.search(r"^Total Cycles:\s+(\d+)\s*$", report, re.M)
    if not iterations or not total or int(iterations.group(1)) == 0:
        tail = report.strip().splitlines()[-3:]
        raise ValueError(f"not an llvm-mca report: {' / '.join(tail) or 'empty output'}")
    return int(total.group(1)) / int(iterations.group(1))


def parse_model(report: str, mcpu: str) -> str:
    """The scheduling model of a report, from the common prefix of its resource names."""
    if "not a recognized processor" in report:
        return f"generic ({mcpu} unknown)"
    names = re.findall(r"^\[[\d.]+\]\s+-\s+(\w+)", report.split("Resources:", 1)[-1], re.M)
    if not names:
        return "unknown"
    known = [k for k in MODEL_NAMES if all(name.startswith(k) for name in names)]
    if known:
        return MODEL_NAMES[max(known, key=len)]
    return re.sub(r"(Unit|Port|ALU|AGU|FP|Divider)\w*$", "", _common(names)) or names[0]


def _common(names: list[str]) -> str:
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    return prefix


def estimate(body: list[str], arch: str, mcpu: str, mca: str, work: float) -> LoopEstimate:
    """llvm-mca's cycles per iteration of ``body`` on ``mcpu``, with the loop's statistics."""
    report = run_mca(body, arch, mcpu, mca)
    rthroughput = re.search(r"^Block RThroughput:\s+([\d.]+)", report, re.M)
    mix = collections.Counter(classify(x, arch) for x in body)
    return LoopEstimate(
        instructions=len(body),
        vector_instructions=sum(_is_vector(x, arch) for x in body),
        work=work,
        cycles=parse_cycles(report),
        block_rthroughput=float(rthroughput.group(1)) if rthroughput else float("nan"),
        model=parse_model(report, mcpu),
        mix=tuple(mix.most_common()),
        stack_loads=sum(_stack_access(x, arch) == "load" for x in body),
        stack_stores=sum(_stack_access(x, arch) == "store" for x in body),
    )


def kernel_asm(target: str, bits: int, mode: str) -> str:
    """The assembly of lutc's kernels for ``target`` (M = 1, 4096 x 4096, groups of 128)."""
    import tvm

    from ..gemm import scheduled_module
    from ..kernels import KernelSpec
    from ..quant import IntFormat
    from ..targets import resolve_target

    tvm_target = resolve_target(target)
    spec = KernelSpec(1, 4096, 4096, IntFormat(bits, 128), mode=mode)
    return tvm.tirx.build(scheduled_module(spec, tvm_target), target=tvm_target).inspect_source("asm")


def kernel_loop(target: str, bits: int, mode: str) -> tuple[list[str], str, int]:
    """The hot loop of lutc's ``lut_matmul`` for ``target``, its architecture and its lookups
    per iteration."""
    from ..targets import resolve_target, target_arch

    arch = target_arch(resolve_target(target))
    lines = instructions(matmul_asm(kernel_asm(target, bits, mode)), arch)
    body = hot_loop(lines, arch, LOOKUP_LANES[arch, mode])
    return body, arch, sum(lookups(x, arch, mode) for x in body)


DOT_SOURCE = {
    "aarch64": r"""
#include <arm_neon.h>
#include <stdint.h>
#define ROWS 4
/* ROWS rows of a GEMV share each activation load; per row and step, 16 weight bytes (32 4-bit or
   64 2-bit weights) are unpacked, the zero point subtracted, and sdot-ed with int8 activations. */
void dot_q4(const uint8_t *w, long ldw, const int8_t *x, int32_t *out, long k) {
    int32x4_t acc[ROWS][2] = {0};
    const uint8x16_t m = vdupq_n_u8(15);
    const int8x16_t z = vdupq_n_s8(8);
    for (const int8_t *end = x + k; x < end; x += 32, w += 16) {
        int8x16_t x0 = vld1q_s8(x), x1 = vld1q_s8(x + 16);
        for (int r = 0; r < ROWS; r++) {
            uint8x16_t b = vld1q_u8(w + r * ldw);
            acc[r][0] = vdotq_s32(acc[r][0], vsubq_s8(vreinterpretq_s8_u8(vandq_u8(b, m)), z), x0);
            acc[r][1] = vdotq_s32(acc[r][1], vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(b, 4)), z), x1);
        }
    }
    for (int r = 0; r < ROWS; r++) vst1q_s32(out + 4 * r, vaddq_s32(acc[r][0], acc[r][1]));
}
void dot_q2(const uint8_t *w, long ldw, const int8_t *x, int32_t *out, long k) {
    int32x4_t acc[ROWS][2] = {0};
    const uint8x16_t m = vdupq_n_u8(3);
    const int8x16_t z = vdupq_n_s8(2);
    for (const int8_t *end = x + k; x < end; x += 64, w += 16) {
        int8x16_t x0 = vld1q_s8(x), x1 = vld1q_s8(x + 16), x2 = vld1q_s8(x + 32), x3 = vld1q_s8(x + 48);
        for (int r = 0; r < ROWS; r++) {
            uint8x16_t b = vld1q_u8(w + r * ldw);
            int8x16_t q0 = vreinterpretq_s8_u8(vandq_u8(b, m));
            int8x16_t q1 = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(b, 2), m));
            int8x16_t q2 = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(b, 4), m));
            int8x16_t q3 = vreinterpretq_s8_u8(vshrq_n_u8(b, 6));
            acc[r][0] = vdotq_s32(vdotq_s32(acc[r][0], vsubq_s8(q0, z), x0), vsubq_s8(q2, z), x2);
            acc[r][1] = vdotq_s32(vdotq_s32(acc[r][1], vsubq_s8(q1, z), x1), vsubq_s8(q3, z), x3);
        }
    }
    for (int r = 0; r < ROWS; r++) vst1q_s32(out + 4 * r, vaddq_s32(acc[r][0], acc[r][1]));
}
""",
    "x86_64": r"""
#include <immintrin.h>
#include <stdint.h>
#define ROWS 4
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)  /* MLAS's AVX512-VNNI kernels: zmm */
typedef __m512i V;
#define W 64
#define LD(p) _mm512_loadu_si512((const void *)(p))
#define ST(p, v) _mm512_storeu_si512((void *)(p), v)
#define SET1 _mm512_set1_epi8
#define AND _mm512_and_si512
#define SRL _mm512_srli_epi16
#define ADD _mm512_add_epi32
#define DOT(acc, w, x) _mm512_dpbusd_epi32(acc, w, x)
#define A1 1  /* two accumulators per row hide vpdpbusd's latency */
#else
typedef __m256i V;
#define W 32
#define LD(p) _mm256_loadu_si256((const __m256i *)(p))
#define ST(p, v) _mm256_storeu_si256((__m256i *)(p), v)
#define SET1 _mm256_set1_epi8
#define AND _mm256_and_si256
#define SRL _mm256_srli_epi16
#define ADD _mm256_add_epi32
#ifdef __AVXVNNI__
#define DOT(acc, w, x) _mm256_dpbusd_avx_epi32(acc, w, x)
#define A1 1
#else  /* AVX2: u8 x s8 pairs into int16 (vpmaddubsw), then pairs into int32 (vpmaddwd) */
#define DOT(acc, w, x) ADD(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1)))
#define A1 0  /* one accumulator per row (its chain is a vpaddd): 16 ymm registers */
#endif
#endif
/* ROWS rows of a GEMV share each activation load; per row and step, W weight bytes (2W 4-bit or
   4W 2-bit unsigned weights) are unpacked and u8 x s8 dotted into int32 (the zero point is
   applied with per-block activation sums, outside the loop). */
void dot_q4(const uint8_t *w, long ldw, const int8_t *x, int32_t *out, long k) {
    V acc[ROWS][2] = {0};
    const V m = SET1(15);
    for (const int8_t *end = x + k; x < end; x += 2 * W, w += W) {
        V x0 = LD(x), x1 = LD(x + W);
        for (int r = 0; r < ROWS; r++) {
            V b = LD(w + r * ldw);
            acc[r][0] = DOT(acc[r][0], AND(b, m), x0);
            acc[r][A1] = DOT(acc[r][A1], AND(SRL(b, 4), m), x1);
        }
    }
    for (int r = 0; r < ROWS; r++) ST(out + W / 4 * r, ADD(acc[r][0], acc[r][1]));
}
void dot_q2(const uint8_t *w, long ldw, const int8_t *x, int32_t *out, long k) {
    V acc[ROWS][2] = {0};
    const V m = SET1(3);
    for (const int8_t *end = x + k; x < end; x += 4 * W, w += W) {
        for (int r = 0; r < ROWS; r++) {
            V b = LD(w + r * ldw);
            acc[r][0] = DOT(DOT(acc[r][0], AND(b, m), LD(x)), AND(SRL(b, 4), m), LD(x + 2 * W));
            acc[r][A1] = DOT(DOT(acc[r][A1], AND(SRL(b, 2), m), LD(x + W)), AND(SRL(b, 6), m), LD(x + 3 * W));
        }
    }
    for (int r = 0; r < ROWS; r++) ST(out + W / 4 * r, ADD(acc[r][0], acc[r][1]));
}
""",
}
"""The int8 dot-product baselines: ORT MatMulNBits's inner loops (accuracy level 4), no scales."""
CPU_FLAG = {"aarch64": "-mcpu", "x86_64": "-march"}
GCC = {"aarch64": "aarch64-linux-gnu-gcc", "x86_64": "gcc"}
GCC_CPU_FLAGS = {"znver4": ["-march=znver3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"]}
"""CPUs GCC 12 does not know, as the nearest CPU plus their extensions."""


def find_clang() -> str | None:
    """The newest ``/usr/lib/llvm-NN/bin/clang``, else ``clang`` on PATH, else None."""
    found = sorted(Path("/usr/lib").glob("llvm-*/bin/clang"), key=lambda p: int(p.parts[3].split("-")[1]))
    return str(found[-1]) if found else shutil.which("clang")


def dot_compilers(arch: str, mcpu: str) -> dict[str, list[str]]:
    """The commands that can compile the baselines for ``mcpu``, by name: clang when installed,
    GCC when installed. No one compiler is best under llvm-mca: GCC 12 copies each ``vpdpbusd``
    accumulator through another register (costly in the Ice Lake model), clang uses the register
    form of ``vpdpbusd``, which LLVM's Zen 4 model gives twice the memory form's throughput cost."""
    found = {}
    if clang := find_clang():
        found["clang"] = [clang, f"--target={TRIPLES[arch]}", "-ffreestanding", f"{CPU_FLAG[arch]}={mcpu}"]
    if shutil.which(GCC[arch]):
        found["gcc"] = [GCC[arch], *GCC_CPU_FLAGS.get(mcpu, [f"{CPU_FLAG[arch]}={mcpu}"])]
    if not found:
        raise RuntimeError(f"no compiler for the {arch} dot-product baseline (clang or {GCC[arch]})")
    return found


def dot_asm(command: list[str], arch: str) -> str:
    """The baselines compiled by ``command`` at -O3 (unrolling is harmless: MACs are counted in the loop)."""
    with tempfile.TemporaryDirectory() as folder:
        source, asm = Path(folder, "dot.c"), Path(folder, "dot.s")
        source.write_text(DOT_SOURCE[arch])
        subprocess.run([*command, "-O3", "-S", str(source), "-o", str(asm)], check=True, capture_output=True)
        return asm.read_text()


def dot_loop(command: list[str], arch: str, bits: int) -> tuple[list[str], int]:
    """The inner loop of the ``bits``-bit int8 dot-product baseline and its MACs per iteration."""
    lines = instructions(matmul_asm(dot_asm(command, arch), f"dot_q{bits}"), arch)
    body = hot_loop(lines, arch, DOT_MACS[arch])
    return body, sum(lanes(x, arch, DOT_MACS[arch]) for x in body)


def dot_estimate(cpu: McaCpu, bits: int, mca: str) -> tuple[LoopEstimate, str]:
    """The fastest estimate of the baseline over the compilers installed, and that compiler."""
    estimates = {}
    for name, command in dot_compilers(cpu.arch, cpu.mcpu).items():
        body, macs = dot_loop(command, cpu.arch, bits)
        estimates[name] = estimate(body, cpu.arch, cpu.mcpu, mca, macs)
    name = min(estimates, key=lambda n: estimates[n].per(1))
    return estimates[name], name


@dataclass(frozen=True)
class McaRow:
    """A kernel's loop and the dot-product baseline's, on one CPU."""

    cpu: McaCpu
    bits: int
    mode: str
    kernel: LoopEstimate
    dot: LoopEstimate
    dot_compiler: str

    @property
    def lut_cycles(self) -> float:
        """Cycles per 32 lookups."""
        return self.kernel.per(32)

    @property
    def dot_cycles(self) -> float:
        """Cycles of the dot-product loop for the work of 32 lookups (``128 / bits`` MACs)."""
        return self.dot.per(32 * 4 / self.bits)


def run_estimates(
    cpus: Sequence[McaCpu],
    bits_list: Sequence[int],
    modes: Sequence[str],
    mca: str,
    errors: list[str] | None = None,
) -> list[McaRow]:
    """Every (cpu, bits, mode) estimate; each kernel is built once per target. With ``errors``,
    a CPU that llvm-mca or the compiler refuses is noted there and skipped, else it raises."""
    built: dict[tuple[str, int, str], tuple[list[str], str, int]] = {}
    rows = []
    for cpu in cpus:
        try:
            for bits in bits_list:
                dot, compiler = dot_estimate(cpu, bits, mca)
                for mode in modes:
                    key = (cpu.target, bits, mode)
                    if key not in built:
                        built[key] = kernel_loop(*key)
                    body, arch, work = built[key]
                    rows.append(McaRow(cpu, bits, mode, estimate(body, arch, cpu.mcpu, mca, work), dot, compiler))
        except (RuntimeError, subprocess.CalledProcessError) as err:
            if errors is None:
                raise
            errors.append(f"{cpu.mcpu}: {str(err).splitlines()[0]}")
    return rows


HEADER = (
    f"{'target':16} {'-mcpu':15} {'model used':15} {'bits':>4} {'mode':5} {'lookups/it':>10} {'vec/32':>6} "
    f"{'sp ld/st':>8} {'cyc/32 lookups':>14} {'dot, same work':>14} {'dot cc':>6} {'dot/LUT':>7}"
)
LEGEND = (
    "vec/32: vector instructions per 32 lookups; sp ld/st: stack loads/stores (spills) per iteration; "
    "dot, same work: an ORT-style int8 dot loop's cycles for 128/bits MACs (scales apply per block outside "
    "its loop, as in ORT), compiled with each compiler installed, the fastest shown (dot cc); dot/LUT > 1: "
    "the LUT loop is faster."
)


def _table_row(r: McaRow) -> str:
    k = r.kernel
    return (
        f"{r.cpu.target:16} {r.cpu.mcpu:15} {k.model:15} {r.bits:>4} {r.mode:5} {k.work:>10.0f} "
        f"{k.vector_per(32):>6.1f} {f'{k.stack_loads}/{k.stack_stores}':>8} {r.lut_cycles:>14.2f} "
        f"{r.dot_cycles:>14.2f} {r.dot_compiler:>6} {r.dot_cycles / r.lut_cycles:>6.2f}x"
    )


def format_rows(rows: Sequence[McaRow], mca: str) -> str:
    """The table (one row per cpu, bits and mode) and each kernel loop's instruction mix."""
    compilers = dot_compilers("x86_64", "generic").values()
    lines = [
        f"llvm-mca {mca_version(mca)} ({mca}): ESTIMATES, not measurements (every load an L1 hit).",
        "Kernels: lut_matmul M=1 4096x4096 g128; dot-product baselines compiled with "
        + ", ".join(f"{Path(c[0]).name} {_compiler_version(c[0])}" for c in compilers)
        + ".",
        LEGEND,
        HEADER,
        *map(_table_row, rows),
    ]
    lines += [f"note: {c.mcpu}: {c.note}" for c in dict.fromkeys(r.cpu for r in rows) if c.note]
    spilled = [r for r in rows if r.dot.stack_loads + r.dot.stack_stores]
    lines += [f"warning: the {r.bits}-bit dot loop spills on {r.cpu.mcpu}" for r in spilled]
    lines.append("instruction mix per iteration (kernel loop | dot loop), most frequent first:")
    for r in _unique_loops(rows):
        lines.append(f"  {r.cpu.target} {r.bits}-bit {r.mode}: {_mix(r.kernel)} | {_mix(r.dot)}")
    return "\n".join(lines)


def _compiler_version(compiler: str) -> str:
    out = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"version (\S+)|\) (\d+\.\S+)", out)
    return next((g for g in match.groups() if g), "") if match else ""


def _mix(loop: LoopEstimate, top: int = 12) -> str:
    return " ".join(f"{k}:{v}" for k, v in loop.mix[:top])


def _unique_loops(rows: Sequence[McaRow]) -> list[McaRow]:
    """One row per (target, bits, mode): the instruction mix does not depend on -mcpu."""
    return list({(r.cpu.target, r.bits, r.mode): r for r in reversed(rows)}.values())[::-1]


def write_json(rows: Sequence[McaRow], mca: str, path: Path) -> None:
    """The rows, with the derived per-32-lookup numbers, as JSON."""
    records = [
        {**dataclasses.asdict(r), "lut_cycles_per_32": r.lut_cycles, "dot_cycles_same_work": r.dot_cycles} for r in rows
    ]
    path.write_text(json.dumps({"llvm_mca": mca, "version": mca_version(mca), "rows": records}, indent=1))


def run_from_args(args: argparse.Namespace) -> int:
    """``python -m lutc.bench mca``: print the table (and write ``--json``); 1 if a CPU failed."""
    try:
        mca = find_mca(args.llvm_mca)
    except FileNotFoundError as err:
        print(f"error: {err}")
        return 1
    errors: list[str] = []
    rows = run_estimates([c for c in CPUS if c.mcpu in args.cpus], args.bits, args.modes, mca, errors)
    print(format_rows(rows, mca))
    print("\n".join(f"error: {e}" for e in errors))
    if args.json:
        write_json(rows, mca, args.json)
    return 1 if errors else 0
