"""LSB-first bit-stream packing of small unsigned codes, as ``MatMulNBits`` stores them."""

from __future__ import annotations

import numpy as np


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack uint codes along the last axis into bytes, least significant bit first.

    Code ``j`` occupies stream bits ``[j*bits, (j+1)*bits)``; stream bit ``t`` is bit
    ``t % 8`` of byte ``t // 8``. The last byte is zero-padded.
    """
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8; got {bits}")
    codes = np.asarray(codes)
    if codes.size and int(codes.max()) >= 1 << bits:
        raise ValueError(f"code {int(codes.max())} does not fit in {bits} bits")
    shifts = np.arange(bits, dtype=np.uint8)
    stream = ((codes[..., None].astype(np.uint8) >> shifts) & 1).reshape(*codes.shape[:-1], -1)
    return np.packbits(stream, axis=-1, bitorder="little")


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: the first ``count`` codes of each row of bytes."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8; got {bits}")
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise ValueError(f"packed codes must be uint8; got {packed.dtype}")
    if packed.shape[-1] * 8 < count * bits:
        raise ValueError(f"{packed.shape[-1]} bytes hold fewer than {count} codes of {bits} bits")
    stream = np.unpackbits(packed, axis=-1, bitorder="little")[..., : count * bits]
    stream = stream.reshape(*packed.shape[:-1], count, bits)
    weights = (1 << np.arange(bits)).astype(np.uint16)
    return (stream.astype(np.uint16) @ weights).astype(np.uint8)
