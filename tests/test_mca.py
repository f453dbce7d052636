"""The llvm-mca estimates (``python -m lutc.bench mca``): the hot loops found in the kernels'
assembly, the lookup counts and the report parser. Compile-only: runs on any x86 host."""

from __future__ import annotations

import shutil

import pytest

from lutc.bench import mca
from lutc.bench.cli import parse_args

needs_mca = pytest.mark.skipif(
    not mca.available(), reason="llvm-mca is not installed (Debian: apt-get install llvm-22)"
)
needs_arm_compiler = pytest.mark.skipif(
    not (mca.find_clang() or shutil.which("aarch64-linux-gnu-gcc")),
    reason="neither clang nor aarch64-linux-gnu-gcc is installed (the NEON dot-product baseline)",
)

NESTED = """
f:
.LBB0_1:
    ldr q0, [x0], #16
.LBB0_2:
    tbl v1.16b, { v2.16b }, v0.16b   // inner loop: one lookup
    subs x1, x1, #1
    b.ne .LBB0_2
    tbl v3.16b, { v2.16b }, v0.16b
    tbl v4.16b, { v2.16b }, v0.16b
    cbnz x2, .LBB0_1
"""


def _kinds(body: list[str], arch: str) -> set[str]:
    return {mca.classify(line, arch) for line in body}


def test_assembly_finds_tbl_in_the_inner_loop_of_the_arm_build():
    body, arch, lookups = mca.kernel_loop("arm", 2, "fast")
    assert arch == "aarch64" and "tbl1" in _kinds(body, arch)
    assert mca._back_target(body[-1], arch) is not None  # the body ends in its back-edge
    assert lookups == 16 * sum(mca.classify(line, arch) == "tbl1" for line in body) >= 32


def test_assembly_finds_tbl4_in_the_inner_loop_of_the_arm_exact_build():
    body, arch, lookups = mca.kernel_loop("arm", 2, "exact")
    assert "tbl4" in _kinds(body, arch) and "fadd" in _kinds(body, arch)
    assert lookups == 4 * sum(mca.classify(line, arch) == "tbl4" for line in body)


def test_assembly_finds_vpshufb_in_the_inner_loop_of_the_avx2_build():
    body, arch, lookups = mca.kernel_loop("x86-avx2", 2, "fast")
    assert arch == "x86_64" and {"vpshufb", "vpmaddubsw"} <= _kinds(body, arch) and lookups % 32 == 0


def test_the_hot_loop_is_the_innermost_one_with_lookups():
    lines = mca.instructions(NESTED.splitlines(), "aarch64")
    assert mca.hot_loop(lines, "aarch64", mca.LOOKUP_LANES["aarch64", "fast"]) == [
        "tbl v1.16b, { v2.16b }, v0.16b",
        "subs x1, x1, #1",
        "b.ne .LBB0_2",
    ]
    with pytest.raises(ValueError, match="no loop holds"):
        mca.hot_loop(lines, "aarch64", {"sdot": 16})


def test_lookups_count_lanes_per_instruction():
    assert mca.lookups("tbl v1.16b, { v13.16b }, v1.16b", "aarch64") == 16
    assert mca.lookups("tbl v3.16b, { v28.16b, v29.16b, v30.16b, v31.16b }, v0.16b", "aarch64", "exact") == 4
    assert mca.lookups("tbl v1.16b, { v13.16b }, v1.16b", "aarch64", "exact") == 0  # an offset shuffle
    assert mca.lookups("vpermb %zmm1, %zmm2, %zmm3", "x86_64") == 64
    assert mca.lookups("vpshufb %ymm1, %ymm2, %ymm3", "x86_64") == 32
    assert mca.lookups("vpermd %ymm1, %ymm2, %ymm3", "x86_64", "exact") == 8
    assert mca.lookups("vpermt2b %zmm1, %zmm2, %zmm3", "x86_64") == 0  # a transpose, not a lookup


def test_a_report_without_cycles_is_refused():
    report = "Iterations:        200\nInstructions:      800\nTotal Cycles:      410\n"
    assert mca.parse_cycles(report) == 2.05
    with pytest.raises(ValueError, match="not an llvm-mca report"):
        mca.parse_cycles("error: invalid instruction mnemonic 'foo'")
    with pytest.raises(ValueError, match="not an llvm-mca report"):
        mca.parse_cycles("")


def test_the_model_is_named_from_its_resources():
    assert mca.parse_model("Resources:\n[0]   - A57UnitB\n[1.0] - A57UnitI\n", "cortex-a76") == "cortex-a57"
    assert mca.parse_model("Resources:\n[0]   - Zn4AGU0\n[1]   - Zn4ALU0\n", "znver4") == "znver4"


def test_the_cli_takes_the_mca_flags():
    args = parse_args(["mca", "--bits", "2", "--cpus", "neoverse-v1", "znver4", "--llvm-mca", "x", "--json", "o.json"])
    assert args.bits == [2] and args.cpus == ["neoverse-v1", "znver4"] and args.llvm_mca == "x"


@needs_mca
def test_llvm_mca_errors_are_raised():
    with pytest.raises(RuntimeError, match="failed"):
        mca.run_mca(["not_an_instruction x0"], "aarch64", "neoverse-v1", mca.find_mca())


@needs_mca
@needs_arm_compiler
def test_estimates_are_positive_and_cover_the_dot_product_baseline():
    [row] = mca.run_estimates([mca.CPUS[2]], [2], ["fast"], mca.find_mca())
    assert row.kernel.cycles > 0 and row.lut_cycles > 0 and row.dot_cycles > 0 and row.dot.work > 0
    assert row.kernel.model != "unknown"
    assert "ESTIMATES" in mca.format_rows([row], mca.find_mca())
