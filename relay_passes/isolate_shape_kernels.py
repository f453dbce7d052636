"""LutcIsolateShapeKernels: kernels that take scalar shape arguments are not fused.

A legalized ``shape_to_tensor`` (or any kernel whose symbolic dims are not the shape of one
of its buffers) takes those dims as scalar arguments. TVM 0.27's ``FuseTIR`` fails with
``VarRemapGet(source) == nullptr`` when such a kernel shares a fused group with kernels that
bind the same dims from their buffers (dynamo exports with a padding mask: GatherND's index
normalization). These kernels write a few integers; marking them opaque before ``FuseOps``
keeps them out of every group at no measurable cost.
"""

from __future__ import annotations

import tvm

from ..kernels.names import OPAQUE as OPAQUE_PATTERN
from .module_update import with_functions


def takes_scalars(func: tvm.tirx.PrimFunc) -> bool:
    return any(isinstance(param.ty, tvm.ir.PrimType) for param in func.params)


@tvm.transform.module_pass(opt_level=0, name="LutcIsolateShapeKernels")
class LutcIsolateShapeKernels:
    """Set ``op_pattern`` to opaque on every PrimFunc with a scalar parameter."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return with_functions(
            mod,
            {
                gvar: func.with_attr("op_pattern", OPAQUE_PATTERN)
                for gvar, func in mod.functions_items()
                if isinstance(func, tvm.tirx.PrimFunc) and takes_scalars(func)
            },
        )
