"""The packed kernel layout: placement of every bit, round trips and padding."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import all_formats, k_for, random_weights
from hypothesis import given
from hypothesis import strategies as st

from lutc.quant import TILE_N, IntFormat, QuantizedWeight, TernaryFormat, pack, quantize, unpack
from lutc.quant.layout import (
    PackedWeight,
    decode_indices,
    encode_indices,
    from_vector_layout,
    to_vector_layout,
    vector_bytes,
)


def _assert_same_weight(a: QuantizedWeight, b: QuantizedWeight) -> None:
    assert a.fmt == b.fmt
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.scales, b.scales)
    if a.zeros is None:
        assert b.zeros is None
    else:
        np.testing.assert_array_equal(a.zeros, b.zeros)


@given(
    n=st.integers(1, 70),
    groups=st.integers(1, 3),
    fmt=st.sampled_from(all_formats((32, 64, 128))),
    g=st.sampled_from([1, 2, 4, 8]),
    seed=st.integers(0, 2**16),
)
def test_pack_then_unpack_is_lossless(n, groups, fmt, g, seed):
    qw = quantize(random_weights(np.random.default_rng(seed), n, k_for(fmt, groups, 8 * groups)), fmt)
    _assert_same_weight(unpack(pack(qw, g)), qw)


@pytest.mark.parametrize("k", [8, 11, 100, 250])
def test_per_channel_k_is_padded_to_whole_bytes(k):
    qw = quantize(random_weights(np.random.default_rng(k), 33, k), IntFormat(3, "channel", symmetric=False))
    pw = pack(qw)
    assert pw.k_pad == -(-k // 8) * 8 and pw.n_pad == 64
    assert pw.data.shape == (2, pw.k_pad // 8, 3, TILE_N)
    _assert_same_weight(unpack(pw), qw)


def test_sign_magnitude_indices_by_hand():
    """g = 4: raw index j -> p = s<<3 | m; j = 0b1010 has s = 1 so m = ~j & 7 = 0b101."""
    raw = np.arange(16, dtype=np.uint8)
    codes = ((raw[:, None] >> np.arange(4)) & 1).astype(np.uint8).reshape(1, 64)
    encoded = encode_indices(codes, planes=1, g=4)[0, 0]
    assert encoded[0b1010] == 0b1101
    assert encoded[0b0010] == 0b0010
    np.testing.assert_array_equal(encoded[:8], raw[:8])
    np.testing.assert_array_equal(encoded[8:], 8 | (~raw[8:] & 7))
    np.testing.assert_array_equal(decode_indices(encoded, 4), raw)


def test_byte_placement_by_hand():
    """data[t, kb, i, r]: low nibble = group 2*kb, high = 2*kb + 1, of plane i and row 32t + r."""
    codes = np.zeros((40, 16), np.uint8)
    codes[33, 8:12] = [1, 0, 0, 0]  # plane 0, K group 2 -> byte kb=1, low nibble, raw j = 0b0001
    codes[33, 12:16] = [2, 2, 2, 2]  # plane 1, K group 3 -> byte kb=1, high nibble, raw j = 0b1111
    qw = QuantizedWeight(IntFormat(2, 16), codes, np.ones((40, 1), np.float32))
    data = pack(qw).data
    assert data.shape == (2, 2, 2, TILE_N)
    # Plane 0: group 2 has j=0b0001 -> p=1; group 3 has j=0 -> p=0.
    assert data[1, 1, 0, 1] == 0x01
    # Plane 1: group 2 has j=0 -> p=0; group 3 has j=0b1111 -> s=1, m=0 -> p=8.
    assert data[1, 1, 1, 1] == 0x80
    # Every other row and byte holds all-zero codes: j=0 -> p=0.
    others = data.copy()
    others[1, 1, :, 1] = 0
    assert not others.any()


@pytest.mark.parametrize("fmt", [IntFormat(2, 32), IntFormat(4, 64, symmetric=False), TernaryFormat(32)], ids=str)
def test_offsets_fold_zero_point_and_plane_offset(fmt):
    """offsets = s * ((2**b - 1)/2 - z): -s/2 symmetric, +s/2 ternary, computed per group."""
    qw = quantize(random_weights(np.random.default_rng(0), 32, 128), fmt)
    pw = pack(qw)
    assert (pw.offsets is None) == (fmt.zero_point == "none")
    offsets = pw.offset_values().transpose(0, 2, 1).reshape(32, -1)
    expected = qw.scales * ((2**fmt.bits - 1) / 2 - qw.zero_points())
    np.testing.assert_allclose(offsets, expected, rtol=1e-7)
    if isinstance(fmt, TernaryFormat):
        np.testing.assert_allclose(offsets, qw.scales / 2)


def test_padded_rows_have_zero_scales():
    pw = pack(quantize(random_weights(np.random.default_rng(0), 5, 64), IntFormat(2, 32, symmetric=False)))
    assert not pw.scales[0, :, 5:].any() and not pw.offset_values()[0, :, 5:].any()


def test_layout_refuses_groups_that_are_not_whole_bytes():
    qw = quantize(random_weights(np.random.default_rng(0), 4, 24), IntFormat(2, 12))
    with pytest.raises(ValueError, match="group size 12 is not a multiple of 8"):
        pack(qw)


@pytest.mark.parametrize("g", [0, 3, 5, 16])
def test_unsupported_g_is_named(g):
    qw = quantize(random_weights(np.random.default_rng(0), 4, 32), IntFormat(2, 32))
    with pytest.raises(ValueError, match=f"activation group g={g} is not supported"):
        pack(qw, g)


def test_packed_arrays_are_checked():
    pw = pack(quantize(random_weights(np.random.default_rng(0), 4, 32), IntFormat(2, 32)))
    with pytest.raises(ValueError, match=r"packed data must be \(1, 4, 2, 32\) uint8"):
        PackedWeight(pw.fmt, pw.n, pw.k, pw.g, pw.data[:, :2], pw.scales, pw.offsets)
    with pytest.raises(ValueError, match="packed scales"):
        PackedWeight(pw.fmt, pw.n, pw.k, pw.g, pw.data, pw.scales.astype(np.float64), pw.offsets)
    with pytest.raises(ValueError, match="w2g32 packs no offsets"):
        PackedWeight(pw.fmt, pw.n, pw.k, pw.g, pw.data, pw.scales, pw.offset_values())


# ---- the vector layout (GPUs) ------------------------------------------------------------------


@given(
    n=st.integers(1, 70),
    groups=st.integers(1, 3),
    fmt=st.sampled_from(all_formats((32, 64, 128))),
    seed=st.integers(0, 2**16),
)
def test_vector_layout_round_trips_and_places_each_row_contiguously(n, groups, fmt, seed):
    pw = pack(quantize(random_weights(np.random.default_rng(seed), n, k_for(fmt, groups, 8 * groups)), fmt))
    vector = vector_bytes(pw.group_len // 8)
    vdata = to_vector_layout(pw.data, vector)
    np.testing.assert_array_equal(from_vector_layout(vdata), pw.data)
    tiles, kbytes, planes, rows = pw.data.shape
    assert vdata.shape == (tiles, kbytes // vector, rows, planes, vector)
    t, v, r = tiles - 1, kbytes // vector - 1, rows - 1  # the last slot, byte by byte
    for i in range(planes):
        for j in range(vector):
            assert vdata[t, v, r, i, j] == pw.data[t, vector * v + j, i, r]
    flat = vdata.reshape(-1)  # one thread's slot is contiguous: planes * vector bytes
    start = ((t * (kbytes // vector) + v) * rows + r) * planes * vector
    np.testing.assert_array_equal(flat[start : start + planes * vector], vdata[t, v, r].reshape(-1))


@pytest.mark.parametrize(("group_bytes", "vector"), [(2, 2), (4, 4), (8, 8), (16, 16), (64, 16), (72, 8), (12, 4)])
def test_vector_width_is_the_widest_dividing_a_group(group_bytes, vector):
    assert vector_bytes(group_bytes) == vector


def test_vector_layout_refuses_what_does_not_split():
    with pytest.raises(ValueError, match="no vector width"):
        vector_bytes(3)
    with pytest.raises(ValueError, match="do not split"):
        to_vector_layout(np.zeros((1, 12, 2, 32), np.uint8), 8)
