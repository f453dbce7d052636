"""Vector TIR expressions every CPU micro-kernel builds on (x86 and ARM alike)."""

from __future__ import annotations

from tvm import tirx


def ramp(start, lanes: int) -> tirx.PrimExpr:
    """``start, start + 1, ..., start + lanes - 1``: a contiguous vector index."""
    return tirx.Ramp(start, 1, lanes)


def chunk_sum(chunk: int, planes: int | range, term) -> tirx.PrimExpr:
    """``sum_{kb < chunk, p in planes} term(kb, p)`` as one expression (K byte outer, plane inner):
    no buffer, no store. ``planes``: a count (all planes from 0) or a range of them."""
    total = None
    for kb in range(chunk):
        for p in range(planes) if isinstance(planes, int) else planes:
            total = term(kb, p) if total is None else total + term(kb, p)
    return total
