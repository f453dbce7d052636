"""Legalization and operator fusion, the same on every target but for its library dispatch."""

from __future__ import annotations

import tvm
from tvm import relax, tirx

from ..relay_passes import LutcIsolateShapeKernels


def legalize_and_fuse(library_dispatch: list[tvm.transform.Pass]) -> list[tvm.transform.Pass]:
    """``library_dispatch``, TVM's legalization (reshapes over expression dims kept as views:
    :func:`reshape_view`) and fusion, with shape kernels kept out of fused groups
    (``LutcIsolateShapeKernels``, see docs/architecture.md, the frontend)."""
    return [
        *library_dispatch,
        relax.transform.LegalizeOps({"relax.reshape": reshape_view}),
        relax.transform.AnnotateTIROpPattern(),
        LutcIsolateShapeKernels(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


def reshape_view(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """``R.reshape`` as TVM legalizes it (a copy kernel, fusable), except over a dim that is an
    expression (``past + seq``): that one stays a reshape, a view of the same memory.

    TVM turns an unfused reshape kernel back into a view (``RewriteDataflowReshape``) only when it
    can prove the kernel's index arithmetic is the identity, which it cannot with a division by
    ``past + seq``: a dynamo Qwen2 decode step copied its GQA keys and values (``[b, 2, 2, past +
    seq, 64]`` to ``[b, 4, past + seq, 64]``) with a division per element, 27 µs of a 200 µs step at
    past 127.
    """
    shapes = (call.args[0].ty.shape, call.ty.shape)
    expression_dim = all(isinstance(s, relax.ShapeExpr) for s in shapes) and any(
        not isinstance(d, tirx.IntImm | tirx.Var) for s in shapes for d in s.values
    )
    return call if expression_dim else tvm.ir.Op.get("relax.reshape").get_attr("FLegalize")(bb, call)
