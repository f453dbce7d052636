"""The LUT mpGEMM reference: the numerics every lutc kernel reproduces.

Write a ``b``-bit code as ``q = sum_i 2**(i-1) * t_i + (2**b - 1) / 2`` with ``t_i = 2*c_i - 1``
in {-1, +1} (``c_i`` is bit ``i``). A group of ``G`` K-elements with scale ``s`` and zero point
``z`` then contributes

    y += s * sum_i 2**(i-1) * sum_a T[a, j_{i,a}]  +  s * ((2**b - 1) / 2 - z) * sum_k x_k

where ``T[a, j]`` is the table of activation group ``a`` (``g`` elements) and ``j_{i,a}`` the
plane-``i`` index of that group (see :mod:`lutc.quant.layout`). The second term is the
``offsets`` array of the packed layout times the group's activation sum ``xsum``.

**Exact mode** keeps float32 tables. Per group the kernel computes
``W = sum_i 2**i * A_i`` with ``A_i = sum_a T[a, j_{i,a}]`` and adds
``scales * (0.5 * W) + offsets * xsum``; the result equals ``x @ dequantize(W).T`` up to
float32 rounding (:func:`exact_error_bound`).

**Fast mode** rounds the tables of each (row of x, weight group) to int8 with one scale
``ls = max|T| / 127``: ``Tq = rint(T * (127 / max|T|))``. Lookups and the bit-plane sum
``W = sum_i 2**i * sum_a Tq[a, j]`` are exact integer arithmetic (int32 suffices: at most
``K/g * 127 * (2**b - 1)``), so any kernel summation order gives the same ``W``. The group
then adds ``scales * (ls * (0.5 * W)) + offsets * xsum``. (Compiled fast-mode kernels for more
than one row fold a (row, group)'s scalars first and apply the row scale to the group sum, the
same up to float32 rounding: ``lutc.kernels.matmul.folds_epilogue``.)

**Row scaling** keeps every intermediate normal and finite for any finite activations. A row
whose largest ``|x|`` is below ``2**-60`` is multiplied by ``2**100`` before its tables are
built, one above ``2**60`` by ``2**-64``; the output row is multiplied back by ``row_scale``
(``2**-100``, ``2**64`` or 1). Powers of two scale exactly, so rows in the normal range are
unchanged bit for bit, and subnormal or near-overflow rows are computed at full float32
precision instead of overflowing (``127 / max|T|``, table sums) or losing their table scale
to subnormal rounding. After scaling a nonzero row's largest ``|x|`` is at least ``2**-49``;
in fast mode a weight group whose ``max|T|`` is at most ``2**-120`` (``2**-71`` of the row's
largest entry, where ``127 / max|T|`` would overflow) gets zero tables.

*Fast-mode error bound.* Each rounded entry is off by at most ``ls / 2``. A group looks up
``G / g`` entries per plane, weighted ``2**(i-1)``, so against exact mode

    |y_fast - y_exact| <= sum_groups |s| * ls * (2**b - 1) * G / (4 * g)

(ternary: ``b = 2``). Since ``ls <= g * max|x| / 127``, this is at most
``sum |s| * (2**b - 1) * G * max|x| / 508`` — about 0.2 % of the largest possible
``|s| * sum|x|`` per plane step. :func:`fast_error_bound` evaluates it from the actual
``ls``; the tests check it holds.

**Symmetrization** keeps ``2**(g-1)`` entries per table and recovers ``T[j] = -T[~j]`` from
the index sign bit. Negation is exact in floating point and rounding is odd-symmetric, so
symmetrized and full tables give bit-identical results in both modes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .layout import PackedWeight, check_g, untile

Mode = Literal["exact", "fast"]
INT8_MAX = 127
TINY, UP = 2.0**-60, 2.0**100
"""Rows whose largest ``|x|`` is below ``TINY`` are multiplied by ``UP``."""
HUGE, DOWN = 2.0**60, 2.0**-64
"""Rows whose largest ``|x|`` is above ``HUGE`` are multiplied by ``DOWN``."""
GROUP_FLOOR = 2.0**-120
"""Fast mode: a (row, group) whose ``max|T|`` is at most this gets zero tables."""


@dataclass(frozen=True)
class LutConfig:
    """How activations become tables: group width ``g``, mode, and ``half_tables`` (table
    symmetrization: store ``2**(g-1)`` entries and take the sign from the index)."""

    g: int = 4
    mode: Mode = "exact"
    half_tables: bool = False

    def __post_init__(self) -> None:
        check_g(self.g)
        if self.mode not in ("exact", "fast"):
            raise ValueError(f"mode must be 'exact' or 'fast'; got {self.mode!r}")

    @property
    def entries(self) -> int:
        """Stored entries per table."""
        return 2 ** (self.g - 1) if self.half_tables else 2**self.g


@dataclass(frozen=True, eq=False)
class Tables:
    """Precomputed tables for activations ``x[M, K]``.

    - ``values``: ``[M, K_pad / g, entries]``, float32 (exact) or int8 (fast), indexed by the
      stored sign-magnitude index ``p`` (full tables) or its magnitude (symmetrized);
    - ``lut_scale``: float32 ``[M, n_groups]`` (fast; ones in exact mode);
    - ``xsum``: float32 ``[M, n_groups]``, the activation sum per weight group;
    - ``row_scale``: float32 ``[M]``, the power of two each output row is multiplied by
      (module docstring, *Row scaling*); tables, ``lut_scale`` and ``xsum`` are of the scaled row.
    """

    config: LutConfig
    group_len: int
    values: np.ndarray
    lut_scale: np.ndarray
    xsum: np.ndarray
    row_scale: np.ndarray


def sign_matrix(g: int, entries: int) -> np.ndarray:
    """float32 ``[entries, g]``: row ``j`` holds ``2*bit_t(j) - 1``."""
    j = np.arange(entries)[:, None]
    return (2 * ((j >> np.arange(g)) & 1) - 1).astype(np.float32)


def _table_values(groups: np.ndarray, config: LutConfig) -> np.ndarray:
    """Float tables ``[M, A, entries]`` in sign-magnitude index order.

    Entry ``m < 2**(g-1)`` is ``T[m]``, summed left to right in float32; full tables append
    the negations, so entry ``p`` of a full table is ``T[j]`` for the raw index ``j`` that
    ``p`` encodes (:func:`~lutc.quant.layout.decode_indices`).
    """
    signs = sign_matrix(config.g, 2 ** (config.g - 1))
    values = groups[..., None, 0] * signs[:, 0]
    for t in range(1, config.g):
        values = values + groups[..., None, t] * signs[:, t]
    values = values.astype(np.float32)
    return values if config.half_tables else np.concatenate([values, -values], axis=-1)


def _pad_activations(x: np.ndarray, k_pad: int) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.dtype != np.float32:
        raise ValueError(f"activations must be float32 [M, K]; got shape {x.shape} dtype {x.dtype}")
    if x.shape[1] > k_pad:
        raise ValueError(f"activations have K={x.shape[1]}, more than the weight's {k_pad}")
    return np.pad(x, ((0, 0), (0, k_pad - x.shape[1])))


def row_scales(x: np.ndarray) -> np.ndarray:
    """float32 ``[M]``: ``1 / UP`` for rows with ``max|x| < TINY``, ``1 / DOWN`` above ``HUGE``, else 1."""
    rowmax = np.abs(x).max(axis=-1) if x.shape[-1] else np.zeros(x.shape[0], np.float32)
    return np.where(rowmax < TINY, 1 / UP, np.where(rowmax > HUGE, 1 / DOWN, 1.0)).astype(np.float32)


def _quantize_tables(values: np.ndarray, group_len: int, g: int) -> tuple[np.ndarray, np.ndarray]:
    m, a, entries = values.shape
    per_group = values.reshape(m, -1, (group_len // g) * entries)
    maxabs = np.abs(per_group).max(axis=-1)
    inv = np.divide(np.float32(INT8_MAX), maxabs, out=np.zeros_like(maxabs), where=maxabs > GROUP_FLOOR)
    # A NaN or inf activation makes its group's xsum NaN or inf, which the output keeps; the
    # int8 tables of such a group are unspecified (0 here).
    with np.errstate(invalid="ignore"):
        scaled = np.nan_to_num(np.rint(per_group * inv[..., None]), nan=0.0)
    quantized = scaled.astype(np.int8).reshape(m, a, entries)
    return quantized, (maxabs / np.float32(INT8_MAX)).astype(np.float32)


def precompute(x: np.ndarray, group_len: int, config: LutConfig, k_pad: int | None = None) -> Tables:
    """Tables, table scales and activation sums for float32 ``x[M, K]``.

    ``group_len`` is the weight group length (``PackedWeight.group_len``); ``k_pad`` pads K
    with zeros for per-channel formats whose K is not a multiple of 8.
    """
    x = _pad_activations(x, x.shape[1] if k_pad is None else k_pad)
    m, k = x.shape
    if group_len % config.g or k % group_len:
        raise ValueError(f"group length {group_len} must be a multiple of g={config.g} and divide K={k}")
    row_scale = row_scales(x)
    x = x * (np.float32(1) / row_scale)[:, None]
    values = _table_values(x.reshape(m, k // config.g, config.g), config)
    xsum = x.reshape(m, k // group_len, group_len).sum(axis=-1, dtype=np.float32)
    if config.mode == "exact":
        return Tables(config, group_len, values, np.ones_like(xsum), xsum, row_scale)
    quantized, lut_scale = _quantize_tables(values, group_len, config.g)
    return Tables(config, group_len, quantized, lut_scale, xsum, row_scale)


def _lookup(tables: Tables, indices: np.ndarray, row: int) -> np.ndarray:
    """Table entries for sign-magnitude ``indices[N, A]`` and activation row ``row``."""
    g = tables.config.g
    table = tables.values[row]
    groups = np.arange(table.shape[0])
    if not tables.config.half_tables:
        return table[groups, indices]
    magnitude = table[groups, indices & ((1 << (g - 1)) - 1)]
    return np.where(indices >> (g - 1) == 1, -magnitude, magnitude)


def _plane_sums(tables: Tables, pw: PackedWeight, row: int) -> np.ndarray:
    """``W = sum_i 2**i * A_i`` per ``[N_pad, n_groups]`` (int32 in fast mode)."""
    fast = tables.config.mode == "fast"
    acc_dtype = np.int32 if fast else np.float32
    per_group = tables.group_len // tables.config.g
    weighted = None
    for plane, indices in enumerate(pw.indices()):
        looked_up = _lookup(tables, indices, row).astype(acc_dtype)
        sums = looked_up.reshape(pw.n_pad, -1, per_group).sum(axis=-1, dtype=acc_dtype)
        term = sums * acc_dtype(2**plane)
        weighted = term if weighted is None else weighted + term
    return weighted


def _untiled(arr: np.ndarray) -> np.ndarray:
    """``[tiles, n_groups, 32]`` -> float32 ``[N_pad, n_groups]``."""
    return untile(arr).astype(np.float32)


def lut_matmul(tables: Tables, pw: PackedWeight, bias: np.ndarray | None = None) -> np.ndarray:
    """float32 ``[M, N]`` output from tables and a packed weight, with the kernels' numerics."""
    if tables.group_len != pw.group_len or tables.config.g != pw.g:
        raise ValueError(
            f"tables (g={tables.config.g}, group {tables.group_len}) do not fit the weight "
            f"(g={pw.g}, group {pw.group_len})"
        )
    scales, offsets = _untiled(pw.scales), _untiled(pw.offset_values())
    out = np.zeros((tables.values.shape[0], pw.n_pad), np.float32)
    for row in range(out.shape[0]):
        weighted = _plane_sums(tables, pw, row).astype(np.float32)
        lut_scale, xsum = tables.lut_scale[row], tables.xsum[row]
        parts = (scales * (lut_scale * (np.float32(0.5) * weighted)) + offsets * xsum) * tables.row_scale[row]
        out[row] = parts.sum(axis=-1, dtype=np.float32)
    out = out[:, : pw.n]
    return out if bias is None else out + np.asarray(bias, np.float32)


