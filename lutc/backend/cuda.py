"""The CUDA backend: its phases after the LUT rewrite and the tuning log (``phases``, by name,
in the order they run), its device, its tuning tag and what a machine needs to run its code.

1. ``schedule_passes``: ``lut_matmul`` weights in the vector layout (``LutcVectorWeights``: a
   thread loads its row's bytes 16 at a time), then the LUT kernels scheduled with
   ``lutc.schedules`` (the rules of ``schedules/cuda``);
2. ``legalize_passes``: TVM's CUDA library dispatch, legalization and fusion, with shape
   kernels kept out of fused groups (as on the CPU);
3. ``default_schedule_passes``: dlight's GPU rules for every other kernel (a kernel no rule
   takes fails the build: GPU kernels need their loops bound to threads);
4. ``lift_passes`` (before legalization) and ``weight_passes``: weight preprocessing lifted out
   of ``main`` (as on the CPU);
5. ``lower_passes``: TVM's CUDA dataflow lowering and VM finalization.

The model's weights are copied to device memory once when it loads; there are no huge pages.
"""

from __future__ import annotations

import tvm
from tvm.relax.backend.cuda import pipeline as cuda_pipeline
from tvm.target import Target

from ..relay_passes import LutcApplyDefaultSchedules, LutcLiftWeights, LutcScheduleKernels, LutcVectorWeights
from ..targets import compute_capability
from .legalize import legalize_and_fuse

KINDS = ("cuda",)
CAN_TUNE = False
"""``lutc.tune`` does not tune for GPUs yet: the rules' defaults are what builds use."""
HUGE_PAGES = False


def schedule_passes(target: Target) -> list[tvm.transform.Pass]:
    """``lut_matmul`` weights in the vector layout (16-byte loads), then the LUT kernels' default schedules."""
    return [LutcVectorWeights(), LutcScheduleKernels(target)]


def legalize_passes(target: Target) -> list[tvm.transform.Pass]:
    return legalize_and_fuse(cuda_pipeline.library_dispatch_passes(target))


def gpu_rules() -> tuple:
    """dlight's GPU rules, most specific first (TVM's own CUDA pipeline's list)."""
    from tvm.s_tir import dlight

    gpu = dlight.gpu
    return (gpu.Matmul(), gpu.GEMV(), gpu.Reduction(), gpu.GeneralReduction(), gpu.Fallback())


def default_schedule_passes(target: Target) -> list[tvm.transform.Pass]:
    return [LutcApplyDefaultSchedules(gpu_rules())]


def lift_passes() -> list[tvm.transform.Pass]:
    """Weight preprocessing lifted out of ``main`` before legalization (a transposed weight stays a weight)."""
    return [LutcLiftWeights()]


def weight_passes() -> list[tvm.transform.Pass]:
    """The default schedules' weight rewrites lifted out of ``main``."""
    return [LutcLiftWeights()]


def lower_passes(target: Target) -> list[tvm.transform.Pass]:
    return cuda_pipeline.dataflow_lower_passes(target) + cuda_pipeline.finalize_passes(target)


def phases(target: Target) -> dict[str, list[tvm.transform.Pass]]:
    """Every phase after the LUT rewrite and the tuning log (:func:`lutc.pipeline.phases`), by name, in order."""
    return {
        "schedule": schedule_passes(target),
        "lift": lift_passes(),
        "legalize": legalize_passes(target),
        "default_schedule": default_schedule_passes(target),
        "weights": weight_passes(),
        "lower": lower_passes(target),
    }


def device(_target: Target, session=None) -> tvm.runtime.Device:
    return tvm.cuda(0) if session is None else session.cuda(0)


def arch(target: Target) -> str:
    """``sm_80``, ``sm_90``, ...: the target's ``arch``."""
    return str(target.attrs.get("arch", "") or "sm_50")


def level(target: Target) -> str:
    """What the code needs, in words: ``cuda-sm_90``."""
    return f"cuda-{arch(target)}"


def tuning_tag(target: Target) -> str:
    """``cuda-sm_90``: kernels tuned for one GPU architecture."""
    return level(target)


def missing_on_host(target: Target) -> list[str]:
    """Empty when this machine has a CUDA GPU of at least the target's architecture."""
    gpu = tvm.cuda(0)
    if not gpu.exist:
        return ["an NVIDIA GPU with a CUDA driver (none is visible here)"]
    want = compute_capability(arch(target))
    if compute_capability(gpu.compute_version) < want:
        return [f"a GPU of compute capability {want // 10}.{want % 10} or newer (this one is {gpu.compute_version})"]
    return []
