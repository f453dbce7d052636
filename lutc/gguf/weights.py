"""GGUF tensors as lutc weights: the block types ``MatMulNBits`` can express are carried over code for
code (:data:`EXACT`); the others are dequantized with ``gguf`` and requantized by lutc's RTN
(:func:`lutc.quant.quantize`, :func:`requantize_format`).

Each exact type's dequantization and its ``MatMulNBits`` form (blocks of 32 along K, ``w = s * (q - z)``):

- ``Q4_0``: ``w = d * (q - 8)``: ``s = d``, no zero point (4-bit default 8). Bit-exact.
- ``Q8_0``: ``w = d * c`` with int8 ``c``: ``q = c + 128``, ``s = d``, no zero point (8-bit default 128). Bit-exact.
- ``Q4_1``: ``w = d * q + m``: ``s = d``, float ``z = -m / d``. ORT rounds ``s*q - s*z``: within a few ulp.
- ``Q4_K``: super-blocks of 256 with 6-bit sub-scales ``sc`` and mins ``mn`` per 32:
  ``w = (d * sc) * q - dmin * mn``: ``s = d * sc`` (exact in float32), float ``z = dmin * mn / s``.
  Within a few ulp, as ``Q4_1``.

A block whose scale is 0 is the constant ``-z * s`` of the format: it gets codes 1, that constant as
its scale and zero point 0, exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ModelError
from ..quant import IntFormat, QuantizedWeight, quantize

BLOCK = 32
EXACT = ("Q4_0", "Q4_1", "Q8_0", "Q4_K")
"""GGUF types carried over exactly (Q4_1 and Q4_K to float32 rounding of their zero points)."""
WIDE = ("F32", "F16", "BF16", "Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_1", "Q8_K")
"""Types of more than 4 bits: requantized to 8 bits (``w8g32``); the rest to 4 bits (``w4g32a``)."""


def matmul_weight(tensor: Any) -> tuple[QuantizedWeight, bool]:
    """``(weight [N, K], exact)`` of a GGUF matmul tensor: its own codes where the type is in
    :data:`EXACT`, else lutc's RTN of its dequantized values (``exact`` False)."""
    kind = tensor.tensor_type.name
    rows = np.asarray(tensor.data)
    n, k = int(tensor.shape[1]), int(tensor.shape[0])
    if k % BLOCK:
        raise ModelError(f"GGUF tensor {tensor.name!r} has {k} columns, not a multiple of {BLOCK}")
    exact = _EXACT.get(kind)
    if exact is not None:
        return exact(rows.reshape(n, -1)), True
    return quantize(dequantized(tensor), requantize_format(kind)), False


def requantize_format(kind: str) -> IntFormat:
    """lutc's format for a tensor of GGUF type ``kind`` that no ``MatMulNBits`` expresses."""
    return IntFormat(8, BLOCK, symmetric=True) if kind in WIDE else IntFormat(4, BLOCK, symmetric=False)


def dequantized(tensor: Any) -> np.ndarray:
    """A tensor's float32 values ``[N, K]`` (or ``[K]``) by ``gguf``'s own dequantization; a
    :class:`ModelError` naming the tensor for a type it cannot dequantize."""
    from gguf.quants import dequantize

    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    try:
        values = dequantize(np.asarray(tensor.data), tensor.tensor_type)
    except NotImplementedError:
        raise ModelError(f"GGUF tensor {tensor.name!r} has type {tensor.tensor_type.name}, which lutc cannot read; "
                         f"supported: {', '.join(EXACT)} exactly, {', '.join(WIDE)} and the other K-quants "
                         "requantized") from None  # fmt: skip
    return np.asarray(values, np.float32).reshape(shape)


