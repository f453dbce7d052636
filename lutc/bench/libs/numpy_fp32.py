"""numpy fp32 ``x @ W.T`` on the dequantized weight (BLAS threads limited with threadpoolctl)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from ..cases import Case, Inputs, Weights, cold_copies
from .base import FP32_TOL, Prepared


def blas_name() -> str:
    """The BLAS numpy calls, as threadpoolctl reports it."""
    blas = [f"{i.get('internal_api')} {i.get('version')}" for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(blas) or "unknown"


@dataclass
class NumpyFp32:
    """``np.matmul(x, W.T, out=y)``; bytes = ``4 * N * K``. The transpose is a view (BLAS ``T`` flag)."""

    name: str = "numpy-fp32"
    tolerance: float = FP32_TOL

    def unsupported(self, case: Case) -> str | None:
        return None

    def prepare(self, case: Case, weights: Weights, inputs: Inputs, cold_bytes: int) -> Prepared:
        w = weights.dequantized
        copies = [w] + [w.copy() for _ in range(cold_copies(w.nbytes, cold_bytes) - 1)]
        out = np.zeros((case.m, case.n), np.float32)
        calls = tuple(partial(np.matmul, inputs.x, c.T, out=out) for c in copies)
        limits = partial(threadpool_limits, limits=case.threads, user_api="blas")
        return Prepared(calls, out.copy, w.nbytes, blas_name(), limits)
