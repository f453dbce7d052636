"""``lut_matmul`` on x86 with AVX2: the CPU rule template with ``vpshufb`` micro-kernels."""

from __future__ import annotations

from ...kernels.spec import KernelSpec
from ..cpu.lut_matmul_rule import CpuLutMatmulRule
from ..hw import AVX2_MAX_EXACT_CHUNK, INT16_PLANE_GROUP, max_int16_chunk
from .avx2_intrin import avx2_intrin, lanes_fit
from .base import has_avx2


class LutMatmulAVX2(CpuLutMatmulRule):
    """Fast mode: ``vpshufb`` + ``vpmaddubsw`` into int16; exact mode: ``vpermps`` float lookups."""

    prefetches = True
    """Measured on a 2-core EPYC (Zen 3; M = 1, fast mode, cold weights, 1 thread; 4096x4096,
    2048x8192, 8192x2048): prefetching 1 KiB ahead made 1-bit GEMVs 1.02-1.06x, 2-bit 1.07-1.10x,
    3-bit 1.00-1.05x, 4-bit 1.02-1.07x and 8-bit 0.99-1.05x as fast: on by default."""

    rows_inside_kernel = True
    """Rows inside groups take :func:`~.avx2_intrin.lanes_impl` where it fits (fast mode, 2, 4, 6
    or 8 planes, one chunk per group). Measured on a 2-core EPYC (Zen 3), interleaved with the
    one-row kernel: the 1 B builder model's 16-token prompt 317 against 370 ms on 1 thread and
    174 against 192 ms on 2; its 128-token prompt 2316 against 2605 ms and 1215 against 1371 ms;
    4096 x 4096 4-bit at M = 16 5.52 against 5.76 ms."""

    def is_target_available(self, target) -> bool:
        return has_avx2(target)

    def intrin(self, spec: KernelSpec, chunk: int, prefetch: bool = False, rows_inside: bool = False) -> str:
        return avx2_intrin(spec, chunk, prefetch, rows_inside and lanes_fit(spec, chunk, spec.group_bytes))

    def default_m_inner(self, spec: KernelSpec) -> int:
        """Rows inside groups (each group's weights stay in L1 for every row) unless M is 1.

        Measured on a 2-core EPYC (Zen 3; dynamic M, 1 thread, hot weights; K x N 2048 x 3072,
        2048 x 8192, 8192 x 2048, 2048 x 49152): at M = 4, 16 and 64 rows inside groups were
        1.10-1.26x as fast at 2 and 4 bits in fast mode and 1.17-1.29x in exact mode; at M = 1
        0.86-0.99x, so a static M = 1 (the decode step) keeps rows outside, with the prefetch.
        """
        return 0 if spec.m == 1 else 1

    def max_chunk(self, spec: KernelSpec) -> int:
        """Fast mode: the int16 budget of the planes; exact mode: a register-pressure cap."""
        return max_int16_chunk(spec.planes) if spec.mode == "fast" else AVX2_MAX_EXACT_CHUNK

    def defaults(self, spec: KernelSpec) -> tuple[int, int]:
        """Measured on a 2-core EPYC (M = 1, 4096 x 4096, hot and cold weights).

        Fast mode: 1-2 planes run best with 8-byte chunks and an unrolled chunk loop; 3 planes
        with 2-byte and 4 planes with 4-byte chunks, not unrolled (unrolled 3-4 bit chunk loops
        streamed cold weights at a quarter of the bandwidth). Exact mode spills registers beyond
        2 bytes. Codes of 5-8 bits (two int16 chains) run best with 2-byte chunks, not unrolled
        (Zen 3, M = 1, cold, 1 thread: 8-bit 49152 x 576 1910 against 2844 us with 4-byte chunks,
        4096 x 4096 1144 against 1606; 6-bit 888 against 1193, 5-bit 815 against 1280 (8-byte);
        dynamic M = 16, 8-bit: 12.9 against 13.8 ms).
        """
        if spec.mode == "exact":
            return 2, 16
        if spec.planes > INT16_PLANE_GROUP:
            return 2, 0
        return {1: (8, 16), 2: (8, 16), 3: (2, 0)}.get(spec.planes, (4, 0))
