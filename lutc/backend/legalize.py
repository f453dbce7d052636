"""Legalization and operator fusion, the same on every target but for its library dispatch."""

from __future__ import annotations

import tvm
from tvm import relax

from .. import relay_passes as passes  # cycle: kernels.gemm -> backend (moves in issue 25)


def legalize_and_fuse(library_dispatch: list[tvm.transform.Pass]) -> list[tvm.transform.Pass]:
    """``library_dispatch``, TVM's legalization and fusion, with shape kernels kept out of fused
    groups (``LutcIsolateShapeKernels``, see Graph preparation in the README)."""
    return [
        *library_dispatch,
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        passes.LutcIsolateShapeKernels(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]
