"""LSB-first bit-stream packing of small unsigned codes, as ``MatMulNBits`` stores them.

Widths that divide 8 (1, 2, 4, 8) take a fast path: whole codes per byte, shifted and masked
(for 4 bits: low nibble first, then high nibble). Other widths straddle bytes and go through
an explicit bit stream.
"""

from __future__ import annotations

import math

import numpy as np

BYTE_WIDTHS = (1, 2, 4, 8)
"""Code widths that tile a byte exactly and take the shift-and-mask path."""
CHUNK_BYTES = 1 << 18
"""Packed bytes :func:`unpack_bits` expands at a time, so its temporaries stay in cache."""


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8; got {bits}")


def _pack_stream(codes: np.ndarray, bits: int) -> np.ndarray:
    """General path: codes -> explicit bit stream -> bytes."""
    shifts = np.arange(bits, dtype=np.uint8)
    stream = ((codes[..., None].astype(np.uint8) >> shifts) & 1).reshape(*codes.shape[:-1], -1)
    return np.packbits(stream, axis=-1, bitorder="little")


def _pack_whole(codes: np.ndarray, bits: int) -> np.ndarray:
    """Fast path for ``bits`` dividing 8: OR ``8 // bits`` masked, shifted codes into each byte."""
    codes = np.atleast_1d(codes).astype(np.uint8)  # always a copy, as np.packbits returns
    if bits == 8:
        return codes
    per_byte, count = 8 // bits, codes.shape[-1]
    nbytes = -(-count // per_byte)
    if count % per_byte:
        padded = np.zeros((*codes.shape[:-1], nbytes * per_byte), np.uint8)
        padded[..., :count] = codes
        codes = padded
    fields = codes.reshape(*codes.shape[:-1], nbytes, per_byte)
    mask = np.uint8((1 << bits) - 1)
    out = fields[..., 0] & mask
    for u in range(1, per_byte):
        out |= (fields[..., u] & mask) << np.uint8(bits * u)
    return out


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack uint codes along the last axis into bytes, least significant bit first.

    Code ``j`` occupies stream bits ``[j*bits, (j+1)*bits)``; stream bit ``t`` is bit
    ``t % 8`` of byte ``t // 8``. The last byte is zero-padded.
    """
    _check_bits(bits)
    codes = np.asarray(codes)
    if codes.size and int(codes.max()) >= 1 << bits:
        raise ValueError(f"code {int(codes.max())} does not fit in {bits} bits")
    return _pack_whole(codes, bits) if bits in BYTE_WIDTHS else _pack_stream(codes, bits)


def _unpack_stream(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """General path: bytes -> explicit bit stream -> codes."""
    stream = np.unpackbits(packed, axis=-1, bitorder="little")[..., : count * bits]
    stream = stream.reshape(*packed.shape[:-1], count, bits)
    weights = (1 << np.arange(bits)).astype(np.uint16)
    return (stream.astype(np.uint16) @ weights).astype(np.uint8)


def _split_fields(data: np.ndarray, width: int) -> np.ndarray:
    """Bytes holding two ``width // 2``-bit fields -> twice the bytes, low field first.

    A uint16 holding byte ``v`` becomes ``lo | hi << 8`` with a shift and a mask; read back
    as little-endian bytes that is ``[lo, hi]``.
    """
    half = width // 2
    wide = data.astype("<u2")
    wide |= wide << np.uint16(8 - half)
    wide &= np.uint16(((1 << half) - 1) * 0x0101)
    return wide.view(np.uint8).reshape(*data.shape[:-1], -1)


def _byte_fields(data: np.ndarray, bits: int) -> np.ndarray:
    """Bytes ``[R, B]`` -> their ``8 // bits`` fields each ``[R, B * 8 // bits]``, LSB first."""
    if bits == 1:
        return np.unpackbits(data, axis=-1, bitorder="little")
    width = 8
    while width > bits:
        data, width = _split_fields(data, width), width // 2
    return data


def _unpack_whole(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Fast path for ``bits`` dividing 8, in row chunks of about :data:`CHUNK_BYTES`."""
    per_byte = 8 // bits
    used = packed[..., : -(-count // per_byte)]
    if bits == 8:
        return used.copy()
    rows = used.reshape(math.prod(packed.shape[:-1]), used.shape[-1])
    out = np.empty((rows.shape[0], rows.shape[1] * per_byte), np.uint8)
    step = max(1, CHUNK_BYTES // max(rows.shape[1], 1))
    for start in range(0, rows.shape[0], step):
        out[start : start + step] = _byte_fields(rows[start : start + step], bits)
    return np.ascontiguousarray(out[:, :count]).reshape(*packed.shape[:-1], count)


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: the first ``count`` codes of each row of bytes."""
    _check_bits(bits)
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise ValueError(f"packed codes must be uint8; got {packed.dtype}")
    if packed.shape[-1] * 8 < count * bits:
        raise ValueError(f"{packed.shape[-1]} bytes hold fewer than {count} codes of {bits} bits")
    return _unpack_whole(packed, bits, count) if bits in BYTE_WIDTHS else _unpack_stream(packed, bits, count)
