"""The logical ``lut_matmul`` kernel: tables and packed weights in, ``y[M, N]`` out.

Two stages, both plain TensorIR before scheduling:

- ``lookup``: ``acc[m, tile, group, r] = sum_{byte, plane, half} 2**plane * T[m, 2*byte + half, p]``
  where ``p`` is the nibble of ``data[tile, byte, plane, r]`` (int32 in fast mode, float32 in
  exact mode), written as a one-hot sum over table entries so a schedule can swap the inner
  loops for a target micro-kernel (``vpshufb``, ``tbl``, ...);
- ``epilogue``: ``y[m, n] = sum_groups (s * (ls * (0.5 * acc)) + offset * xsum) * row_scale
  (+ bias)``, the float epilogue of :mod:`lutc.quant.lut`. Fast-mode kernels for more than one
  row (prompts, dynamic or static M; :func:`folds_epilogue`) fold a (row, group)'s scalars first,
  ``y_pad = sum_groups s * (acc * (0.5 * ls) + c * xsum)`` (implied offset ``c``; with zero points
  ``s * (acc * (0.5 * ls)) + offset * xsum``), and scale the group sum once, ``y = y_pad *
  row_scale (+ bias)`` cropped to N: per output vector a convert and two FMAs instead of a convert,
  four multiplies and two FMAs. Measured on Zen 3 (4096 x 4096, interleaved A/B): w4g32 1.09-1.12x
  at a dynamic M = 16, 1.11x at M = 3, 1.09x at M = 128, 1.08-1.13x at a static M = 4; at a
  static M = 16 0.99-1.20x (1 thread, eight builds, two of them 0.99x) and 1.13x (2 threads), w2g32
  1.03-1.13x (2 threads); the 1 B model's 16-token prompt 1.14x. A static M = 1 (the decode
  step) keeps the first form: with the fold the one-row kernel was 13-21 % slower (LLVM spilled
  around the ``[1, 32]`` accumulator it keeps in registers).
"""

from __future__ import annotations

from tvm import te, tirx

from ..quant.layout import TILE_N, implied_offset
from .intrin_desc import lookup_term
from .names import (
    BYTE_LOOP,
    ENTRY_LOOP,
    FOLDED_ATTR,
    HALF_LOOP,
    KERNEL_ATTR,
    LOOKUP_BLOCK,
    MATMUL_KERNEL,
    OUTPUT_BLOCK,
    PADDED_OUTPUT_BLOCK,
    PLANE_LOOP,
    SPEC_ATTR,
    SPEC_TAG_ATTR,
    TABLES,
)
from .spec import KernelSpec


def _inputs(spec: KernelSpec, m) -> dict[str, te.Tensor]:
    ng = spec.n_groups
    inputs = {
        TABLES: te.placeholder((m, spec.table_groups, spec.entries), spec.table_dtype, TABLES),
        "lut_scale": te.placeholder((m, ng), "float32", "lut_scale"),
        "xsum": te.placeholder((m, ng), "float32", "xsum"),
        "row_scale": te.placeholder((m,), "float32", "row_scale"),
    }
    for part, (shape, dtype) in spec.weight_types().items():
        inputs[part] = te.placeholder(shape, dtype, part)
    if spec.bias:
        inputs["bias"] = te.placeholder((spec.n,), "float32", "bias")
    return inputs


