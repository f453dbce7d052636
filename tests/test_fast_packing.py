"""The fast packers against their original, straightforward numpy code (kept here as the oracle)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import all_formats, k_for, random_weights

from lutc.quant import IntFormat, QuantizedWeight, layout, pack, quantize
from lutc.quant.bitpack import pack_bits, unpack_bits
from lutc.quant.layout import _indices_to_bytes, _sign_magnitude, encode_indices

# --- oracle: the pre-optimisation code, verbatim --------------------------------------------


def ref_pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    codes = np.asarray(codes)
    shifts = np.arange(bits, dtype=np.uint8)
    stream = ((codes[..., None].astype(np.uint8) >> shifts) & 1).reshape(*codes.shape[:-1], -1)
    return np.packbits(stream, axis=-1, bitorder="little")


def ref_unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    stream = np.unpackbits(packed, axis=-1, bitorder="little")[..., : count * bits]
    stream = stream.reshape(*packed.shape[:-1], count, bits)
    weights = (1 << np.arange(bits)).astype(np.uint16)
    return (stream.astype(np.uint16) @ weights).astype(np.uint8)


def ref_encode_indices(codes: np.ndarray, planes: int, g: int) -> np.ndarray:
    n, k = codes.shape
    mask = (1 << (g - 1)) - 1
    bits = (codes[None] >> np.arange(planes, dtype=np.uint8)[:, None, None]) & 1
    raw = (bits.reshape(planes, n, k // g, g) << np.arange(g, dtype=np.uint8)).sum(-1, dtype=np.uint8)
    sign = raw >> (g - 1)
    magnitude = np.where(sign == 1, ~raw, raw) & mask
    return (sign << (g - 1) | magnitude).astype(np.uint8)


def ref_indices_to_bytes(indices: np.ndarray, g: int) -> np.ndarray:
    planes, n, groups = indices.shape
    per_byte = 8 // g
    shifts = (g * np.arange(per_byte)).astype(np.uint8)
    return (indices.reshape(planes, n, groups // per_byte, per_byte) << shifts).sum(-1, dtype=np.uint8)


def _ref_pad_to(arr: np.ndarray, rows: int, cols: int) -> np.ndarray:
    out = np.zeros((rows, cols), arr.dtype)
    out[: arr.shape[0], : arr.shape[1]] = arr
    return out


def _ref_tile(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(arr.reshape(-1, 32, arr.shape[1]).transpose(0, 2, 1))


def ref_silenced(qw: QuantizedWeight) -> QuantizedWeight:
    """Zero scales where a group's codes all equal its zero point (layout.without_silent_groups)."""
    if qw.fmt.group_size == "tensor":
        return qw
    n, k = qw.shape
    groups = qw.scales.shape[1]
    codes = qw.codes.reshape(n, groups, k // groups).astype(np.float32)
    silent = (codes == qw.zero_points()[..., None]).all(-1)
    return QuantizedWeight(qw.fmt, qw.codes, np.where(silent, 0, qw.scales).astype(qw.scales.dtype), qw.zeros)


def ref_pack(qw: QuantizedWeight, g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    qw = ref_silenced(qw)
    fmt, (n, k) = qw.fmt, qw.shape
    k_pad, n_pad = layout.padded_k(fmt, k), -(-n // 32) * 32
    codes = _ref_pad_to(qw.codes, n_pad, k_pad)
    plane_bytes = ref_indices_to_bytes(ref_encode_indices(codes, fmt.bits, g), g)
    data = np.ascontiguousarray(plane_bytes.reshape(fmt.bits, -1, 32, k_pad // 8).transpose(1, 3, 0, 2))
    scales = _ref_tile(_ref_pad_to(qw.scales, n_pad, qw.scales.shape[1]))
    offsets = None
    if layout.implied_offset(fmt) is None:
        offsets = _ref_tile(_ref_pad_to(layout.offsets_of(qw), n_pad, qw.scales.shape[1]))
    return data, scales, offsets


# --- tests -----------------------------------------------------------------------------------


def _assert_packs_like_reference(qw: QuantizedWeight, g: int) -> None:
    pw = pack(qw, g)
    data, scales, offsets = ref_pack(qw, g)
    np.testing.assert_array_equal(pw.data, data)
    np.testing.assert_array_equal(pw.scales, scales)
    assert pw.scales.dtype == scales.dtype
    if offsets is None:
        assert pw.offsets is None
    else:
        np.testing.assert_array_equal(pw.offsets, offsets)


@pytest.mark.parametrize("fmt", all_formats(), ids=str)
@pytest.mark.parametrize("n", [1, 32, 45, 100])
def test_pack_matches_reference(fmt, n):
    rng = np.random.default_rng(n)
    for g, groups in ((1, 1), (2, 2), (4, 3), (8, 1)):
        qw = quantize(random_weights(rng, n, k_for(fmt, groups, 8 * groups + 3)), fmt)
        _assert_packs_like_reference(qw, g)


@pytest.mark.parametrize("fmt", [IntFormat(4, 32), IntFormat(2, 64, symmetric=False), IntFormat(3, "channel")], ids=str)
@pytest.mark.parametrize("g", [1, 2, 4, 8])
def test_pack_matches_reference_across_row_chunks(fmt, g, monkeypatch):
    """N over many chunks, with a ragged last chunk and padded rows; K larger than a chunk too."""
    monkeypatch.setattr(layout, "CHUNK_BYTES", 64 * 256)
    rng = np.random.default_rng(g)
    for n, k in ((300, 256), (70, k_for(fmt, 600 // 64 * 2, 1000))):
        _assert_packs_like_reference(quantize(random_weights(rng, n, k), fmt), g)


def test_pack_matches_reference_with_default_chunks():
    """More rows than one default chunk of codes."""
    qw = quantize(random_weights(np.random.default_rng(0), 2 * layout.CHUNK_BYTES // 1024 + 40, 1024), IntFormat(4, 32))
    _assert_packs_like_reference(qw, 4)


def test_pack_reads_non_contiguous_codes():
    qw = quantize(random_weights(np.random.default_rng(1), 70, 64), IntFormat(2, 32))
    strided = QuantizedWeight(qw.fmt, np.asfortranarray(qw.codes), qw.scales)
    _assert_packs_like_reference(strided, 4)


@pytest.mark.parametrize("g", [1, 2, 4, 8])
def test_sign_magnitude_formula(g):
    """``raw ^ (s * mask)`` equals ``s << (g-1) | (where(s, ~raw, raw) & mask)`` for every index."""
    raw = np.arange(1 << g, dtype=np.uint8)
    mask = (1 << (g - 1)) - 1
    sign = raw >> (g - 1)
    expected = sign << (g - 1) | (np.where(sign == 1, ~raw, raw) & mask)
    np.testing.assert_array_equal(_sign_magnitude(raw.copy(), g), expected)


@pytest.mark.parametrize("planes", [1, 2, 3, 4])
@pytest.mark.parametrize("g", [1, 2, 4, 8])
def test_index_helpers_match_reference(planes, g):
    codes = np.random.default_rng(planes * g).integers(0, 1 << planes, (37, 48), dtype=np.uint8)
    indices = encode_indices(codes, planes, g)
    np.testing.assert_array_equal(indices, ref_encode_indices(codes, planes, g))
    np.testing.assert_array_equal(_indices_to_bytes(indices, g), ref_indices_to_bytes(indices, g))


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("shape", [(0,), (13,), (64,), (3, 31), (5, 4, 32), (2, 0)], ids=str)
def test_bit_packing_matches_reference(bits, shape):
    codes = np.random.default_rng(bits).integers(0, 1 << bits, shape, dtype=np.uint8)
    packed = pack_bits(codes, bits)
    expected = ref_pack_bits(codes, bits)
    assert packed.dtype == np.uint8 and packed.flags.c_contiguous
    assert not np.shares_memory(packed, codes)
    np.testing.assert_array_equal(packed, expected)
    unpacked = unpack_bits(packed, bits, shape[-1])
    assert unpacked.dtype == np.uint8 and unpacked.flags.c_contiguous
    np.testing.assert_array_equal(unpacked, ref_unpack_bits(packed, bits, shape[-1]))
    np.testing.assert_array_equal(unpacked, codes)


@pytest.mark.parametrize("bits", range(1, 9))
def test_unpack_bits_matches_reference_on_raw_bytes(bits, monkeypatch):
    """Arbitrary bytes (padding bits set), spare trailing bytes, counts below capacity, many chunks."""
    from lutc.quant import bitpack

    monkeypatch.setattr(bitpack, "CHUNK_BYTES", 40)
    rng = np.random.default_rng(bits)
    packed = rng.integers(0, 256, (7, 3, 19), dtype=np.uint8)
    for count in (0, 1, 5, 19 * 8 // bits - 1, 19 * 8 // bits):
        np.testing.assert_array_equal(unpack_bits(packed, bits, count), ref_unpack_bits(packed, bits, count))
    np.testing.assert_array_equal(unpack_bits(packed[..., 1:], bits, 8), ref_unpack_bits(packed[..., 1:], bits, 8))
