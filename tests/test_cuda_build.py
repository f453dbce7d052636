"""The CUDA backend on a machine without a GPU: targets, the pipeline's dispatch on the target's
kind, and ``lutc.build`` for CUDA, whose models cannot run here but export their CUDA C."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import random_weights
from test_build import K, N, _nbits_model
from tvm.target import Target

import lutc
from lutc import backend
from lutc.backend.ptxas import ptxas_report
from lutc.errors import LoadError, TargetError
from lutc.quant import IntFormat, pack, quantize
from lutc.quant.layout import to_vector_layout
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


def test_tuning_for_cuda_is_refused_by_name():
    model, _ = _nbits_model(2, 32)
    with pytest.raises(NotImplementedError, match="tuning for cuda-sm_90"):
        lutc.tune(model, "cuda-sm90", trials=1, progress=False)


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


NVCC = shutil.which("nvcc") is not None
CORPUS = Path(__file__).parent / "corpus"
FP16_INT4 = "families/llama32_cuda_int4/model.onnx"
"""onnxruntime-genai's builder, ``-p int4 -e cuda``: float16 activations, caches and logits."""
LUT_LIMITS = {"registers": 64, "stack_frame": 0, "shared_bytes": 48 * 1024}
"""What every LUT kernel of a model must fit, per ptxas (issue 14): no spills or local memory,
registers for at least 1024 threads per SM, shared memory within the static limit."""


@pytest.mark.skipif(not NVCC, reason="nvcc is not installed")
@pytest.mark.parametrize("name", ["llama_genai_int4.onnx", "llama_ts_prefill_q2b32s.onnx", FP16_INT4])
def test_corpus_models_build_for_cuda_with_lut_kernels_that_fit(name):
    """The last: the builder's ``-p int4 -e cuda`` graph, float16 activations into LUT kernels."""
    compiled = lutc.build(CORPUS / name, "cuda")
    assert all(d.startswith("lut fast") for d in compiled.decisions.values())
    source = compiled.source("cuda")
    assert "__byte_perm" in source and "__dp4a" in source
    for arch in ("sm_80", "sm_90"):
        kernels = ptxas_report(source, arch)
        lut = {k: r for k, r in kernels.items() if k.startswith("lut_")}
        assert any(k.startswith("lut_matmul") for k in lut)
        precomputes = [k for k in lut if k.startswith("lut_precompute")]
        assert precomputes and all(re.fullmatch(r"lut_precompute\d*_kernel", k) for k in precomputes)  # one launch
        for kernel, used in lut.items():
            assert not used.spills, (arch, kernel)
            assert used.registers <= LUT_LIMITS["registers"], (arch, kernel, used.registers)
            assert used.stack_frame <= LUT_LIMITS["stack_frame"], (arch, kernel)
            assert used.shared_bytes <= LUT_LIMITS["shared_bytes"], (arch, kernel)


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.onnx")), ids=lambda p: p.stem)
def test_every_corpus_model_builds_for_cuda(path):
    compiled = lutc.build(path, "cuda-sm90")
    assert compiled.decisions and all(d.startswith("lut fast") for d in compiled.decisions.values())
    assert "__byte_perm" in compiled.source("cuda")


@pytest.mark.skipif(not NVCC, reason="nvcc is not installed")
def test_norms_feeding_lut_kernels_are_fused_into_the_precompute_on_cuda():
    """The builder's norms feed QKV and gate/up: none is left as a kernel of its own."""
    source = lutc.build(CORPUS / "llama_genai_int4.onnx", "cuda-sm90").source("cuda")
    kernels = re.findall(r"__global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(", source)
    assert kernels and not [k for k in kernels if "rms_norm" in k]
    assert any("lut_precompute" in k for k in kernels)


@pytest.mark.parametrize(("bits", "block", "vector", "load"), [(2, 32, 4, "uint2"), (4, 128, 16, "uint4")])
def test_cuda_builds_make_their_weights_in_the_vector_layout(bits, block, vector, load):
    """``LutcVectorWeights`` turns the packed weight into the vector layout in a lifted weight stage
    (run on this CPU when the weights are made): the model holds exactly ``to_vector_layout`` of it."""
    model, _ = _nbits_model(bits, block)
    compiled = lutc.build(model, "cuda-sm90")
    qw = quantize(random_weights(np.random.default_rng(0), N, K), IntFormat(bits, block))  # _nbits_model's
    expected = to_vector_layout(pack(qw).data, vector)
    (data,) = [w.numpy() for w in compiled.weights.values() if w.ndim == 5]
    np.testing.assert_array_equal(data, expected)
    assert f"*({load}*)(" in compiled.source("cuda")  # 2 planes x 4 bytes; 4 x 16 in 16-byte loads
