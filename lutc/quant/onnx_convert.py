"""Converters between ONNX quantized-weight layouts and :class:`QuantizedWeight`.

Two layouts are covered:

- ``com.microsoft::MatMulNBits`` (ONNX Runtime contrib op): ``B`` is uint8
  ``[N, ceil(K/block), block*bits/8]`` with codes packed LSB-first along K, ``scales`` is
  ``[N, n_blocks]``, optional ``zero_points`` are packed uint8 ``[N, ceil(n_blocks*bits/8)]`` or
  floats ``[N, n_blocks]``. The weight is already ``[N, K]``, lutc's orientation.
- Standard ``DequantizeLinear`` feeding a ``MatMul``: a ``[K, N]`` INT4/UINT4 (opset 21) or
  INT2/UINT2 (opset 25) tensor, blocked along K (``axis=0``), per-channel (``axis=1``) or
  per-tensor. Signed codes ``c`` become unsigned ``q = c + 2**(bits-1)`` (zero points too), so
  INT4 with zero zero-points is the symmetric format.

Measured with ONNX Runtime 1.32 (CPU, one-node models, identity ``A``):

- ``MatMulNBits`` runs only bits 2, 4 and 8 on CPU; ``block_size`` must be a power of two >= 16.
- Symmetric (default zero point ``2**(bits-1)``) and uint8 zero points dequantize to exactly
  ``fl32(s * (q - z))`` - bit-identical to :func:`~lutc.quant.weights.dequantize`.
- Float zero points mean the same real value ``s * (q - z)`` but are rounded as
  ``fl32(fl32(s*q) - fl32(s*z))``; this differs from lutc's ``fl32(s * (q - z))`` by at most a few
  ulp of ``s * max(q, z)`` (cancellation makes it look large relative to ``w`` when ``q ~ z``).
  The stored numbers need no conversion, so float zero points map to ``IntFormat(zero_dtype="float")``
  unchanged. ORT rejects 8-bit weights with float zero points; it accepts fp16 zero points with
  fp32 scales (upcast exactly), which we read as fp32.
- fp16 scales require fp16 ``A`` (``T1`` binds A, scales and bias: a type error otherwise).
- ``DequantizeLinear`` INT4/UINT4 (opset 21) and INT2/UINT2 (opset 25) give exactly
  ``s * (x - zp)``; ``onnx.numpy_helper`` reads and writes these types (as ``ml_dtypes`` arrays),
  so no custom tensor decoder is needed: pass its arrays straight to :func:`from_dequantize_linear`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from .bitpack import pack_bits, unpack_bits
from .formats import IntFormat
from .weights import QuantizedWeight, describe

MATMUL_NBITS_BITS = (1, 2, 3, 4, 5, 6, 7, 8)
"""Bit widths :func:`from_matmul_nbits` converts (ORT's CPU kernel itself runs only 2, 4 and 8)."""

_NARROW_INT_TYPES = {  # ml_dtypes dtype name -> (bits, signed, ONNX data type)
    "int4": (4, True, onnx.TensorProto.INT4),
    "uint4": (4, False, onnx.TensorProto.UINT4),
    "int2": (2, True, onnx.TensorProto.INT2),
    "uint2": (2, False, onnx.TensorProto.UINT2),
}


@dataclass(frozen=True)
class TensorMeta:
    """A tensor's shape and dtype without its data: what the format checks read (an array works too)."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)


def _as_array(name: str, arr: object) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{name} must be a numpy array; got {type(arr).__name__}")
    return arr


def _scale_dtype(name: str, arr: np.ndarray) -> str:
    """The lutc scale dtype of ``arr``, or a ``ValueError`` for anything but float32/float16."""
    if arr.dtype not in (np.float32, np.float16):
        raise ValueError(f"{name} has {describe(arr)}; lutc stores float32 or float16 scales")
    return str(arr.dtype)


def _check_block_size(block_size: int) -> None:
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)):
        raise ValueError(f"block_size must be an int; got {block_size!r}")
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block_size={block_size} is not a power of two >= 16, as MatMulNBits requires")


def _check_per_block(name: str, arr, shape: tuple[int, int], why: str) -> None:
    """``arr`` (an array or :class:`TensorMeta`) has ``shape`` or its flat legacy form ``[N * cols]``;
    ``why`` names the sizes implying it."""
    if tuple(arr.shape) not in (shape, (shape[0] * shape[1],)):
        raise ValueError(f"{name} has {describe(arr)}; {why} need shape {shape} or flat ({shape[0] * shape[1]},)")


def _reshape_per_block(name: str, arr: np.ndarray, shape: tuple[int, int], why: str) -> np.ndarray:
    """``arr`` as ``shape``, from itself or its flat legacy form (:func:`_check_per_block`)."""
    _check_per_block(name, arr, shape, why)
    return arr.reshape(shape)


# ---------------------------------------------------------------------------- MatMulNBits


def unpack_matmul_nbits_codes(b: np.ndarray, bits: int, k: int) -> np.ndarray:
    """``B`` uint8 ``[N, n_blocks, blob]`` -> codes uint8 ``[N, k]`` (any bits in 1..8).

    The block size is ``blob * 8 / bits``; padding codes past ``k`` in the last block are dropped.
    """
    b = _as_array("B", b)
    if b.ndim != 3 or b.dtype != np.uint8:
        raise ValueError(f"B has {describe(b)}; expected uint8 [N, n_blocks, blob_size]")
    if not 1 <= bits <= 8:
        raise ValueError(f"bits={bits} is outside 1..8")
    if (b.shape[2] * 8) % bits:
        raise ValueError(f"B blob_size {b.shape[2]} bytes does not hold a whole number of {bits}-bit codes")
    n, blocks, blob = b.shape
    block = blob * 8 // bits
    if blocks != -(-k // block):
        raise ValueError(f"B has {blocks} blocks of {block} codes; K={k} needs {-(-k // block)}")
    return unpack_bits(b, bits, block).reshape(n, blocks * block)[:, :k]


def pack_matmul_nbits_codes(codes: np.ndarray, bits: int, block_size: int) -> np.ndarray:
    """Codes ``[N, K]`` -> ``B`` uint8 ``[N, ceil(K/block), block*bits/8]`` (last block zero-padded)."""
    n, k = codes.shape
    blocks = -(-k // block_size)
    padded = np.zeros((n, blocks * block_size), np.uint8)
    padded[:, :k] = codes
    return pack_bits(padded.reshape(n, blocks, block_size), bits)


def _nbits_zeros(zero_points: np.ndarray, n: int, blocks: int, bits: int, scale_dtype: str) -> np.ndarray:
    """MatMulNBits zero points -> lutc ``zeros`` ``[N, n_blocks]`` (uint8 codes or scale-dtype floats)."""
    zero_points = _as_array("zero_points", zero_points)
    why = f"N={n}, {blocks} blocks, bits={bits}"
    if zero_points.dtype == np.uint8:
        packed = _reshape_per_block("packed zero_points", zero_points, (n, -(-blocks * bits // 8)), why)
        return unpack_bits(packed, bits, blocks)
    if zero_points.dtype not in (np.float32, np.float16):
        raise ValueError(f"zero_points has {describe(zero_points)}; expected uint8 or {scale_dtype}")
    zeros = _reshape_per_block("float zero_points", zero_points, (n, blocks), why)
    cast = zeros.astype(scale_dtype)
    if not np.array_equal(cast.astype(zeros.dtype), zeros, equal_nan=True):
        raise ValueError(f"float zero_points ({zeros.dtype}) do not convert exactly to the scales' dtype {scale_dtype}")
    return cast


def _check_nbits_attrs(k: int, n: int, bits: int, block_size: int) -> None:
    if bits not in MATMUL_NBITS_BITS:
        raise ValueError(f"unsupported bit width {bits}: lutc converts MatMulNBits with bits {MATMUL_NBITS_BITS}")
    _check_block_size(block_size)
    if k <= 0 or n <= 0:
        raise ValueError(f"K={k} and N={n} must be positive")
    if k % block_size:
        raise ValueError(
            f"K={k} is not a multiple of block_size={block_size}: lutc groups split K evenly, "
            "so a padded last MatMulNBits block is not supported"
        )


def _zero_point_dtype(zero_points, n: int, blocks: int, bits: int) -> str:
    """``"int"`` (packed uint8) or ``"float"``: the kind of MatMulNBits ``zero_points``, shape-checked."""
    why = f"N={n}, {blocks} blocks, bits={bits}"
    if zero_points.dtype == np.uint8:
        _check_per_block("packed zero_points", zero_points, (n, -(-blocks * bits // 8)), why)
        return "int"
    if zero_points.dtype not in (np.float32, np.float16):
        raise ValueError(f"zero_points has {describe(zero_points)}; expected uint8, float32 or float16")
    _check_per_block("float zero_points", zero_points, (n, blocks), why)
    return "float"


def _nbits_tensors(b, scales, zero_points, k: int, n: int, bits: int, block_size: int) -> tuple[str, str]:
    """Check ``MatMulNBits`` tensors' shapes and dtypes against the attributes (any bit width);
    return the scales' dtype and the zero points' kind (``"implied"``, ``"int"``, ``"float"``)."""
    blocks = k // block_size
    blob = (n, blocks, block_size * bits // 8)
    if tuple(b.shape) != blob or b.dtype != np.uint8:
        raise ValueError(f"B has {describe(b)}; K={k}, N={n}, bits={bits}, block_size={block_size} need uint8 {blob}")
    scale_dtype = _scale_dtype("scales", scales)
    _check_per_block("scales", scales, (n, blocks), f"K={k}, N={n}, block_size={block_size}")
    return scale_dtype, "implied" if zero_points is None else _zero_point_dtype(zero_points, n, blocks, bits)


def matmul_nbits_format(b, scales, zero_points, *, k: int, n: int, bits: int, block_size: int) -> IntFormat:
    """The format of ``MatMulNBits`` tensors, checked from their shapes and dtypes alone (arrays or
    :class:`TensorMeta`): what lutc knows of a weight before reading its bytes."""
    _check_nbits_attrs(k, n, bits, block_size)
    scale_dtype, zero = _nbits_tensors(b, scales, zero_points, k, n, bits, block_size)
    zero_dtype = "float" if zero == "float" else "int"
    return IntFormat(bits, block_size, symmetric=zero == "implied", zero_dtype=zero_dtype, scale_dtype=scale_dtype)


def from_matmul_nbits(
    b: np.ndarray,
    scales: np.ndarray,
    zero_points: np.ndarray | None = None,
    *,
    k: int,
    n: int,
    bits: int,
    block_size: int,
) -> QuantizedWeight:
    """``MatMulNBits`` tensors -> ``QuantizedWeight`` in ``IntFormat(bits, block_size, ...)``.

    Symmetric when ``zero_points`` is None; uint8 zero points give ``zero_dtype="int"``, float ones
    ``"float"`` (ORT's float-zero rounding is described in the module docstring). K must be a
    multiple of ``block_size`` (lutc groups split K evenly).
    """
    b, scales = _as_array("B", b), _as_array("scales", scales)
    fmt = matmul_nbits_format(b, scales, zero_points, k=k, n=n, bits=bits, block_size=block_size)
    blocks = k // block_size
    scales = scales.reshape(n, blocks)
    zeros = None if zero_points is None else _nbits_zeros(zero_points, n, blocks, bits, fmt.scale_dtype)
    codes = unpack_matmul_nbits_codes(b, bits, k)
    return QuantizedWeight(fmt, codes, np.ascontiguousarray(scales), zeros)


def _nbits_block_size(qw: QuantizedWeight) -> int:
    """``block_size`` for ``qw``: its group size, or K for per-channel/per-tensor formats."""
    k = qw.shape[1]
    group = qw.fmt.group_size
    if group in ("channel", "tensor"):
        group = k
    if group < 16 or group & (group - 1):
        raise ValueError(
            f"format {qw.fmt.name} with K={k} has {group} K elements per scale; "
            "MatMulNBits needs a power-of-two block_size >= 16"
        )
    return int(group)


def to_matmul_nbits(qw: QuantizedWeight) -> dict:
    """``QuantizedWeight`` -> the arrays and attributes of a ``MatMulNBits`` node.

    Returns ``b``, ``scales`` (``[N, n_blocks]``, the A dtype ORT will require), ``zero_points``
    (None when the implied zero is ORT's default ``2**(bits-1)``; packed uint8 or floats otherwise;
    ternary weights get packed zero points of 1) and attributes ``K``, ``N``, ``bits``, ``block_size``.
    """
    n, k = qw.shape
    fmt = qw.fmt
    block_size = _nbits_block_size(qw)
    if fmt.zero_point == "float":
        zero_points = qw.zeros.copy()
    elif fmt.zero_point == "none" and fmt.implied_zero == 2 ** (fmt.bits - 1):
        zero_points = None
    else:
        zero_points = pack_bits(qw.zero_points().astype(np.uint8), fmt.bits)
    b = pack_matmul_nbits_codes(qw.codes, fmt.bits, block_size)
    return {
        "b": b,
        "scales": qw.scales.copy(),
        "zero_points": zero_points,
        "K": k,
        "N": n,
        "bits": fmt.bits,
        "block_size": block_size,
    }


def _node_desc(node: onnx.NodeProto) -> str:
    return f"{node.domain or 'ai.onnx'}::{node.op_type} node {node.name!r}"


def _node_attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _node_input(node: onnx.NodeProto, initializers, index: int, role: str):
    """The initializer feeding input ``index`` (None when absent or empty): an array, or whatever
    ``initializers`` maps its name to (a :class:`TensorMeta` where only shapes are checked)."""
    name = node.input[index] if index < len(node.input) else ""
    if not name:
        return None
    if name not in initializers:
        raise ValueError(f"{_node_desc(node)}: input {role} {name!r} is not an initializer")
    value = initializers[name]
    return value if isinstance(value, TensorMeta) else np.asarray(value)


def _require(node: onnx.NodeProto, initializers, index: int, role: str):
    arr = _node_input(node, initializers, index, role)
    if arr is None:
        raise ValueError(f"{_node_desc(node)}: required input {role} is missing")
    return arr


def _nbits_attrs(node: onnx.NodeProto) -> dict:
    attrs = _node_attrs(node)
    missing = [a for a in ("K", "N", "block_size") if a not in attrs]
    if missing:
        raise ValueError(f"{_node_desc(node)}: missing attributes {missing}")
    if attrs.get("weight_prepacked", 0):
        raise ValueError(
            f"{_node_desc(node)}: weight_prepacked={attrs['weight_prepacked']} (an EP-specific layout) is not supported"
        )
    return {"k": attrs["K"], "n": attrs["N"], "bits": attrs.get("bits", 4), "block_size": attrs["block_size"]}


def _nbits_inputs(node: onnx.NodeProto, tensors) -> tuple[dict, object, object, object | None, object | None]:
    """A ``MatMulNBits`` node's attributes and its B, scales, zero_points and bias tensors (arrays or
    :class:`TensorMeta`), checked for what the node itself says; errors name the node."""
    desc = _node_desc(node)
    if node.op_type != "MatMulNBits" or node.domain != "com.microsoft":
        raise ValueError(f"{desc}: expected com.microsoft::MatMulNBits")
    attrs = _nbits_attrs(node)
    if len(node.input) > 4 and node.input[4]:
        raise ValueError(f"{desc}: g_idx input {node.input[4]!r} (act-order group index) is not supported")
    b = _require(node, tensors, 1, "B")
    scales = _require(node, tensors, 2, "scales")
    zero_points = _node_input(node, tensors, 3, "zero_points")
    return attrs, b, scales, zero_points, _node_input(node, tensors, 5, "bias")


def _checked_nbits_format(node: onnx.NodeProto, attrs: dict, b, scales, zero_points, bias) -> IntFormat:
    """:func:`matmul_nbits_format` of the node's tensors, then its bias; errors name the node."""
    try:
        fmt = matmul_nbits_format(b, scales, zero_points, **attrs)
    except ValueError as err:
        raise ValueError(f"{_node_desc(node)}: {err}") from err
    if bias is not None and (tuple(bias.shape) != (attrs["n"],) or bias.dtype != scales.dtype):
        raise ValueError(
            f"{_node_desc(node)}: bias has {describe(bias)}; expected shape ({attrs['n']},) dtype {scales.dtype}"
        )
    return fmt


def matmul_nbits_node_format(node: onnx.NodeProto, tensors) -> IntFormat:
    """The format of a ``MatMulNBits`` node of 1-4 bits whose inputs are initializers, from their
    shapes and dtypes (``tensors`` maps names to arrays or :class:`TensorMeta`)."""
    return _checked_nbits_format(node, *_nbits_inputs(node, tensors))


def matmul_nbits_from_node(
    node: onnx.NodeProto, initializers: dict[str, np.ndarray]
) -> tuple[QuantizedWeight, np.ndarray | None]:
    """A ``MatMulNBits`` node whose B/scales/zero_points/bias are initializers -> ``(weight, bias)``.

    Checks the attributes against the tensors; every problem is a ``ValueError`` naming the node.
    """
    attrs, b, scales, zero_points, bias = _nbits_inputs(node, initializers)
    _checked_nbits_format(node, attrs, b, scales, zero_points, bias)
    try:
        qw = from_matmul_nbits(b, scales, zero_points, **attrs)
    except ValueError as err:
        raise ValueError(f"{_node_desc(node)}: {err}") from err
    return qw, bias


# ------------------------------------------------------------------------ DequantizeLinear


def _int_bits(name: str, arr, signed: bool, bits: int | None) -> int:
    """The bit width of integer tensor ``arr`` (an array or :class:`TensorMeta`), from its dtype or
    ``bits``; checks the dtype only."""
    if arr.dtype.name in _NARROW_INT_TYPES:
        type_bits, type_signed, _ = _NARROW_INT_TYPES[arr.dtype.name]
        if type_signed != signed or bits not in (None, type_bits):
            raise ValueError(f"{name} has dtype {arr.dtype} but signed={signed}, bits={bits} were given")
        bits = type_bits
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"{name} has {describe(arr)}; expected INT4/UINT4/INT2/UINT2 or integer values")
    elif bits is None:
        raise ValueError(
            f"{name} has dtype {arr.dtype}, an {arr.dtype.itemsize * 8}-bit type; only 2- and 4-bit "
            "types are supported (pass bits=2 or 4 for narrower values held in it)"
        )
    if bits not in (2, 4):
        raise ValueError(f"unsupported bit width {bits} for DequantizeLinear: only 2 and 4 (INT2/UINT2/INT4/UINT4)")
    return bits


