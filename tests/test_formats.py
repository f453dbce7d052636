"""Weight formats, quantize and dequantize, and the errors bad formats raise."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import all_formats, random_weights
from hypothesis import given
from hypothesis import strategies as st

from lutc.quant import FORMATS, IntFormat, QuantizedWeight, TernaryFormat, dequantize, get_format, quantize
from lutc.quant.weights import expand_groups


@pytest.mark.parametrize("bits", [0, 9, 16, -1, True])
def test_unsupported_bit_width_is_named(bits):
    with pytest.raises(ValueError, match=f"unsupported bit width {bits!r}"):
        IntFormat(bits)


@pytest.mark.parametrize("group", [0, -32, 1.5, "row", None])
def test_bad_group_size_is_named(group):
    with pytest.raises(ValueError, match="group_size"):
        IntFormat(2, group)


def test_bad_scale_dtype_is_named():
    with pytest.raises(ValueError, match="bfloat16"):
        TernaryFormat(64, scale_dtype="bfloat16")


def test_formats_are_frozen():
    fmt = IntFormat(2, 128)
    with pytest.raises(AttributeError):
        fmt.bits = 4


def test_presets_cover_every_family_and_round_trip_by_name():
    assert {"w1g32", "w2g128", "w3g64a", "w4gcaf", "t2gt", "t2g128"} <= set(FORMATS)
    for name, fmt in FORMATS.items():
        assert fmt.name == name
        assert get_format(name) is fmt


def test_unknown_preset_lists_alternatives():
    with pytest.raises(ValueError, match="w2g128"):
        get_format("w2g127")


def test_dequantize_formula_by_hand():
    """``w = s * (q - z)`` with the implied zero point 2**(b-1) for symmetric formats."""
    codes = np.array([[0, 1, 2, 3]], np.uint8)
    scales = np.array([[0.5]], np.float32)
    sym = QuantizedWeight(IntFormat(2, 4), codes, scales)
    np.testing.assert_array_equal(dequantize(sym), [[-1.0, -0.5, 0.0, 0.5]])
    asym = QuantizedWeight(IntFormat(2, 4, symmetric=False), codes, scales, np.array([[1]], np.uint8))
    np.testing.assert_array_equal(dequantize(asym), [[-0.5, 0.0, 0.5, 1.0]])
    tern = QuantizedWeight(TernaryFormat(4), np.array([[0, 0, 1, 2]], np.uint8), scales)
    np.testing.assert_array_equal(dequantize(tern), [[-0.5, -0.5, 0.0, 0.5]])


def _max_error_allowed(qw: QuantizedWeight) -> np.ndarray:
    """Per-element bound on |w - dequantize(quantize(w))| for in-range weights.

    Round-to-nearest is off by at most s/2; an integer zero point shifts the grid by up to
    s/2 more, which can clip the extreme weight by that much; fp16 scales are rounded
    (relative 2**-11) after the range was fixed, which can clip by max_code * 2**-11 * s.
    """
    s = np.abs(expand_groups(qw.scales.astype(np.float32), qw.shape[1]))
    slack = 0.5 if qw.fmt.zero_point == "int" else 0.0
    fp16 = qw.fmt.max_code * 2.0**-10 if qw.fmt.scale_dtype == "float16" else 0.0
    return s * (0.5 + slack + fp16) * (1 + 1e-5) + 1e-6


@pytest.mark.parametrize("fmt", [f for f in all_formats() if f.zero_point != "none"], ids=lambda f: f.name)
def test_asymmetric_quantization_error_is_at_most_half_a_step(fmt):
    w = random_weights(np.random.default_rng(1), 24, 256)
    qw = quantize(w, fmt)
    assert np.all(np.abs(dequantize(qw) - w) <= _max_error_allowed(qw))


@pytest.mark.parametrize("fmt", [f for f in all_formats() if isinstance(f, IntFormat) and f.symmetric], ids=str)
def test_symmetric_quantization_maps_the_largest_magnitude_exactly(fmt):
    """ORT/llama.cpp style: the weight of largest magnitude lands on code 0, without error."""
    w = random_weights(np.random.default_rng(2), 16, 256)
    qw = quantize(w, fmt)
    grouped = np.abs(w).reshape(16, qw.scales.shape[1], -1)
    idx = grouped.argmax(-1)
    dq = dequantize(qw).reshape(grouped.shape)
    wg = w.reshape(grouped.shape)
    picked = np.take_along_axis(dq, idx[..., None], -1), np.take_along_axis(wg, idx[..., None], -1)
    np.testing.assert_allclose(picked[0], picked[1], rtol=2e-3 if fmt.scale_dtype == "float16" else 1e-6)


def test_ternary_is_bitnet_absmean():
    w = np.array([[0.9, -0.1, -2.0, 0.2]], np.float32)
    qw = quantize(w, TernaryFormat("tensor"))
    s = np.abs(w).mean()
    np.testing.assert_allclose(qw.scales, [[s]], rtol=1e-7)
    np.testing.assert_array_equal(qw.codes.astype(int) - 1, [[1, 0, -1, 0]])


def test_per_tensor_scale_is_shared_by_every_row():
    qw = quantize(random_weights(np.random.default_rng(3), 8, 64), TernaryFormat("tensor"))
    assert qw.scales.shape == (8, 1) and np.all(qw.scales == qw.scales[0, 0])


def test_all_zero_group_quantizes_to_zero():
    w = np.zeros((2, 64), np.float32)
    for fmt in (IntFormat(2, 32), IntFormat(3, 32, symmetric=False), TernaryFormat(32)):
        np.testing.assert_array_equal(dequantize(quantize(w, fmt)), w)


@given(
    n=st.integers(1, 40),
    groups=st.integers(1, 4),
    fmt=st.sampled_from([f for f in all_formats((32, 64)) if f.zero_point == "float" and f.scale_dtype == "float32"]),
    seed=st.integers(0, 2**16),
)
def test_requantizing_dequantized_weights_is_idempotent_for_asymmetric_float(n, groups, fmt, seed):
    """quantize(dequantize(q)) lands on the same grid: requantizing loses nothing more."""
    w = random_weights(np.random.default_rng(seed), n, groups * fmt.group_size)
    qw = quantize(w, fmt)
    again = quantize(dequantize(qw), fmt)
    np.testing.assert_allclose(dequantize(again), dequantize(qw), atol=1e-5, rtol=1e-5)


# ---- bad input ---------------------------------------------------------------------------


def test_k_not_a_multiple_of_the_group_size_is_named():
    with pytest.raises(ValueError, match="K=100 is not a multiple of the group size 32"):
        quantize(np.ones((4, 100), np.float32), IntFormat(2, 32))


def test_nan_and_inf_scales_are_refused():
    codes = np.zeros((2, 64), np.uint8)
    scales = np.ones((2, 2), np.float32)
    scales[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"scales has 1 non-finite values \(first at \(1, 0\)"):
        QuantizedWeight(IntFormat(2, 32), codes, scales)
    scales[1, 0] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        QuantizedWeight(IntFormat(2, 32), codes, scales)


def test_nan_weights_are_refused():
    w = np.ones((2, 32), np.float32)
    w[0, 3] = np.nan
    with pytest.raises(ValueError, match=r"weights has 1 non-finite values \(first at \(0, 3\)"):
        quantize(w, IntFormat(2, 32))


@pytest.mark.parametrize(
    ("codes", "scales", "zeros", "message"),
    [
        (
            np.zeros((2, 64), np.uint8),
            np.ones((2, 3), np.float32),
            None,
            r"scales has shape \(2, 3\).*expected shape \(2, 2\)",
        ),
        (np.zeros((2, 64), np.uint8), np.ones((2, 2), np.float16), None, "stores float32"),
        (np.zeros((2, 64), np.int32), np.ones((2, 2), np.float32), None, "codes has shape"),
        (np.zeros((64,), np.uint8), np.ones((2, 2), np.float32), None, "2-D"),
        (np.full((2, 64), 9, np.uint8), np.ones((2, 2), np.float32), None, "codes hold 9, above 3"),
        (np.zeros((2, 64), np.uint8), np.ones((2, 2), np.float32), np.zeros((2, 2), np.uint8), "symmetric but zero"),
    ],
)
def test_mismatched_arrays_are_named(codes, scales, zeros, message):
    with pytest.raises(ValueError, match=message):
        QuantizedWeight(IntFormat(2, 32), codes, scales, zeros)


@pytest.mark.parametrize(
    ("zeros", "message"),
    [
        (None, r"needs zero points of shape \(2, 2\)"),
        (np.zeros((2, 1), np.uint8), r"zeros has shape \(2, 1\)"),
        (np.full((2, 2), 4, np.uint8), "zero points hold 4, above 3"),
        (np.zeros((2, 2), np.float32), "zeros has shape .* dtype float32; expected a dtype of kind 'u'"),
    ],
)
def test_bad_zero_points_are_named(zeros, message):
    with pytest.raises(ValueError, match=message):
        QuantizedWeight(
            IntFormat(2, 32, symmetric=False), np.zeros((2, 64), np.uint8), np.ones((2, 2), np.float32), zeros
        )


def test_quantize_refuses_integer_or_1d_weights():
    with pytest.raises(ValueError, match="2-D float"):
        quantize(np.ones((4, 32), np.int8), IntFormat(2, 32))
    with pytest.raises(ValueError, match="2-D float"):
        quantize(np.ones(32, np.float32), IntFormat(2, 32))
