"""Benchmark cases: shapes, formats and the inputs every library shares."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..quant import IntFormat, PackedWeight, QuantizedWeight, dequantize, pack, quantize, reference_matmul

MIB = 1 << 20
MODES = ("hot", "cold")


@dataclass(frozen=True)
class Case:
    """``y[M, N] = x[M, K] @ W[N, K]^T`` with ``W`` in ``IntFormat(bits, block, symmetric=True)``."""

    m: int
    k: int
    n: int
    bits: int
    block: int
    threads: int

    @property
    def fmt(self) -> IntFormat:
        return IntFormat(self.bits, self.block, symmetric=True)

    @property
    def label(self) -> str:
        return f"M={self.m} K={self.k} N={self.n} w{self.bits}g{self.block} t{self.threads}"


@dataclass(frozen=True, eq=False)
class Weights:
    """One random weight matrix in every form the libraries take.

    Gaussian weights with 1 % outliers (x8), as real LLM weights have.
    """

    qw: QuantizedWeight

    @classmethod
    def random(cls, k: int, n: int, bits: int, block: int, rng: np.random.Generator) -> Weights:
        w = rng.standard_normal((n, k), dtype=np.float32)
        w[rng.random((n, k)) < 0.01] *= 8
        return cls(quantize(w, IntFormat(bits, block, symmetric=True)))

    @cached_property
    def packed(self) -> PackedWeight:
        """lutc's packed kernel layout."""
        return pack(self.qw)

    @cached_property
    def dequantized(self) -> np.ndarray:
        """float32 ``[N, K]``: the fp32 baselines' weights."""
        return dequantize(self.qw)


@dataclass(frozen=True, eq=False)
class Inputs:
    """Activations for one case and the float64 reference output."""

    x: np.ndarray
    reference: np.ndarray

    @classmethod
    def random(cls, m: int, weights: Weights, rng: np.random.Generator) -> Inputs:
        x = rng.standard_normal((m, weights.qw.shape[1]), dtype=np.float32)
        return cls(x, reference_matmul(x, weights.qw))


def cold_copies(weight_bytes: int, cold_bytes: int) -> int:
    """Weight copies to cycle so the working set exceeds ``cold_bytes`` (``0``: hot only, one copy)."""
    return 1 if cold_bytes <= 0 else math.ceil(cold_bytes / weight_bytes) + 1


def parse_shape(text: str) -> tuple[int, int]:
    """``"4096x11008"`` -> ``(K, N)``."""
    try:
        k, n = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"shape {text!r} is not KxN, e.g. 4096x11008") from None
    if k <= 0 or n <= 0:
        raise ValueError(f"shape {text!r} must have positive K and N")
    return k, n
