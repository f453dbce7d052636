"""The logical ``lut_precompute`` kernel: activations to tables, table scales and group sums.

It reproduces :func:`lutc.quant.lut.precompute` bit for bit: each row is scaled by a power
of two when its largest ``|x|`` is outside ``[2**-60, 2**60]`` (``row_scale`` undoes it), each
entry is summed left to right, full tables append the negated half, and fast mode rounds
``T * (127 / max|T|)`` to nearest-even int8 with one scale per (row, weight group), zero
tables where ``max|T| <= 2**-120``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import te, tirx

from ..quant.lut import DOWN, GROUP_FLOOR, HUGE, INT8_MAX, TINY, UP
from .names import (
    FLOAT_TABLE_BLOCK,
    INVERSE_BLOCK,
    KERNEL_ATTR,
    LUT_SCALE_BLOCK,
    MAXABS_BLOCK,
    NORM_ATTR,
    NORMED_BLOCK,
    PRECOMPUTE_KERNEL,
    ROW_SCALE_BLOCK,
    ROW_UP_BLOCK,
    ROWMAX_BLOCK,
    SKIP_SUM_BLOCK,
    SPEC_ATTR,
    SPEC_TAG_ATTR,
    SUMSQ_BLOCK,
    TABLES,
    XSUM_BLOCK,
)
from .spec import KernelSpec


@dataclass(frozen=True)
class FusedNorm:
    """RMSNorm over K, ``v * rsqrt(sum(v * v) / K + epsilon) * weight`` as TVM's ``rms_norm``
    computes it, where ``v`` is ``x``, or ``x + skip`` with ``skip`` (the sum is recomputed here;
    whoever needs it as a tensor keeps its own add)."""

    epsilon: float
    skip: bool = False

    @property
    def tag(self) -> str:
        return f"rms{self.epsilon:g}" + "_skip" * self.skip

    def reference(self, v: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """The normalized rows of ``v`` (``x``, or ``x + skip`` already summed) in float64,
        rounded to float32: what the kernels' outputs are checked against."""
        v64 = v.astype(np.float64)
        return (v64 / np.sqrt((v64 * v64).mean(-1, keepdims=True) + self.epsilon) * weight).astype(np.float32)


def _normalized(spec: KernelSpec, m_rows, norm: FusedNorm) -> tuple[list[te.Tensor], te.Tensor]:
    """The kernel's inputs (``x``, ``skip`` if any, ``weight``) and the normalized activation."""
    x = te.placeholder((m_rows, spec.k), "float32", "x")
    inputs = [x]
    total = x
    if norm.skip:
        skip = te.placeholder((m_rows, spec.k), "float32", "skip")
        inputs.append(skip)
        total = te.compute(x.shape, lambda m, k: x[m, k] + skip[m, k], name=SKIP_SUM_BLOCK)
    weight = te.placeholder((spec.k,), "float32", "weight")
    k = te.reduce_axis((0, spec.k), "k")
    sumsq = te.compute((m_rows,), lambda m: te.sum(total[m, k] * total[m, k], axis=k), name=SUMSQ_BLOCK)
    mean_eps = lambda m: sumsq[m] / tirx.const(spec.k, "float32") + tirx.const(norm.epsilon, "float32")  # noqa: E731
    normed = te.compute(x.shape, lambda m, k: total[m, k] * tirx.rsqrt(mean_eps(m)) * weight[k], name=NORMED_BLOCK)
    return [*inputs, weight], normed


def _padded(spec: KernelSpec, x: te.Tensor):
    if spec.k_pad == spec.k:
        return lambda m, k: x[m, k]
    zero = tirx.const(0, "float32")
    return lambda m, k: tirx.Select(k < spec.k, x[m, tirx.min(k, spec.k - 1)], zero)


def _row_scales(spec: KernelSpec, m_rows, xp) -> tuple[te.Tensor, te.Tensor]:
    """``(row_scale, row_up)`` per row: ``(1/UP, UP)`` when ``max|x[m]| < TINY``,
    ``(1/DOWN, DOWN)`` above ``HUGE``, else ``(1, 1)``."""
    k = te.reduce_axis((0, spec.k_pad), "k")
    rowmax = te.compute((m_rows,), lambda m: te.max(tirx.abs(xp(m, k)), axis=k), name=ROWMAX_BLOCK)
    f32 = lambda v: tirx.const(v, "float32")  # noqa: E731

    def pick(tiny: float, huge: float):
        return lambda m: tirx.Select(
            rowmax[m] < f32(TINY), f32(tiny), tirx.Select(rowmax[m] > f32(HUGE), f32(huge), f32(1))
        )

    row_scale = te.compute((m_rows,), pick(1 / UP, 1 / DOWN), name=ROW_SCALE_BLOCK)
    return row_scale, te.compute((m_rows,), pick(UP, DOWN), name=ROW_UP_BLOCK)