def lut_gemm(x: np.ndarray, pw: PackedWeight, config: LutConfig, bias: np.ndarray | None = None) -> np.ndarray:
    """``x @ W.T (+ bias)`` by the LUT algorithm: precompute, then lookups."""
    if config.g != pw.g:
        raise ValueError(f"config g={config.g} differs from the weight's packing g={pw.g}")
    tables = precompute(x, pw.group_len, config, k_pad=pw.k_pad)
    return lut_matmul(tables, pw, bias)


def fast_error_bound(tables: Tables, pw: PackedWeight) -> np.ndarray:
    """Worst-case ``|fast - exact|`` per output ``[M, N]`` (module docstring)."""
    per_group = (2**pw.planes - 1) * tables.group_len / (4 * tables.config.g)
    abs_scales = np.abs(_untiled(pw.scales))[: pw.n].astype(np.float64)
    lut_scale = tables.lut_scale.astype(np.float64)
    zeroed = lut_scale * INT8_MAX <= 2 * GROUP_FLOOR  # zero tables: each entry is off by up to 127 ls, not ls/2
    step_error = lut_scale * np.where(zeroed, 2 * INT8_MAX, 1) * tables.row_scale.astype(np.float64)[:, None]
    return (step_error * per_group) @ abs_scales.T


def exact_error_bound(x: np.ndarray, pw: PackedWeight) -> np.ndarray:
    """A float32 rounding bound for exact mode against exact real arithmetic, ``[M, N]``.

    Every intermediate is bounded by ``|s| * (sum_i 2**(i-1) + |(2**b-1)/2 - z|) * sum|x|``
    per group; the longest chain of float32 additions is under ``g + K/g + planes +
    n_groups + 8`` operations, each adding at most one unit roundoff relative error
    (Higham's ``gamma_n``), and we allow a factor 2 for the products.
    """
    half_range = (2**pw.planes - 1) / 2
    scales = np.abs(_untiled(pw.scales))[: pw.n].astype(np.float64)
    zero_term = np.abs(_untiled(pw.offset_values()))[: pw.n].astype(np.float64)
    magnitude_per_group = scales * half_range + zero_term
    k_pad = pw.k_pad
    absx = np.abs(_pad_activations(x, k_pad).astype(np.float64))
    group_abs = absx.reshape(absx.shape[0], -1, pw.group_len).sum(-1)
    chain = pw.g + k_pad // pw.g + pw.planes + group_abs.shape[1] + 8
    return 2 * chain * np.finfo(np.float32).eps * (group_abs @ magnitude_per_group.T)