def _fp16(blocks: np.ndarray, at: int) -> np.ndarray:
    """The float16 at byte ``at`` of each block, as float32 ``[..., 1]``."""
    return np.ascontiguousarray(blocks[..., at : at + 2]).view(np.float16).astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """Bytes ``[..., 16]`` -> 32 codes: the low nibbles then the high ones (ggml's order)."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _flat(codes: np.ndarray, n: int) -> np.ndarray:
    return np.ascontiguousarray(codes, np.uint8).reshape(n, -1)


def _q4_0(rows: np.ndarray) -> QuantizedWeight:
    n = rows.shape[0]
    blocks = rows.reshape(n, -1, 18)
    return QuantizedWeight(IntFormat(4, BLOCK), _flat(_nibbles(blocks[..., 2:]), n), _fp16(blocks, 0)[..., 0])


def _q8_0(rows: np.ndarray) -> QuantizedWeight:
    n = rows.shape[0]
    blocks = rows.reshape(n, -1, 34)
    codes = blocks[..., 2:].view(np.int8).astype(np.int16) + 128
    return QuantizedWeight(IntFormat(8, BLOCK), _flat(codes, n), _fp16(blocks, 0)[..., 0])


def _asymmetric(codes: np.ndarray, scale: np.ndarray, low: np.ndarray, n: int) -> QuantizedWeight:
    """``w = scale * q + low`` per block of 32 (``codes [N, B, 32]``, ``scale, low [N, B]``) as
    float zero points ``z = -low / scale``; a zero-scale block holds ``low`` with codes 1."""
    dead = scale == 0
    codes = np.where(dead[..., None], np.uint8(1), codes)
    with np.errstate(divide="ignore", invalid="ignore"):
        zeros = np.where(dead, np.float32(0), -low / scale).astype(np.float32)
    scales = np.where(dead, low, scale).astype(np.float32)
    fmt = IntFormat(4, BLOCK, symmetric=False, zero_dtype="float")
    return QuantizedWeight(fmt, _flat(codes, n), scales, zeros)


def _q4_1(rows: np.ndarray) -> QuantizedWeight:
    n = rows.shape[0]
    blocks = rows.reshape(n, -1, 20)
    return _asymmetric(_nibbles(blocks[..., 4:]), _fp16(blocks, 0)[..., 0], _fp16(blocks, 2)[..., 0], n)


def q4_k_scales(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 six-bit sub-block scales and mins of Q4_K's 12 packed bytes ``[..., 12]``."""
    d, m, md = packed[..., 0:4], packed[..., 4:8], packed[..., 8:12]
    scales = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mins = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return scales.astype(np.float32), mins.astype(np.float32)


def _q4_k(rows: np.ndarray) -> QuantizedWeight:
    n = rows.shape[0]
    blocks = rows.reshape(n, -1, 144)
    sc, mn = q4_k_scales(blocks[..., 4:16])
    qs = blocks[..., 16:].reshape(n, -1, 4, BLOCK)  # 4 pairs of sub-blocks: low nibbles, then high
    codes = np.stack([qs & 0x0F, qs >> 4], axis=3).reshape(n, -1, BLOCK)
    scale, low = (_fp16(blocks, 0) * sc).reshape(n, -1), -(_fp16(blocks, 2) * mn).reshape(n, -1)
    return _asymmetric(codes, scale, low, n)


_EXACT = {"Q4_0": _q4_0, "Q4_1": _q4_1, "Q8_0": _q8_0, "Q4_K": _q4_k}


def permute_rows(qw: QuantizedWeight, heads: int) -> QuantizedWeight:
    """Undo llama.cpp's q/k permutation: rows interleaved per head (``2*i + j``) back to halves
    (``j*H/2 + i``), the order of Hugging Face checkpoints and ORT's half-split rotary."""
    order = head_order(qw.shape[0], heads)
    zeros = None if qw.zeros is None else qw.zeros[order]
    return QuantizedWeight(qw.fmt, qw.codes[order], qw.scales[order], zeros)


def head_order(n: int, heads: int) -> np.ndarray:
    """The GGUF row each Hugging Face row of a permuted ``[n, K]`` q/k projection comes from."""
    return np.arange(n).reshape(heads, -1, 2).transpose(0, 2, 1).reshape(-1)


def stack_rows(weights: list[QuantizedWeight]) -> QuantizedWeight | None:
    """Weights of one format stacked along N (a packed QKV projection); ``None`` where formats differ."""
    if len({w.fmt for w in weights}) != 1:
        return None
    codes, scales = (np.concatenate([getattr(w, part) for w in weights]) for part in ("codes", "scales"))
    zeros = None if weights[0].zeros is None else np.concatenate([w.zeros for w in weights])
    return QuantizedWeight(weights[0].fmt, codes, scales, zeros)
