"""The template of every CPU ``lut_matmul`` rule: the shared loop schedule around one micro-kernel.

A rule for an ISA is a subclass that gives only what differs: the micro-kernel
(:meth:`CpuLutMatmulRule.intrin`), the largest chunk it takes (:meth:`max_chunk`, and
:meth:`chunk_fits` where a micro-kernel takes only some chunk sizes) and its measured defaults
(:meth:`defaults`), plus :meth:`is_target_available`. ``schedule``, ``structural_choices`` and
``register_intrinsics`` are written once here, from the same answers, so they always agree (a
tuned trace replays only when they do). A kernel no chunk fits is left to the next rule.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from ...kernels.matmul import MATMUL_KERNEL
from ...kernels.spec import KernelSpec
from ..base import Knobs
from .base import CpuRule
from .matmul_loops import (
    DEFAULT_M_INNER,
    chunk_candidates,
    register_chunk_intrinsics,
    schedule_lut_matmul,
    structural_choices,
)


class CpuLutMatmulRule(CpuRule):
    """``lut_matmul`` with :func:`~.matmul_loops.schedule_lut_matmul` and a micro-kernel per chunk."""

    kernel = MATMUL_KERNEL
    prefetches = False
    """Whether :meth:`intrin` takes ``prefetch=True`` (prefetch the weight stream ahead)."""
    rows_inside_kernel = False
    """Whether :meth:`intrin` takes ``rows_inside=True`` (a micro-kernel for rows inside groups)."""

    def intrin(self, spec: KernelSpec, chunk: int) -> str:
        """Register (once) and name the micro-kernel covering ``chunk`` K bytes of ``spec``
        (a rule with :meth:`row_counts` takes ``rows`` too)."""
        raise NotImplementedError

    def max_chunk(self, spec: KernelSpec) -> int:
        """The most K bytes one micro-kernel call may cover (accumulator range, registers)."""
        raise NotImplementedError

    def chunk_fits(self, spec: KernelSpec, chunk: int) -> bool:
        """Whether the micro-kernel takes ``chunk`` bytes of ``spec`` (all sizes by default)."""
        return True

    def defaults(self, spec: KernelSpec) -> tuple[int, int]:
        """``(chunk, unroll)`` of the untuned schedule: the measured best for this ISA."""
        raise NotImplementedError

    def row_counts(self, spec: KernelSpec) -> tuple[int, ...]:
        """Activation rows one micro-kernel call may take (several: ``intrin(spec, chunk, rows)``)."""
        return (1,)

    def preferred_rows(self, spec: KernelSpec) -> int:
        """The untuned row count (one of :meth:`row_counts`)."""
        return 1

    def default_m_inner(self, spec: KernelSpec) -> int:
        """The untuned loop order for M > 1: 0 rows outside groups, 1 rows inside."""
        return DEFAULT_M_INNER

    def chunks(self, spec: KernelSpec) -> list[int]:
        """The chunk sizes a schedule of ``spec`` may use."""
        return [c for c in chunk_candidates(spec, self.max_chunk(spec)) if self.chunk_fits(spec, c)]

    def applies(self, func: tirx.PrimFunc, target: Target) -> bool:
        return super().applies(func, target) and bool(self.chunks(KernelSpec.from_func(func)))

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, target: Target, knobs: Knobs) -> None:
        spec = KernelSpec.from_func(func)
        chunk, unroll = self.defaults(spec)
        schedule_lut_matmul(
            sch, spec, self.chunks(spec), chunk, self.intrin, knobs, unroll,
            self.row_counts(spec), self.preferred_rows(spec), self.default_m_inner(spec), self.prefetches,
            self.rows_inside_kernel,
        )  # fmt: skip

    def structural_choices(self, func: tirx.PrimFunc, target: Target) -> dict[str, list[int]]:
        spec = KernelSpec.from_func(func)
        return structural_choices(spec, self.chunks(spec), self.row_counts(spec), self.prefetches)

    def register_intrinsics(self, func: tirx.PrimFunc, target: Target) -> None:
        spec = KernelSpec.from_func(func)
        register_chunk_intrinsics(
            spec, self.chunks(spec), self.intrin, self.row_counts(spec), self.prefetches, self.rows_inside_kernel
        )
