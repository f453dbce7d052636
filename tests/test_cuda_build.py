"""The CUDA backend on a machine without a GPU: targets, the pipeline's dispatch on the target's
kind, and ``lutc.build`` for CUDA, whose models cannot run here but export their CUDA C."""

from __future__ import annotations

import numpy as np
import pytest
from test_build import _nbits_model
from tvm.target import Target

import lutc
from lutc import backend
from lutc.errors import LoadError, TargetError
from lutc.targets import CUDA_ARCHS, resolve_target
from lutc.tuning import target_tag

NO_GPU = bool(backend.cuda.missing_on_host(resolve_target("cuda")))


@pytest.mark.parametrize(("name", "arch"), [("cuda", "sm_80"), *((f"cuda-{a}", f"sm_{a[2:]}") for a in CUDA_ARCHS)])
def test_cuda_targets_name_their_arch(name, arch):
    target = resolve_target(name)
    assert target.kind.name == "cuda" and target.attrs["arch"] == arch
    assert target.host.kind.name == "llvm"
    assert target_tag(target) == f"cuda-{arch}"


@pytest.mark.parametrize("target", [{"kind": "cuda"}, Target("cuda")], ids=["dict", "Target"])
def test_a_cuda_target_without_arch_is_refused(target):
    with pytest.raises(ValueError, match="sm_50"):
        resolve_target(target)


def test_backends_dispatch_on_the_target_kind():
    assert backend.backend_of(resolve_target("x86-avx2")) is backend.cpu
    assert backend.backend_of(resolve_target("arm")) is backend.cpu
    assert backend.backend_of(resolve_target("cuda-sm90")) is backend.cuda
    with pytest.raises(NotImplementedError, match="'opencl'"):
        backend.backend_of(Target("opencl"))
    model, _ = _nbits_model(2, 32)
    with pytest.raises(NotImplementedError, match="target kinds"):
        lutc.build(model, Target("opencl"))


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU: the model runs")
def test_cuda_model_refuses_to_run_without_a_gpu_and_exports_its_cuda_source(tmp_path):
    model, _ = _nbits_model(2, 32)
    compiled = lutc.build(model, "cuda-sm90", keep_dequantize=("proj",))
    assert "lutc model for cuda-sm_90" in compiled.summary()
    assert compiled.missing_features and "GPU" in compiled.missing_features[0]
    with pytest.raises(TargetError, match="NVIDIA GPU"):
        compiled(np.zeros((1, 2, 256), np.float32))
    source = compiled.source("cuda")
    assert "__global__" in source and compiled.source("opencl") == ""
    path = compiled.export_library(tmp_path / "model.so")
    kernel = source[source.index("__global__") :].split("(")[0]
    assert kernel.encode() in path.read_bytes()
    with pytest.raises(LoadError, match="NVIDIA GPU"):
        lutc.load(path)
