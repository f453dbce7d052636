"""The names that tie lutc's kernels to the passes, schedules and tuner that use them.

A generated PrimFunc is recognized by its ``lutc.kernel`` attribute (:data:`KERNEL_ATTR`, read
with :func:`kernel_of`), never by a function name. A schedule finds a kernel's blocks by the
block names below and unpacks its loops in the order given here. The kernels
(:mod:`.matmul`, :mod:`.precompute`, :mod:`.dequantize`) are built with these names and every
consumer imports them from here, so a renamed block fails at import, not inside a schedule.
"""

from __future__ import annotations

from tvm import tirx

# ---- function attributes --------------------------------------------------------------------

KERNEL_ATTR = "lutc.kernel"
"""Which lutc kernel a PrimFunc is: :data:`MATMUL_KERNEL`, :data:`PRECOMPUTE_KERNEL` or
:data:`DEQUANTIZE_KERNEL`."""
SPEC_ATTR = "lutc.kernel_spec"
"""Every :class:`~lutc.kernels.spec.KernelSpec` field, so a pass or a tuner can rebuild a kernel from its PrimFunc."""
SPEC_TAG_ATTR = "lutc.spec"
"""The spec's stable name (:attr:`~lutc.kernels.spec.KernelSpec.tag`), for reports."""
NORM_ATTR = "lutc.fused_norm"
"""Set on precompute kernels that compute their activation's norm first
(:class:`~lutc.kernels.precompute.FusedNorm`)."""
NODE_ATTR = "lutc.node"
"""On ``lut_dequantize``: the ONNX node its weight came from."""
FOLDED_ATTR = "lutc.folded_epilogue"
"""Set on ``lut_matmul`` kernels built with the folded epilogue (:func:`lutc.kernels.matmul.folds_epilogue`),
so the kernel a tuner times at a fixed row count keeps the form of the dynamic-row kernel it stands for."""
FORMAT_ATTR = "lutc.format"
"""On ``lut_dequantize``: the lutc weight format, when the weight has one (bits 1-4)."""

MATMUL_KERNEL = "lut_matmul"
PRECOMPUTE_KERNEL = "lut_precompute"
DEQUANTIZE_KERNEL = "lut_dequantize"

OPAQUE = 8
"""The ``op_pattern`` of a PrimFunc that operator fusion never merges with its neighbours
(``relax.transform.AnnotateTIROpPattern``'s ``kOpaque``)."""


def kernel_of(func) -> str | None:
    """The ``lutc.kernel`` tag of a PrimFunc, if any (``None`` for anything else)."""
    if not isinstance(func, tirx.PrimFunc):
        return None
    attrs = func.attrs
    return str(attrs[KERNEL_ATTR]) if attrs is not None and KERNEL_ATTR in attrs else None


# ---- lut_matmul -----------------------------------------------------------------------------

TABLES = "tables"
"""The table input of ``lut_matmul`` and the table output of ``lut_precompute`` (buffer and block)."""
DATA = "data"
"""``lut_matmul``'s packed weight bytes (:mod:`lutc.quant.layout`)."""
LOOKUP_BLOCK = "lookup"
"""``lut_matmul``'s table lookups, accumulated per (row, tile, group, output row in the tile)."""
LOOKUP_LOOPS = ("m", "tile", "group", "r", "byte", "plane", "half", "entry")
"""The loops of :data:`LOOKUP_BLOCK`, outermost first; a single-plane format has no ``plane``
loop (a unit loop vanishes in scheduling and breaks tensorize). Schedules unpack them in this order."""
BYTE_LOOP, PLANE_LOOP, HALF_LOOP, ENTRY_LOOP = LOOKUP_LOOPS[4:]
OUTPUT_BLOCK = "y"
"""``lut_matmul``'s output ``[M, N]``: the epilogue, or the crop (and bias) after :data:`PADDED_OUTPUT_BLOCK`."""
PADDED_OUTPUT_BLOCK = "y_pad"
"""The epilogue over whole 32-row tiles, present when N is not a multiple of 32 or there is a bias,
and in kernels with the folded epilogue (the group sum before the row scale)."""

# ---- lut_precompute -------------------------------------------------------------------------

SKIP_SUM_BLOCK = "skip_sum"
"""``x + skip`` of a fused norm with a residual input."""
SUMSQ_BLOCK = "sumsq"
"""A fused norm's per-row sum of squares."""
NORMED_BLOCK = "normed"
"""A fused norm's normalized activation."""
ROWMAX_BLOCK = "rowmax"
"""The per-row maximum of ``|x|``."""
ROW_SCALE_BLOCK = "row_scale"
ROW_UP_BLOCK = "row_up"
"""The power of two a row is scaled by (``row_scale`` undoes it)."""
FLOAT_TABLE_BLOCK = "table"
"""Fast mode's float tables before int8 rounding (exact mode names its float tables :data:`TABLES`)."""
MAXABS_BLOCK = "maxabs"
"""Fast mode's per-group maximum of ``|T|``."""
INVERSE_BLOCK = "inverse"
"""Fast mode's per-group ``127 / max|T|``."""
LUT_SCALE_BLOCK = "lut_scale"
XSUM_BLOCK = "xsum"
"""The per-group sum of the activation."""
