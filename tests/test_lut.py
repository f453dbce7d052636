"""The numpy LUT reference against dequantize-then-matmul, in exact and fast mode."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import all_formats, k_for, random_weights
from hypothesis import given
from hypothesis import strategies as st

from lutc.quant import (
    IntFormat,
    LutConfig,
    QuantizedWeight,
    TernaryFormat,
    dequantize,
    exact_error_bound,
    fast_error_bound,
    lut_gemm,
    lut_matmul,
    pack,
    precompute,
    quantize,
    reference_matmul,
)
from lutc.quant.layout import decode_indices
from lutc.quant.lut import sign_matrix

FORMATS = all_formats()


def _case(seed: int, m: int, n: int, k: int, fmt, g: int = 4):
    rng = np.random.default_rng(seed)
    qw = quantize(random_weights(rng, n, k), fmt)
    x = rng.standard_normal((m, k)).astype(np.float32)
    return x, qw, pack(qw, g)


@given(
    m=st.integers(1, 5),
    n=st.integers(1, 70),
    groups=st.integers(1, 3),
    channel_k=st.integers(1, 300),
    fmt=st.sampled_from(FORMATS),
    g=st.sampled_from([1, 2, 4, 8]),
    half_tables=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_exact_mode_is_dequantize_then_matmul(m, n, groups, channel_k, fmt, g, half_tables, seed):
    """Exact mode differs from real arithmetic by float32 rounding only.

    The tolerance is ``exact_error_bound``: a gamma_n rounding bound over the longest chain of
    float32 operations, scaled by the magnitudes the intermediates can reach.
    """
    k = k_for(fmt, groups, channel_k)
    x, qw, pw = _case(seed, m, n, k, fmt, g)
    bias = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    y = lut_gemm(x, pw, LutConfig(g, "exact", half_tables), bias)
    assert y.shape == (m, n) and y.dtype == np.float32
    error = np.abs(y - reference_matmul(x, qw, bias))
    assert np.all(error <= exact_error_bound(x, pw) + np.abs(bias) * np.finfo(np.float32).eps)


@given(
    m=st.integers(1, 4),
    n=st.integers(1, 64),
    groups=st.integers(1, 3),
    fmt=st.sampled_from(FORMATS),
    half_tables=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fast_mode_stays_within_its_documented_bound(m, n, groups, fmt, half_tables, seed):
    """|fast - exact| <= sum |s| * ls * (2**b - 1) * G / (4g), plus exact mode's own rounding."""
    x, qw, pw = _case(seed, m, n, k_for(fmt, groups, 96), fmt)
    config = LutConfig(4, "fast", half_tables)
    tables = precompute(x, pw.group_len, config, k_pad=pw.k_pad)
    fast = lut_matmul(tables, pw)
    error = np.abs(fast - reference_matmul(x, qw))
    assert np.all(error <= fast_error_bound(tables, pw) + 2 * exact_error_bound(x, pw))


def test_fast_mode_error_is_real_and_well_inside_the_bound():
    """The bound is not vacuous: fast mode does round, and typically uses a fraction of it."""
    x, qw, pw = _case(7, 4, 256, 4096, IntFormat(2, 128))
    tables = precompute(x, pw.group_len, LutConfig(mode="fast"))
    error = np.abs(lut_matmul(tables, pw) - reference_matmul(x, qw))
    bound = fast_error_bound(tables, pw)
    assert error.max() > 1e-3 * bound.max()
    assert np.all(error <= bound)
    assert np.median(error / bound) < 0.25
    # Measured ~0.9 % here: each lookup is off by up to ls/2 while a table entry's typical size
    # is ~ls*127/(2*sqrt(g)*3); small next to the ~40 % error of 2-bit weights themselves.
    relative = np.linalg.norm(error) / np.linalg.norm(reference_matmul(x, qw))
    assert relative < 2e-2


@pytest.mark.parametrize("mode", ["exact", "fast"])
@pytest.mark.parametrize(
    "fmt", [IntFormat(2, 32), IntFormat(3, "channel", symmetric=False), TernaryFormat(64)], ids=str
)
def test_symmetrized_tables_give_bit_identical_results(mode, fmt):
    x, _, pw = _case(3, 3, 40, 192, fmt)
    full = lut_gemm(x, pw, LutConfig(4, mode, half_tables=False))
    half = lut_gemm(x, pw, LutConfig(4, mode, half_tables=True))
    np.testing.assert_array_equal(full, half)


