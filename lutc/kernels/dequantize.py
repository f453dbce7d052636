"""The ``lut_dequantize`` kernel: logical codes, scales and zero points to a float ``[K, N]`` weight.

This is the fallback path. The LUT rewrite replaces ``matmul(x, lut_dequantize(consts))``
with LUT kernels; what it cannot take (8-bit weights, non-constant weights, formats a target
lacks) keeps this kernel and TVM's own matmul.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import te, tirx

from ..quant.formats import AnyFormat, format_to_attr
from .names import DEQUANTIZE_KERNEL, FORMAT_ATTR, KERNEL_ATTR, NODE_ATTR


@dataclass(frozen=True)
class DequantizeSpec:
    """``W[k, n] = s[n, k // G] * (q[n, k] - z)``: ``zero`` is ``"implied"``, ``"int"`` or ``"float"``."""

    n: int
    k: int
    bits: int
    group_len: int
    zero: str
    implied_zero: float
    scale_dtype: str = "float32"
    out_dtype: str = "float32"
    fmt: AnyFormat | None = None
    """The lutc format of the weight (``None`` only for hand-made specs: then the rewrite leaves it)."""
    node: str = ""
    """The ONNX node the weight came from, for reports."""

    @property
    def n_groups(self) -> int:
        return self.k // self.group_len


def lut_dequantize(spec: DequantizeSpec) -> tirx.PrimFunc:
    """The ``lut_dequantize`` PrimFunc, tagged with the format when it is a lutc format."""
    codes = te.placeholder((spec.n, spec.k), "uint8", "codes")
    scales = te.placeholder((spec.n, spec.n_groups), spec.scale_dtype, "scales")
    zeros = None
    if spec.zero != "implied":
        zeros = te.placeholder((spec.n, spec.n_groups), "uint8" if spec.zero == "int" else spec.scale_dtype, "zeros")

    def body(k, n):
        group = k // spec.group_len
        zero = tirx.const(spec.implied_zero, "float32") if zeros is None else tirx.Cast("float32", zeros[n, group])
        value = tirx.Cast("float32", scales[n, group]) * (tirx.Cast("float32", codes[n, k]) - zero)
        return value if spec.out_dtype == "float32" else tirx.Cast(spec.out_dtype, value)

    weight = te.compute((spec.k, spec.n), body, name="weight")
    func = te.create_prim_func([codes, scales, *([zeros] if zeros is not None else []), weight]).without_attr(
        "global_symbol"
    )  # named by whoever adds it
    attrs = {KERNEL_ATTR: DEQUANTIZE_KERNEL, NODE_ATTR: spec.node}
    if spec.fmt is not None:
        attrs[FORMAT_ATTR] = format_to_attr(spec.fmt)
    return func.with_attrs(attrs)