def _lookup(spec: KernelSpec, m_rows, tables: te.Tensor, data: te.Tensor) -> te.Tensor:
    byte = te.reduce_axis((0, spec.group_bytes), BYTE_LOOP)
    half = te.reduce_axis((0, 2), HALF_LOOP)
    entry = te.reduce_axis((0, spec.entries), ENTRY_LOOP)
    # A single plane gets no plane axis: unit loops vanish in scheduling and break tensorize.
    plane = te.reduce_axis((0, spec.planes), PLANE_LOOP) if spec.planes > 1 else None
    axes = [byte, plane, half, entry] if plane is not None else [byte, half, entry]

    def body(m, tile, group, r):  # LOOKUP_LOOPS' spatial loops take these names
        k_byte = group * spec.group_bytes + byte
        p = 0 if plane is None else plane
        if spec.vector > 1:  # lutc.quant.layout.to_vector_layout
            byte_value = data[tile, k_byte // spec.vector, r, p, k_byte % spec.vector]
        else:
            byte_value = data[tile, k_byte, p, r]
        term = lookup_term(tables[m, k_byte * 2 + half, entry], byte_value, plane, half, entry, spec)
        return te.sum(term, axis=axes)

    shape = (m_rows, spec.n_tiles, spec.n_groups, TILE_N)
    return te.compute(shape, body, name=LOOKUP_BLOCK)


def _float32(value: tirx.PrimExpr) -> tirx.PrimExpr:
    """``value`` as float32: half scales' offsets are float16; float32 ones stay as they are (no cast,
    so those kernels, and their tuning records, are unchanged)."""
    return value if value.dtype == "float32" else tirx.Cast("float32", value)


def _epilogue(spec: KernelSpec, m_rows, acc: te.Tensor, inputs: dict[str, te.Tensor]) -> te.Tensor:
    """``y`` over whole tiles, without bias: ``[M, N_pad]``; :func:`_crop` crops it to N and adds the
    bias where there is one (``te.sum``'s ``init`` would be the place, but TVM 0.27's
    ``create_prim_func`` drops it: the block starts from zero)."""
    group = te.reduce_axis((0, spec.n_groups), "group")
    scales, offsets = inputs["scales"], inputs.get("offsets")
    lut_scale, xsum, row_scale = inputs["lut_scale"], inputs["xsum"], inputs["row_scale"]
    constant = implied_offset(spec.fmt)

    def body(m, n):
        tile, r = n // TILE_N, n % TILE_N
        weighted = tirx.const(0.5, "float32") * tirx.Cast("float32", acc[m, tile, group, r])
        scale = tirx.Cast("float32", scales[tile, group, r])
        scaled = scale * (lut_scale[m, group] * weighted)
        offset = _float32(offsets[tile, group, r]) if offsets is not None else scale * tirx.const(constant, "float32")
        term = (scaled + offset * xsum[m, group]) * row_scale[m]
        return te.sum(term, axis=group)

    name = PADDED_OUTPUT_BLOCK if _cropped(spec) else OUTPUT_BLOCK
    return te.compute((m_rows, spec.n_tiles * TILE_N), body, name=name)


def _cropped(spec: KernelSpec) -> bool:
    """Whether a second block (``y`` after ``y_pad``) crops to N or adds the bias."""
    return spec.bias or spec.n_tiles * TILE_N != spec.n


def _crop(spec: KernelSpec, m_rows, y_pad: te.Tensor, bias: te.Tensor | None) -> te.Tensor:
    def body(m, n):
        value = y_pad[m, n]
        return value if bias is None else value + bias[n]

    return te.compute((m_rows, spec.n), body, name=OUTPUT_BLOCK)


def folds_epilogue(spec: KernelSpec) -> bool:
    """Whether ``spec``'s kernel folds its epilogue's scalars (module docstring): fast mode, M not a
    static 1. Exact mode keeps one epilogue for every M: its greedy tokens are checked against ORT's."""
    return spec.mode == "fast" and spec.m != 1


def _folded_epilogue(spec: KernelSpec, m_rows, acc: te.Tensor, inputs: dict[str, te.Tensor]) -> te.Tensor:
    """``y_pad`` ``[M, N_pad]``: the group sum with the (row, group) scalars folded, before the row scale."""
    group = te.reduce_axis((0, spec.n_groups), "group")
    scales, offsets = inputs["scales"], inputs.get("offsets")
    lut_scale, xsum = inputs["lut_scale"], inputs["xsum"]

    def body(m, n):
        tile, r = n // TILE_N, n % TILE_N
        weighted = tirx.Cast("float32", acc[m, tile, group, r]) * (tirx.const(0.5, "float32") * lut_scale[m, group])
        scale = tirx.Cast("float32", scales[tile, group, r])
        if offsets is None:
            constant = tirx.const(implied_offset(spec.fmt), "float32")
            return te.sum(scale * (weighted + constant * xsum[m, group]), axis=group)
        return te.sum(scale * weighted + _float32(offsets[tile, group, r]) * xsum[m, group], axis=group)

    return te.compute((m_rows, spec.n_tiles * TILE_N), body, name=PADDED_OUTPUT_BLOCK)


def _scaled(spec: KernelSpec, m_rows, y_pad: te.Tensor, row_scale: te.Tensor, bias: te.Tensor | None) -> te.Tensor:
    """``y`` ``[M, N]``: ``y_pad`` times the row scale, cropped to N, plus the bias where there is one."""

    def body(m, n):
        value = y_pad[m, n] * row_scale[m]
        return value if bias is None else value + bias[n]

    return te.compute((m_rows, spec.n), body, name=OUTPUT_BLOCK)


def lut_matmul(spec: KernelSpec, folded: bool | None = None) -> tirx.PrimFunc:
    """The unscheduled ``lut_matmul`` PrimFunc for ``spec``, tagged ``lutc.kernel``.

    ``folded``: the epilogue's form, by default :func:`folds_epilogue`; a tuner gives it to time a
    dynamic-row kernel at a fixed row count (``lutc.tuning.tasks.workload_of``)."""
    folded = folds_epilogue(spec) if folded is None else folded
    m_rows = spec.rows()
    inputs = _inputs(spec, m_rows)
    acc = _lookup(spec, m_rows, inputs[TABLES], inputs["data"])
    if folded:
        y_pad = _folded_epilogue(spec, m_rows, acc, inputs)
        out = _scaled(spec, m_rows, y_pad, inputs["row_scale"], inputs.get("bias"))
    else:
        out = _epilogue(spec, m_rows, acc, inputs)
        out = _crop(spec, m_rows, out, inputs.get("bias")) if _cropped(spec) else out
    func = te.create_prim_func([*inputs.values(), out]).without_attr("global_symbol")  # named by whoever adds it
    attrs = {KERNEL_ATTR: MATMUL_KERNEL, SPEC_TAG_ATTR: spec.tag, SPEC_ATTR: spec.as_attr()}
    return func.with_attrs(attrs | ({FOLDED_ATTR: True} if folded else {}))