@pytest.mark.parametrize("g", [1, 2, 4, 8])
def test_tables_hold_every_signed_sum_in_sign_magnitude_order(g):
    """Full-table entry p is T[j] for the raw index j that p encodes; T[~j] = -T[j]."""
    x = np.random.default_rng(g).standard_normal((2, 16)).astype(np.float32)
    tables = precompute(x, 16, LutConfig(g))
    assert tables.values.shape == (2, 16 // g, 2**g)
    by_raw_index = x.reshape(2, -1, g).astype(np.float64) @ sign_matrix(g, 2**g).T.astype(np.float64)
    raw = decode_indices(np.arange(2**g, dtype=np.uint8), g)
    np.testing.assert_allclose(tables.values, by_raw_index[..., raw], rtol=1e-6, atol=1e-6)
    half = 2 ** (g - 1)
    np.testing.assert_array_equal(tables.values[..., half:], -tables.values[..., :half])
    symmetrized = precompute(x, 16, LutConfig(g, half_tables=True))
    np.testing.assert_array_equal(symmetrized.values, tables.values[..., :half])


def test_fast_tables_are_int8_with_one_scale_per_weight_group():
    x = np.random.default_rng(0).standard_normal((3, 256)).astype(np.float32)
    tables = precompute(x, 64, LutConfig(mode="fast"))
    assert tables.values.dtype == np.int8 and tables.lut_scale.shape == (3, 4)
    per_group = np.abs(tables.values.reshape(3, 4, -1)).max(-1)
    np.testing.assert_array_equal(per_group, 127)
    np.testing.assert_allclose(tables.xsum, x.reshape(3, 4, 64).sum(-1), rtol=1e-5, atol=1e-5)


def test_zero_activations_give_zero_output_in_fast_mode():
    x, _, pw = _case(0, 2, 8, 64, IntFormat(2, 32, symmetric=False))
    y = lut_gemm(np.zeros_like(x), pw, LutConfig(mode="fast"))
    np.testing.assert_array_equal(y, 0)


def test_large_k_accumulates_in_int32_without_overflow():
    """K=11008 per-channel: 2752 lookups of up to 127 per plane overflow int16, not int32."""
    x, qw, pw = _case(11, 1, 32, 11008, IntFormat(4, "channel", symmetric=False))
    x = np.abs(x)  # same-sign activations push every table sum to its extreme
    tables = precompute(x, pw.group_len, LutConfig(mode="fast"))
    error = np.abs(lut_matmul(tables, pw) - reference_matmul(x, qw))
    assert np.all(error <= fast_error_bound(tables, pw) + 2 * exact_error_bound(x, pw))


def test_mismatched_tables_and_weights_are_refused():
    x, _, pw = _case(0, 1, 8, 128, IntFormat(2, 32))
    tables = precompute(x, 64, LutConfig())
    with pytest.raises(ValueError, match=r"group 64.*group 32"):
        lut_matmul(tables, pw)
    with pytest.raises(ValueError, match="g=2 differs"):
        lut_gemm(x, pw, LutConfig(2))


def test_group_not_a_multiple_of_g_is_named():
    x = np.zeros((1, 48), np.float32)
    with pytest.raises(ValueError, match="group length 12 must be a multiple of g=8"):
        precompute(x, 12, LutConfig(8))


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((1, 64), np.float64), "dtype float64"),
        (np.zeros(64, np.float32), r"shape \(64,\)"),
        (np.zeros((1, 96), np.float32), "K=96, more than the weight's 64"),
    ],
)
def test_bad_activations_are_named(x, message):
    _, _, pw = _case(0, 1, 8, 64, IntFormat(2, 32))
    with pytest.raises(ValueError, match=message):
        lut_gemm(x, pw, LutConfig())


def test_bad_mode_is_named():
    with pytest.raises(ValueError, match="'int4'"):
        LutConfig(mode="int4")


@given(exponent=st.integers(-110, 110), mode=st.sampled_from(["fast", "exact"]), seed=st.integers(0, 2**16))
def test_power_of_two_scaled_rows_give_exactly_scaled_outputs(exponent, mode, seed):
    """Row scaling makes the reference scale-free: ``x * 2**e`` (every element still normal)
    gets the same int8 tables and exactly ``2**e`` times the output, from 2**-110 to 2**110,
    across both row-scaling thresholds (module docstring, *Row scaling*)."""
    rng = np.random.default_rng(seed)
    fmt = IntFormat(3, 32, symmetric=False)
    pw = pack(quantize(random_weights(rng, 40, 64), fmt))
    x = (rng.choice([-1, 1], (2, 64)) * 2.0 ** rng.uniform(-8, 4, (2, 64))).astype(np.float32)
    scale = np.float32(2.0**exponent)
    config = LutConfig(mode=mode)
    plain, scaled = precompute(x, 32, config), precompute(x * scale, 32, config)
    if mode == "fast":
        np.testing.assert_array_equal(scaled.values, plain.values)
    else:  # float tables of the row-scaled row: scaled back, they are exactly 2**e times the plain ones
        unscaled = scaled.values.astype(np.float64) * scaled.row_scale[:, None, None] * 2.0**-exponent
        np.testing.assert_array_equal(unscaled, plain.values.astype(np.float64) * plain.row_scale[:, None, None])
    y = lut_gemm(x, pw, config).astype(np.float64) * 2.0**exponent
    y_scaled = lut_gemm(x * scale, pw, config).astype(np.float64)
    normal = np.abs(y) >= np.finfo(np.float32).tiny
    np.testing.assert_array_equal(y_scaled[normal], y[normal])


@pytest.mark.parametrize(
    "fmt", [IntFormat(8, 32, symmetric=False), IntFormat(4, 32, symmetric=False), IntFormat(8, 32)]
)
def test_an_all_zero_group_adds_nothing_in_fast_mode(fmt):
    """onnxruntime-genai's k-quant writes an all-zero block as codes equal to the zero point with
    scale 1.0. Its bit-serial terms cancel only up to the int8 tables' rounding, times that scale:
    packing gives such a group scale 0, so the fast result is as close as without it."""
    rng = np.random.default_rng(3)
    qw = quantize(rng.standard_normal((64, 128)).astype(np.float32) * 0.01, fmt)
    zeros = qw.zero_points()
    codes = qw.codes.copy()
    codes[5, 32:64] = zeros[5, 1]  # group 1 of row 5: every weight 0
    scales = qw.scales.copy()
    scales[5, 1] = 1.0
    silent = QuantizedWeight(fmt, codes, scales, qw.zeros)
    assert np.all(dequantize(silent)[5, 32:64] == 0)
    x = rng.standard_normal((2, 128)).astype(np.float32)
    y = lut_gemm(x, pack(silent), LutConfig(mode="fast"))
    ref = reference_matmul(x, silent)
    assert np.abs(y - ref).max() <= 0.03 * np.abs(ref).max()
