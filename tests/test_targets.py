"""Targets by CPU features: named targets, the build machine's CPU, ISA levels, rule dispatch,
and models built for a CPU this machine is not (a clear error, never an illegal instruction)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from lutc.schedules import rule_for
from lutc.schedules.arm import LutMatmulNEON
from lutc.schedules.cpu import LutMatmulPortable
from lutc.schedules.x86 import LutMatmulAVX2, LutMatmulAVX512
from tvm.target import codegen

import lutc
from lutc import targets, zoo
from lutc.errors import LoadError, LutcError, TargetError
from lutc.kernels import KernelSpec, lut_matmul
from lutc.quant import IntFormat

AVX2_FLAGS = frozenset({"sse4_2", "avx", "avx2", "fma", "bmi2", "f16c"})
AVX512_FLAGS = AVX2_FLAGS | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512vbmi", "avx512_vbmi2", "avx512_vnni"}


@pytest.fixture
def host(monkeypatch):
    """Pretend this machine is an x86 CPU that LLVM calls ``cpu`` with Linux ``flags``."""

    def pretend(cpu: str, flags: frozenset[str]) -> None:
        monkeypatch.setattr(targets, "host_cpu_flags", lambda: flags)
        monkeypatch.setattr(targets, "host_arch", lambda: "x86_64")
        monkeypatch.setattr(codegen, "llvm_get_system_cpu", lambda: cpu)
        targets.host_x86_target.cache_clear()

    yield pretend
    targets.host_x86_target.cache_clear()


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("x86-avx2", "x86_64-avx2"), ("x86-avx512", "x86_64-avx512"), ("llvm", "x86_64-generic"),
        ("arm", "aarch64-neon-dotprod"), ("aarch64", "aarch64-neon-dotprod"),
        ("arm-cortex-a76", "aarch64-neon-dotprod"),
        ("arm-neoverse-n1", "aarch64-neon-dotprod"), ("arm-neoverse-v1", "aarch64-neon-dotprod"),
        ("arm-apple-m1", "aarch64-neon-dotprod"),
    ],
)  # fmt: skip
def test_named_targets_have_their_isa_level(name, level):
    assert targets.isa_level(targets.resolve_target(name)) == level


def test_x86_is_the_build_machines_cpu(host):
    host("znver4", AVX512_FLAGS)
    target = targets.resolve_target("x86")
    assert target.attrs["mcpu"] == "znver4" and targets.isa_level(target) == "x86_64-avx512"
    assert targets.missing_on_host(target) == []


def test_x86_leaves_out_features_the_os_hides(host):
    """A hypervisor can hide AVX-512 from a Zen 4 guest: LLVM names the CPU znver4 anyway."""
    host("znver4", AVX2_FLAGS)
    target = targets.resolve_target("x86")
    assert "-avx512f" in list(target.attrs["mattr"])
    assert targets.isa_level(target) == "x86_64-avx2" and targets.missing_on_host(target) == []


def test_unknown_cpu_names_fall_back_to_the_baseline(host):
    host("some-future-cpu", AVX2_FLAGS)
    assert targets.resolve_target("x86").attrs["mcpu"] == "x86-64"


def test_rules_dispatch_on_features():
    func = lut_matmul(KernelSpec(1, 64, 256, IntFormat(2, 128)))
    assert isinstance(rule_for(func, targets.resolve_target("x86-avx512")), LutMatmulAVX512)
    assert type(rule_for(func, targets.resolve_target("x86-avx2"))) is LutMatmulAVX2
    for name in ("arm", "aarch64", "arm-cortex-a76", "arm-neoverse-n1", "arm-neoverse-v1", "arm-apple-m1"):
        assert type(rule_for(func, targets.resolve_target(name))) is LutMatmulNEON
    assert type(rule_for(func, targets.resolve_target("llvm"))) is LutMatmulPortable
    host_rule = rule_for(func, targets.resolve_target("x86"))
    expected = {"x86_64-avx512": LutMatmulAVX512, "x86_64-avx2": LutMatmulAVX2}.get(
        targets.isa_level(targets.resolve_target("x86")), LutMatmulPortable
    )
    assert type(host_rule) is expected


def test_arm_without_neon_keeps_the_portable_kernel():
    func = lut_matmul(KernelSpec(1, 64, 256, IntFormat(2, 128)))
    plain = targets.resolve_target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["-neon"]})
    assert targets.isa_level(plain) == "aarch64-generic"
    assert type(rule_for(func, plain)) is LutMatmulPortable
    neon_only = targets.resolve_target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    assert targets.isa_level(neon_only) == "aarch64-neon" and type(rule_for(func, neon_only)) is LutMatmulNEON


def test_avx512_without_vbmi_or_vnni_uses_avx2():
    """Skylake-X has AVX-512 F/BW but neither VBMI (``vpermb``) nor VNNI (``vpdpbusd``)."""
    func = lut_matmul(KernelSpec(1, 64, 256, IntFormat(2, 128)))
    skylake = targets.resolve_target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "skylake-avx512"})
    assert targets.isa_level(skylake) == "x86_64-avx2"
    assert type(rule_for(func, skylake)) is LutMatmulAVX2


def test_avx512_leaves_odd_planes_in_small_groups_to_avx2():
    """Three planes need 4-byte chunks (whole quads); a 16-element group has 2 bytes."""
    avx512 = targets.resolve_target("x86-avx512")
    assert type(rule_for(lut_matmul(KernelSpec(1, 64, 256, IntFormat(3, 16))), avx512)) is LutMatmulAVX2
    assert type(rule_for(lut_matmul(KernelSpec(1, 64, 256, IntFormat(2, 16))), avx512)) is LutMatmulAVX512


def test_avx512_targets_keep_llvm_from_gathering():
    """LLVM's vectorizer turned precompute loops into ``vgather`` code on AVX-512 (3x slower)."""
    for target in (targets.resolve_target("x86-avx512"), targets.resolve_target("x86")):
        if targets.isa_level(target) == "x86_64-avx512":
            assert "+prefer-no-gather" in list(target.attrs["mattr"])


