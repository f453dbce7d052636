"""Legalization and operator fusion, the same on every target but for its library dispatch."""

from __future__ import annotations

import tvm
from tvm import relax

from ..relay_passes import LutcIsolateShapeKernels


def legalize_and_fuse(library_dispatch: list[tvm.transform.Pass]) -> list[tvm.transform.Pass]:
    """``library_dispatch``, TVM's legalization and fusion, with shape kernels kept out of fused
    groups (``LutcIsolateShapeKernels``, see docs/architecture.md, the frontend)."""
    return [
        *library_dispatch,
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        LutcIsolateShapeKernels(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]