def _int_values(name: str, arr: np.ndarray, signed: bool, bits: int | None) -> tuple[np.ndarray, int]:
    """Integer values of ``arr`` as int16, and their bit width, checking type and range."""
    arr = _as_array(name, arr)
    bits = _int_bits(name, arr, signed, bits)
    values = arr.astype(np.int16)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if values.size and (values.min() < lo or values.max() > hi):
        raise ValueError(
            f"{name} holds values in [{values.min()}, {values.max()}], outside [{lo}, {hi}] "
            f"for {'signed' if signed else 'unsigned'} {bits}-bit"
        )
    return values, bits


def _dql_layout(shape: tuple[int, int], scale: np.ndarray, axis: int, block_size: int) -> int | str:
    """The lutc group size of a DequantizeLinear ``[K, N]`` weight with this scale/axis/block."""
    k, n = shape
    if axis not in (0, 1, -1, -2):
        raise ValueError(f"axis={axis} is out of range for a 2-D [K, N] weight")
    axis %= 2
    if block_size:
        if axis != 0:
            raise ValueError(f"block_size={block_size} along axis=1 (N) is not supported; lutc blocks along K (axis=0)")
        if block_size < 0 or k % block_size:
            raise ValueError(f"K={k} is not a multiple of block_size={block_size}")
        if scale.shape != (k // block_size, n):
            raise ValueError(
                f"scale has {describe(scale)}; K={k}, N={n}, block_size={block_size} need {(k // block_size, n)}"
            )
        return block_size
    if scale.ndim <= 1 and scale.size == 1:
        return "tensor"
    if scale.ndim != 1:
        raise ValueError(f"scale has {describe(scale)}; a 2-D scale needs block_size > 0")
    if axis != 1:
        raise ValueError(f"per-axis scale along axis=0 (one scale per K row, shape {scale.shape}) is not supported")
    if scale.shape != (n,):
        raise ValueError(f"scale has {describe(scale)}; per-channel along axis=1 needs ({n},)")
    return "channel"


def _per_group(arr: np.ndarray, group: int | str, n: int) -> np.ndarray:
    """A DequantizeLinear scale/zero-point laid out for ``group`` -> lutc ``[N, n_groups]``."""
    if group == "tensor":
        return np.full((n, 1), arr.reshape(()), arr.dtype)
    if group == "channel":
        return arr.reshape(n, 1).copy()
    return np.ascontiguousarray(arr.T)


def _dql_zeros(zero_point: np.ndarray | None, scale: np.ndarray, signed: bool, bits: int) -> np.ndarray:
    """Zero points as int16 values laid out like ``scale`` (0 when absent)."""
    if zero_point is None:
        return np.zeros(scale.shape, np.int16)
    values, _ = _int_values("zero_point", zero_point, signed, bits)
    if values.shape != scale.shape:
        raise ValueError(f"zero_point has {describe(zero_point)} but scale has {describe(scale)}")
    return values


def dequantize_linear_format(
    x, scale, zero_point: np.ndarray | None = None, *, axis: int, block_size: int = 0, signed: bool,
    bits: int | None = None,
) -> IntFormat:  # fmt: skip
    """The format of a ``DequantizeLinear`` weight ``[K, N]``, from the shapes and dtypes of ``x`` and
    ``scale`` (arrays or :class:`TensorMeta`) and the values of ``zero_point`` (symmetric when every
    zero point, offset to unsigned, is ``2**(bits-1)``)."""
    bits = _int_bits("x", x, signed, bits)
    if x.ndim != 2:
        raise ValueError(f"x has {describe(x)}; expected a 2-D [K, N] MatMul weight")
    scale_dtype = _scale_dtype("scale", scale)
    group = _dql_layout(tuple(x.shape), scale, axis, block_size)
    zeros = _dql_zeros(zero_point, scale, signed, bits) + (1 << (bits - 1) if signed else 0)
    return IntFormat(bits, group, symmetric=bool(np.all(zeros == 1 << (bits - 1))), scale_dtype=scale_dtype)


def from_dequantize_linear(
    x: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray | None = None,
    *,
    axis: int,
    block_size: int = 0,
    signed: bool,
    bits: int | None = None,
) -> QuantizedWeight:
    """A ``DequantizeLinear`` weight ``[K, N]`` -> ``QuantizedWeight`` ``[N, K]``.

    ``x``/``zero_point`` are INT4/UINT4/INT2/UINT2 arrays as ``onnx.numpy_helper`` returns them, or
    plain integer arrays with ``bits`` given. Signed values are offset by ``2**(bits-1)``; the
    result is symmetric when every (offset) zero point equals ``2**(bits-1)``.
    """
    values, bits = _int_values("x", x, signed, bits)
    scale = _as_array("scale", scale)
    fmt = dequantize_linear_format(x, scale, zero_point, axis=axis, block_size=block_size, signed=signed, bits=bits)
    offset = 1 << (bits - 1) if signed else 0
    zeros = _per_group(_dql_zeros(zero_point, scale, signed, bits) + offset, fmt.group_size, values.shape[1])
    codes = np.ascontiguousarray((values + offset).T.astype(np.uint8))
    scales = _per_group(scale, fmt.group_size, values.shape[1])
    return QuantizedWeight(fmt, codes, scales, None if fmt.zero_point == "none" else zeros.astype(np.uint8))


def _dql_params(arr: np.ndarray, group: int | str, name: str) -> np.ndarray:
    """lutc ``[N, n_groups]`` -> the DequantizeLinear layout for ``group``."""
    if group == "tensor":
        if np.any(arr != arr[:1]):
            raise ValueError(f"per-tensor format has {name} that differ between rows; cannot write one scalar")
        return arr[:1, :1].reshape(()).copy()
    if group == "channel":
        return arr[:, 0].copy()
    return np.ascontiguousarray(arr.T)


def to_dequantize_linear(qw: QuantizedWeight, signed: bool) -> dict:
    """``QuantizedWeight`` -> a ``DequantizeLinear`` producing the ``[K, N]`` MatMul weight.

    Returns ``x`` (int8/uint8 values ``[K, N]`` for ``onnx.helper.make_tensor``), ``data_type``
    (INT4/UINT4/INT2/UINT2), ``scale``, ``zero_point`` (None when all zero), ``axis``, ``block_size``.
    """
    fmt = qw.fmt
    if fmt.zero_point == "float":
        raise ValueError(f"format {fmt.name} has float zero points; DequantizeLinear zero points are integers")
    if fmt.bits not in (2, 4):
        raise ValueError(f"unsupported bit width {fmt.bits} for DequantizeLinear: ONNX has INT2/INT4 types only")
    group = fmt.group_size
    offset = 1 << (fmt.bits - 1) if signed else 0
    dtype = np.int8 if signed else np.uint8
    zeros = (qw.zero_points().astype(np.int16) - offset).astype(dtype)
    zero_point = _dql_params(zeros, group, "zero points")
    type_name = f"{'' if signed else 'u'}int{fmt.bits}"
    return {
        "x": (qw.codes.T.astype(np.int16) - offset).astype(dtype),
        "data_type": _NARROW_INT_TYPES[type_name][2],
        "scale": _dql_params(qw.scales, group, "scales"),
        "zero_point": None if not zero_point.any() else zero_point,
        "axis": 0 if isinstance(group, (int, np.integer)) else 1,
        "block_size": int(group) if isinstance(group, (int, np.integer)) else 0,
    }


def _dql_inputs(node: onnx.NodeProto, initializers) -> tuple[object, object, np.ndarray | None, dict]:
    """A ``DequantizeLinear`` weight node's x, scale (arrays or :class:`TensorMeta`), zero point
    (values) and the keyword arguments of :func:`from_dequantize_linear`; errors name the node."""
    desc = _node_desc(node)
    if node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
        raise ValueError(f"{desc}: expected ai.onnx::DequantizeLinear")
    attrs = _node_attrs(node)
    x = _require(node, initializers, 0, "x")
    scale = _require(node, initializers, 1, "x_scale")
    zero_point = _node_input(node, initializers, 2, "x_zero_point")
    if x.dtype.name not in _NARROW_INT_TYPES:
        raise ValueError(f"{desc}: x has {describe(x)}; only INT4/UINT4/INT2/UINT2 are supported")
    options = {"axis": attrs.get("axis", 1), "block_size": attrs.get("block_size", 0),
               "signed": _NARROW_INT_TYPES[x.dtype.name][1]}  # fmt: skip
    return x, scale, None if zero_point is None else np.asarray(zero_point), options


def dequantize_linear_node_format(node: onnx.NodeProto, initializers) -> IntFormat:
    """The format of a ``DequantizeLinear`` weight node (``initializers`` maps names to arrays or, but
    for the zero point, :class:`TensorMeta`)."""
    x, scale, zero_point, options = _dql_inputs(node, initializers)
    try:
        return dequantize_linear_format(x, scale, zero_point, **options)
    except ValueError as err:
        raise ValueError(f"{_node_desc(node)}: {err}") from err


def dequantize_linear_from_node(node: onnx.NodeProto, initializers: dict[str, np.ndarray]) -> QuantizedWeight:
    """A ``DequantizeLinear`` node with initializer inputs (as ``onnx.numpy_helper`` reads them) -> weight.

    The output is taken to be a ``[K, N]`` MatMul ``B``; errors are ``ValueError`` naming the node.
    """
    x, scale, zero_point, options = _dql_inputs(node, initializers)
    try:
        return from_dequantize_linear(np.asarray(x), np.asarray(scale), zero_point, **options)
    except ValueError as err:
        raise ValueError(f"{_node_desc(node)}: {err}") from err


def matmul_nbits_node(
    name: str, a: str, out: str, arrays: dict, bias: np.ndarray | None = None, prefix: str | None = None
) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    """A ``MatMulNBits`` node ``name`` reading ``a``, from :func:`to_matmul_nbits` arrays, and its initializers.

    Initializers are named ``{prefix}.B``, ``.scales``, ``.zero_points`` and ``.bias`` (``prefix``
    defaults to ``name``); absent optional inputs are left out.
    """
    prefix = prefix or name
    inputs = [a, f"{prefix}.B", f"{prefix}.scales", "", "", ""]
    inits = [onnx.numpy_helper.from_array(arrays["b"], inputs[1])]
    inits.append(onnx.numpy_helper.from_array(arrays["scales"], inputs[2]))
    if arrays["zero_points"] is not None:
        inputs[3] = f"{prefix}.zero_points"
        inits.append(onnx.numpy_helper.from_array(arrays["zero_points"], inputs[3]))
    if bias is not None:
        inputs[5] = f"{prefix}.bias"
        inits.append(onnx.numpy_helper.from_array(np.asarray(bias, np.float32), inputs[5]))
    while not inputs[-1]:
        inputs.pop()
    attrs = {key: int(arrays[key]) for key in ("K", "N", "bits", "block_size")}
    node = onnx.helper.make_node("MatMulNBits", inputs, [out], name=name, domain="com.microsoft", **attrs)
    return node, inits