def test_an_avx512_model_on_an_avx2_machine_is_refused_clearly(host, tmp_path):
    host("znver3", AVX2_FLAGS)
    model = lutc.build(zoo.single_matmul_nbits(64, 32, 2, 32), target="x86-avx512")
    assert "avx512f" in model.missing_features and "not runnable here" in model.summary()
    with pytest.raises(TargetError, match=r"built for x86_64-avx512.*needs avx512bw.*avx512vnni"):
        model(A=np.zeros((1, 1, 64), np.float32))
    path = model.export_library(tmp_path / "m512.so")
    with pytest.raises(LoadError, match=r"m512.so: the model was built for x86_64-avx512"):
        lutc.load(path)


@pytest.mark.skipif(bool(targets.missing_on_host(targets.resolve_target("x86-avx512"))),
                    reason="this machine has no AVX-512 VBMI/VNNI")  # fmt: skip
def test_an_avx512_model_runs_on_an_avx512_machine():
    model = lutc.build(zoo.single_matmul_nbits(64, 32, 2, 32), target="x86-avx512", mode="exact")
    reference = lutc.build(zoo.single_matmul_nbits(64, 32, 2, 32), target="llvm", mode="exact")
    x = np.random.default_rng(0).standard_normal((1, 3, 64)).astype(np.float32)
    np.testing.assert_allclose(model(A=x), reference(A=x), rtol=1e-5, atol=1e-5)


def test_an_arm_model_builds_on_x86_and_names_what_it_needs(tmp_path):
    if targets.host_arch() == "aarch64":
        pytest.skip("this machine is an ARM one")
    model = lutc.build(zoo.single_matmul_nbits(64, 32, 2, 32), target="arm")
    with pytest.raises(TargetError, match=r"aarch64-neon-dotprod.*needs an aarch64 CPU \(this machine is x86_64\)"):
        model(A=np.zeros((1, 1, 64), np.float32))
    if shutil.which("aarch64-linux-gnu-gcc") is None:
        with pytest.raises(LutcError, match="aarch64-linux-gnu-gcc, which is not installed"):
            model.export_library(tmp_path / "arm.so")