def _entry(spec: KernelSpec, xp, m, a, e) -> tirx.PrimExpr:
    """``sum_t (2*bit_t(e & 7) - 1) * x[4a + t]`` left to right; entries >= 8 negated."""
    magnitude = tirx.bitwise_and(e, 2 ** (spec.g - 1) - 1)
    value = None
    for t in range(spec.g):
        bit = tirx.bitwise_and(tirx.shift_right(magnitude, t), 1)
        term = xp(m, a * spec.g + t) * tirx.Cast("float32", bit * 2 - 1)
        value = term if value is None else value + term
    if spec.half_tables:
        return value
    return tirx.Select(e < 2 ** (spec.g - 1), value, tirx.const(0, "float32") - value)


def _quantized(spec: KernelSpec, m_rows, table: te.Tensor) -> tuple[te.Tensor, te.Tensor]:
    tables_per_group = spec.group_len // spec.g
    a = te.reduce_axis((0, tables_per_group), "a")
    e = te.reduce_axis((0, spec.entries), "e")
    maxabs = te.compute(
        (m_rows, spec.n_groups),
        lambda m, g: te.max(tirx.abs(table[m, g * tables_per_group + a, e]), axis=[a, e]),
        name=MAXABS_BLOCK,
    )
    limit, zero = tirx.const(INT8_MAX, "float32"), tirx.const(0, "float32")
    lut_scale = te.compute(maxabs.shape, lambda m, g: maxabs[m, g] / limit, name=LUT_SCALE_BLOCK)
    floor = tirx.const(GROUP_FLOOR, "float32")
    inverse = te.compute(
        maxabs.shape, lambda m, g: tirx.Select(maxabs[m, g] > floor, limit / maxabs[m, g], zero), name=INVERSE_BLOCK
    )

    def quantize(m, a, e):
        return tirx.Cast("int8", tirx.nearbyint(table[m, a, e] * inverse[m, a // tables_per_group]))

    return te.compute(table.shape, quantize, name=TABLES), lut_scale


def lut_precompute(spec: KernelSpec, norm: FusedNorm | None = None) -> tirx.PrimFunc:
    """The unscheduled ``lut_precompute`` PrimFunc for ``spec``, tagged ``lutc.kernel``; with
    ``norm``, of the RMSNorm of its inputs (:class:`FusedNorm`)."""
    m_rows = spec.rows()
    if norm is None:
        x = te.placeholder((m_rows, spec.k), "float32", "x")
        inputs = [x]
    else:
        inputs, x = _normalized(spec, m_rows, norm)
    row_scale, row_up = _row_scales(spec, m_rows, _padded(spec, x))
    unscaled = _padded(spec, x)
    xp = lambda m, k: unscaled(m, k) * row_up[m]  # noqa: E731 (powers of two: exact)
    shape = (m_rows, spec.table_groups, spec.entries)
    name = FLOAT_TABLE_BLOCK if spec.mode == "fast" else TABLES
    table = te.compute(shape, lambda m, a, e: _entry(spec, xp, m, a, e), name=name)
    j = te.reduce_axis((0, spec.group_len), "j")
    group_sum = lambda m, g: te.sum(xp(m, g * spec.group_len + j), axis=j)  # noqa: E731
    xsum = te.compute((m_rows, spec.n_groups), group_sum, name=XSUM_BLOCK)
    if spec.mode == "fast":
        tables, lut_scale = _quantized(spec, m_rows, table)
    else:
        tables = table
        lut_scale = te.compute(xsum.shape, lambda m, g: tirx.const(1, "float32"), name=LUT_SCALE_BLOCK)
    func = te.create_prim_func([*inputs, tables, lut_scale, xsum, row_scale]).without_attr(
        "global_symbol"
    )  # named by whoever adds it
    tag = spec.precompute_tag if norm is None else f"{spec.precompute_tag}_{norm.tag}"
    attrs = {KERNEL_ATTR: PRECOMPUTE_KERNEL, SPEC_TAG_ATTR: tag, SPEC_ATTR: spec.as_attr()}
    if norm is not None:
        attrs[NORM_ATTR] = norm.tag
    return func.with_attrs(attrs)
