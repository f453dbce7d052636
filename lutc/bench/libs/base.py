"""What the benchmark needs from each library it times."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..cases import Case, Inputs, Weights
from ..timing import Call

FP32_TOL = 1e-3
"""Relative norm error allowed for fp32 arithmetic: K-term float32 sums differ from the float64
reference by ~1e-6 relative; 1e-3 leaves room for any summation order, while a single wrong code
in a row moves the error far above it."""

INT8_ACT_TOL = 3e-2
"""ORT ``accuracy_level=4`` quantizes activations to int8 per block and its LUT GEMM rounds
int8 tables: measured 0.5-0.7 % and 0.9-1.5 % relative norm error on the default grid, so 3 %
is a bound that still catches a wrong layout."""


@dataclass(frozen=True, eq=False)
class Prepared:
    """A library ready to run one case.

    ``calls[i]`` computes the case with weight copy ``i`` into a preallocated output;
    ``output()`` reads that output back; ``weight_bytes`` is the size of one copy in the
    library's own weight format; ``context()`` is entered around the timing (numpy uses it to
    give BLAS the case's threads).
    """

    calls: tuple[Call, ...]
    output: Callable[[], np.ndarray]
    weight_bytes: int
    note: str = ""
    context: Callable[[], AbstractContextManager] = nullcontext


class LastBuild:
    """Keeps only the most recent build: the grid reaches all cases of one key together."""

    def __init__(self) -> None:
        self.key: object = None
        self.value: object = None

    def get(self, key: object, build: Callable[[], object]) -> object:
        if key != self.key:
            self.key, self.value = None, None  # free the old build first
            self.value, self.key = build(), key
        return self.value


class Library(Protocol):
    """One benchmarked implementation."""

    name: str
    """Short stable name, e.g. ``ort-nbits-acc4``."""
    tolerance: float
    """Allowed relative norm error against ``reference_matmul``."""

    def unsupported(self, case: Case) -> str | None:
        """Why this library cannot run ``case`` (shown as n/a), or None."""

    def prepare(self, case: Case, weights: Weights, inputs: Inputs, cold_bytes: int) -> Prepared:
        """Build and load everything for one mode: one weight copy when ``cold_bytes`` is 0 (hot),
        else enough copies for their total to exceed it (cold)."""
