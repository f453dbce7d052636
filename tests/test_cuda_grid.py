"""The CUDA ``lut_matmul`` grid: K split across blocks, several activation rows a block, and the
defaults chosen from the target's SM count (``schedules/cuda/lut_matmul_cuda.py``).

Correctness of every knob set is the emulator's (``tests/test_cuda_emulated.py``: the bundle's
grid cases) and ptxas' (``tests/test_cuda_kernels.py``); here: the launches TVM's host code
makes, the source's loads, and the arithmetic of the defaults.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import tvm
from lutc.relay_passes.vector_weights import vector_spec
from lutc.schedules import DEFAULT_KNOBS, Knobs, rule_for
from lutc.schedules.cuda import LutMatmulCuda
from lutc.schedules.cuda.base import BLOCKS_PER_SM, EXACT_MAX_ROWS, MIN_WARP_BYTES
from lutc.schedules.cuda.lut_matmul_cuda import Grid, default_k_blocks

from lutc.bench.gpu_bundle import cuda_source, lowered_launches
from lutc.kernels import KernelSpec, lut_matmul
from lutc.quant import IntFormat
from lutc.targets import cuda_sm_count, resolve_target

W2 = IntFormat(2, 32)


def _scheduled(spec: KernelSpec, target, knobs: Knobs = DEFAULT_KNOBS) -> tvm.tirx.PrimFunc:
    func = lut_matmul(spec)
    rule = rule_for(func, target)
    assert isinstance(rule, LutMatmulCuda)
    return rule.apply(func, target, knobs).mod["main"]


@pytest.mark.parametrize("arch", ["sm80", "sm86", "sm90"])
@pytest.mark.parametrize("fmt", [W2, IntFormat(4, 32)], ids=["w2g32", "w4g32"])
def test_default_grid_launches_two_blocks_per_sm_at_one_row(arch, fmt):
    target = resolve_target(f"cuda-{arch}")
    launches = lowered_launches(_scheduled(KernelSpec(1, 4096, 4096, fmt, "fast"), target), target).launches
    main = launches[0]
    blocks = main.grid[0] * main.grid[1] * main.grid[2]
    assert blocks >= BLOCKS_PER_SM * cuda_sm_count(target), main
    assert main.grid[2] > 1  # the K split across blocks is what gets there (32 blocks of 128 rows without it)
    assert len(launches) == 2 and launches[1].grid[2] == 1  # the partial sums' kernel


def test_k_blocks_add_their_partials_in_order_in_a_second_kernel():
    target = resolve_target("cuda-sm90")
    func = _scheduled(KernelSpec(1, 256, 512, W2, "fast"), target, Knobs(pinned=(("k_blocks", 4), ("k_split", 1))))
    lowered = lowered_launches(func, target)
    assert [launch.grid[2] for launch in lowered.launches] == [4, 1]
    assert [info.shape for info in lowered.scratch] == [(4 * 256,)]  # [k_blocks, M, N_pad], flattened
    source = cuda_source(func, target)
    assert "atomic" not in source  # deterministic: a fixed-order loop, no atomics
    assert len(set(re.findall(r"__global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(", source))) == 2


@pytest.mark.parametrize("rows", [2, 4, 8])
def test_a_block_of_several_rows_loads_each_weight_byte_once(rows):
    """M = 16: ``M / rows`` blocks along M, and the source reads ``data`` at one place, the copy of a
    chunk's bytes into registers (``held``) that then index every row's tables."""
    target = resolve_target("cuda-sm90")
    shared = _scheduled(KernelSpec(16, 256, 512, W2, "fast"), target, Knobs(pinned=(("k_blocks", 1), ("rows", rows))))
    assert lowered_launches(shared, target).launches[0].grid[1] == 16 // rows
    source = cuda_source(shared, target)
    assert source.count("data_ptr[") == 1
    assert re.search(r"held_ptr\[[^\]]+\] = data_ptr\[", source)


def test_rows_are_static_m_divisors_and_exact_mode_takes_at_most_two():
    rule, target = LutMatmulCuda(), resolve_target("cuda-sm90")
    choices = lambda spec: rule.structural_choices(lut_matmul(spec), target)["rows"]  # noqa: E731
    assert choices(KernelSpec(None, 256, 512, W2, "fast")) == [1]
    assert choices(KernelSpec(6, 256, 512, W2, "fast")) == [1, 2]
    assert choices(KernelSpec(16, 256, 512, W2, "fast")) == [1, 2, 4, 8]
    assert max(choices(KernelSpec(16, 256, 512, W2, "exact"))) == EXACT_MAX_ROWS
    assert rule.grid(lut_matmul(KernelSpec(16, 256, 512, W2, "exact")), target, Knobs()).rows == 1
    assert rule.grid(lut_matmul(KernelSpec(16, 256, 512, W2, "fast")), target, Knobs()).rows == 4


@pytest.mark.parametrize(
    "spec,sms,expected",
    [
        (KernelSpec(1, 4096, 4096, W2, "fast"), 132, 16),  # 32 blocks: 16 x 32 = 512 >= 264
        (KernelSpec(1, 4096, 4096, W2, "fast"), 108, 8),  # 256 >= 216
        (KernelSpec(1, 11008, 4096, W2, "fast"), 132, 4),  # 86 blocks: 344 >= 264
        (KernelSpec(1, 4096, 11008, W2, "fast"), 132, 2),  # 344 groups = 8 x 43: 2 blocks of 43 per warp
        (KernelSpec(1, 4096, 4096, IntFormat(4, 128), "fast"), 132, 8),  # 32 groups of 16 bytes: 1 a warp
        (KernelSpec(16, 4096, 4096, W2, "fast"), 132, 4),  # 4 rows a block: 32 x 4 blocks along M
        (KernelSpec(None, 4096, 4096, W2, "fast"), 132, 1),  # a dynamic M is a prompt's
    ],
    ids=lambda v: v.tag if isinstance(v, KernelSpec) else str(v),
)
def test_default_k_blocks_come_from_the_sm_count(spec, sms, expected):
    rows = 4 if spec.m == 16 else 1
    k_blocks = default_k_blocks(spec, 4, 4, rows, sms)
    assert k_blocks == expected
    if spec.m is not None and k_blocks > 1:
        assert spec.n_groups // (k_blocks * 4) * spec.group_bytes >= MIN_WARP_BYTES


def test_pinned_knobs_are_made_to_fit():
    """A pinned K block count that does not divide the groups with the K split is lowered; so are
    rows whose tables would overflow a stage of shared memory."""
    rule, target = LutMatmulCuda(), resolve_target("cuda-sm90")
    func = lut_matmul(KernelSpec(1, 256, 512, W2, "fast"))  # 16 groups
    assert rule.grid(func, target, Knobs(pinned=(("k_blocks", 16), ("k_split", 4)))) == Grid(4, 4, 4, 4, 1)
    wide = lut_matmul(KernelSpec(16, 256, 512, IntFormat(2, 32), "fast"))
    grid = rule.grid(wide, target, Knobs(pinned=(("rows", 8), ("chunk", 8), ("k_split", 4))))
    assert grid.rows * grid.chunk * grid.k_split * 2 * 16 <= 16 * 1024


# ---- the vector layout -------------------------------------------------------------------------


def test_vector_specs_name_their_layout_and_cpu_specs_are_unchanged():
    spec = KernelSpec(1, 256, 512, W2, "fast")
    assert "vector" not in spec.as_attr()  # CPU kernels, and so their tuning records, as before
    vector = vector_spec(spec)
    assert vector.vector == 4 and vector.tag.endswith("_v4")
    assert KernelSpec.from_attr(vector.as_attr()) == vector
    assert vector.weight_types()["data"][0] == (8, 512 // 8 // 4, 32, 2, 4)
    with pytest.raises(ValueError, match="vector=8"):
        dataclasses.replace(spec, vector=8)  # 4-byte groups


@pytest.mark.parametrize(
    ("fmt", "load"),
    [(IntFormat(4, 32), "uint4"), (W2, "uint2"), (IntFormat(2, 128), "uint4"), (IntFormat(3, 64), "uint2")],
    ids=["w4g32", "w2g32", "w2g128", "w3g64"],
)
def test_vector_layout_kernels_load_each_rows_bytes_at_once(fmt, load):
    """A thread copies its row's bytes of a stage into registers with ``uint4``/``uint2`` loads (w4g32:
    the 16 bytes of 4 planes x 4 K bytes at once, a warp 512 contiguous bytes), and reads no weight
    byte elsewhere."""
    target = resolve_target("cuda-sm90")
    source = cuda_source(_scheduled(vector_spec(KernelSpec(1, 256, 512, fmt, "fast")), target), target)
    loads = [line for line in source.splitlines() if "data_ptr +" in line]
    assert loads and all(f"= *({load}*)(data_ptr + " in line for line in loads), loads
    assert "data_ptr[" not in source


def test_groups_of_an_odd_byte_count_keep_the_tile_layout():
    """Per-channel K = 500 pads to 504 elements, 63 bytes: no vector width divides them, so
    ``LutcVectorWeights`` leaves such a call as it is (no CUDA lookup chunk divides them either)."""
    spec = KernelSpec(1, 256, 500, IntFormat(2, "channel"), "fast")
    assert spec.group_bytes == 63 and vector_spec(spec) is spec
    assert not LutMatmulCuda().applies(lut_matmul(spec), resolve_target("cuda-sm90"))
