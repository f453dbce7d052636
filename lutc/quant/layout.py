"""The packed kernel layout: how every lutc kernel reads quantized weights.

A ``[N, K]`` weight of ``b`` bits is split into ``b`` **bit-planes** (ternary: 2). Plane ``i``
holds bit ``i`` of every code. Along K, plane bits are cut into **activation groups** of
``g`` elements (default 4). The ``g`` bits of one group form a table **index** ``j``, element
``k = a*g + t`` contributing bit ``t`` (LSB = first element). Table entry ``T[a, j]`` is
``sum_t (2*bit_t(j) - 1) * x[a*g + t]``.

**Index encoding (sign-magnitude).** ``T[~j] = -T[j]``, so each stored index is
``p = s << (g-1) | m`` with sign ``s = bit_{g-1}(j)`` and magnitude
``m = j & mask`` if ``s == 0`` else ``~j & mask`` (``mask = 2**(g-1) - 1``). Then
``T[j] = (-1)**s * T[m]`` with ``m < 2**(g-1)``:

- a symmetrized kernel keeps the ``2**(g-1)`` entries ``T[0..mask]``, looks up ``m = p & mask``
  and negates when ``p`` has its top bit set;
- a full-table kernel stores the 16 entries ``[T[0..7], -T[0..7]]`` and looks up ``p`` directly
  (for g = 4 exactly one ``vpshufb``/``tbl`` table).

**Bytes.** One byte holds the ``8 // g`` indices of 8 consecutive K elements of one plane and
one row, index ``u`` at bits ``[g*u, g*u + g)``. For g = 4 the low nibble indexes the table of
activation group ``2*kb`` and the high nibble that of ``2*kb + 1``.

**Tiles.** Rows are grouped in tiles of ``TILE_N = 32`` (one AVX2 register of bytes, two NEON
registers, one CUDA warp). ``data`` is uint8 ``[N_pad / 32, K_pad / 8, planes, 32]``:
``data[t, kb, i, r]`` is the byte of row ``32*t + r``, plane ``i``, K elements
``[8*kb, 8*kb + 8)``. A kernel streams one tile contiguously: for each K byte, the planes
of 32 rows, so the two tables a byte indexes serve every plane before moving on.

**The vector layout (GPUs).** A GPU thread computes one row, so it wants that row's bytes
contiguous, in loads of up to 16 bytes, where the tile layout gives it one byte per (K byte,
plane). For ``V`` (:func:`vector_bytes`: the largest of 2, 4, 8, 16 dividing a weight group's K
bytes) ``data`` becomes uint8 ``[N_pad / 32, K_pad / (8 V), 32, planes, V]``:
``vdata[t, v, r, i, j] = data[t, V*v + j, i, r]`` (:func:`to_vector_layout`, inverse
:func:`from_vector_layout`). One thread's ``planes * V`` bytes of a vector slot are contiguous
(w4g32: 4 planes x 4 bytes, one 16-byte load; w2g128: 2 x 16, two), and a warp's 32 threads read
``32 * planes * V`` contiguous bytes (512 for w4g32). A slot never spans two weight groups, so
a kernel's groups can go to different warps. Scales and offsets keep their tile layout.

**Scales and zero points** are stored per tile as well, ``[N_pad / 32, n_groups, 32]``:

- ``scales``: the format's scales in their storage dtype (fp32 or fp16; fp16 with half scales);
- ``offsets``: float32 (float16 with half scales) ``s * ((2**b - 1) / 2 - z)``, the zero point and the bit-plane offset
  folded into one correction multiplied by the group's activation sum. Formats with stored
  zero points carry this array; for symmetric (``z = 2**(b-1)``, offset ``-s/2``) and ternary
  (``z = 1``, offset ``+s/2``) formats it is ``None`` and kernels compute ``s * c`` with the
  constant :func:`implied_offset`, which saves a fifth of the bytes a 2-bit kernel streams.

**Half scales.** :func:`half_scaled` stores ``scales`` and ``offsets`` as float16 whatever the
format's scale dtype (fast mode's default where the CPU converts float16 in hardware): 2 bytes
instead of 4 per group and row, 10 % of a 4-bit g32 weight's bytes (17 % with offsets). Each value
moves by at most ``2**-11`` of itself, or ``2**-25`` below float16's normal range; one above its
largest finite value, 65504, is refused.

**Padding.** N is padded to a multiple of 32 with zero codes and zero scales. For per-channel
and per-tensor formats, K is padded to a multiple of 8 with zero codes; the precompute pads the
activations with zeros, which adds ``±0`` to every table entry. Grouped formats need
``group_size % 8 == 0``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .formats import AnyFormat, group_length, n_groups
from .weights import QuantizedWeight, check_finite

TILE_N = 32
K_BYTE = 8
VECTOR_WIDTHS = (2, 4, 8, 16)
"""Bytes per (row, plane) of a vector layout slot: 16 is the widest GPU load (``uint4``)."""
SUPPORTED_G = (1, 2, 4, 8)
CHUNK_BYTES = 1 << 21
"""Bytes of codes :func:`pack` works on at a time, which bounds its temporaries."""


def check_g(g: int) -> None:
    """Index widths the layout can pack: ``g`` must divide 8."""
    if g not in SUPPORTED_G:
        raise ValueError(f"activation group g={g} is not supported; choose one of {SUPPORTED_G}")


def padded_k(fmt: AnyFormat, k: int) -> int:
    """K after padding to whole bytes; grouped formats must already be aligned."""
    if fmt.group_size in ("channel", "tensor"):
        return -(-k // K_BYTE) * K_BYTE
    n_groups(fmt, k)
    if fmt.group_size % K_BYTE:
        raise ValueError(f"group size {fmt.group_size} is not a multiple of {K_BYTE}, which the packed layout needs")
    return k


def _pad_to(arr: np.ndarray, rows: int, cols: int) -> np.ndarray:
    out = np.zeros((rows, cols), arr.dtype)
    out[: arr.shape[0], : arr.shape[1]] = arr
    return out


def _tile(arr: np.ndarray) -> np.ndarray:
    """``[N_pad, X]`` -> ``[N_pad / 32, X, 32]``."""
    return np.ascontiguousarray(arr.reshape(-1, TILE_N, arr.shape[1]).transpose(0, 2, 1))


def untile(arr: np.ndarray, n: int | None = None) -> np.ndarray:
    """``[N_pad / 32, X, 32]`` -> ``[N_pad, X]``, cut to the first ``n`` rows when given."""
    return arr.transpose(0, 2, 1).reshape(-1, arr.shape[1])[:n]


def _sign_magnitude(raw: np.ndarray, g: int) -> np.ndarray:
    """Raw indices -> sign-magnitude, in place: ``p = raw ^ (s * mask)`` with ``s = raw >> (g-1)``.

    Works field-wise on bytes that hold ``8 // g`` indices of ``g`` bits as well as on one index
    per byte: each field's sign bit is moved to the field's LSB, then spread over its ``mask``.
    """
    field_lsbs = sum(1 << (g * u) for u in range(K_BYTE // g))
    spread = (raw >> np.uint8(g - 1)) & np.uint8(field_lsbs)
    spread *= np.uint8((1 << (g - 1)) - 1)
    raw ^= spread
    return raw


def encode_indices(codes: np.ndarray, planes: int, g: int) -> np.ndarray:
    """uint8 codes ``[N, K]`` -> sign-magnitude indices ``[planes, N, K / g]``."""
    n, k = codes.shape
    grouped = codes.astype(np.uint8, copy=False).reshape(n, k // g, g)
    raw = np.zeros((planes, n, k // g), np.uint8)
    for i in range(planes):
        for t in range(g):
            raw[i] |= ((grouped[..., t] >> np.uint8(i)) & np.uint8(1)) << np.uint8(t)
    return _sign_magnitude(raw, g)


def decode_indices(indices: np.ndarray, g: int) -> np.ndarray:
    """Sign-magnitude indices -> raw indices ``j`` (bit ``t`` = bit of element ``t``)."""
    mask = (1 << (g - 1)) - 1
    sign = indices >> (g - 1)
    magnitude = indices & mask
    return np.where(sign == 1, (magnitude ^ mask) | (1 << (g - 1)), magnitude).astype(np.uint8)


def _indices_to_bytes(indices: np.ndarray, g: int) -> np.ndarray:
    """``[planes, N, K / g]`` -> ``[planes, N, K / 8]``."""
    planes, n, groups = indices.shape
    per_byte = K_BYTE // g
    fields = indices.astype(np.uint8, copy=False).reshape(planes, n, groups // per_byte, per_byte)
    out = np.zeros(fields.shape[:-1], np.uint8)
    for u in range(per_byte):
        out |= fields[..., u] << np.uint8(g * u)
    return out


def _bytes_to_indices(data: np.ndarray, g: int) -> np.ndarray:
    planes, n, kbytes = data.shape
    shifts = (g * np.arange(K_BYTE // g)).astype(np.uint8)
    indices = (data[..., None] >> shifts) & ((1 << g) - 1)
    return indices.reshape(planes, n, kbytes * (K_BYTE // g)).astype(np.uint8)


def implied_offset(fmt: AnyFormat) -> float | None:
    """``(2**b - 1)/2 - z`` for formats whose zero point is implied; ``None`` when stored."""
    return None if fmt.zero_point != "none" else (2**fmt.bits - 1) / 2 - fmt.implied_zero


def offsets_of(qw: QuantizedWeight) -> np.ndarray:
    """float32 ``s * ((2**b - 1) / 2 - z)`` per ``[N, n_groups]``."""
    half_range = np.float32((2**qw.fmt.bits - 1) / 2)
    return qw.scales.astype(np.float32) * (half_range - qw.zero_points())


@dataclass(frozen=True, eq=False)
class PackedWeight:
    """A weight in the packed kernel layout (see the module docstring)."""

    fmt: AnyFormat
    n: int
    k: int
    g: int
    data: np.ndarray
    scales: np.ndarray
    offsets: np.ndarray | None
    zeros: np.ndarray | None = None
    """Zero points ``[N, n_groups]`` as given, kept only so :func:`unpack` is lossless."""

    def __post_init__(self) -> None:
        check_g(self.g)
        tiles, groups = -(-self.n // TILE_N), n_groups(self.fmt, self.k)
        half_offsets = isinstance(self.offsets, np.ndarray) and self.offsets.dtype == np.float16
        half_scales = isinstance(self.scales, np.ndarray) and self.scales.dtype == np.float16
        half = half_offsets or (half_scales and self.offsets is None)
        scale_dtype = np.float16 if half else np.dtype(self.fmt.scale_dtype)
        expected = {
            "data": (self.data, (tiles, self.k_pad // K_BYTE, self.fmt.bits, TILE_N), np.uint8),
            "scales": (self.scales, (tiles, groups, TILE_N), scale_dtype),
        }
        if (self.offsets is None) != (implied_offset(self.fmt) is not None):
            need = "no offsets (implied zero point)" if self.offsets is not None else "offsets"
            raise ValueError(f"format {self.fmt.name} packs {need}")
        if self.offsets is not None:
            expected["offsets"] = (self.offsets, (tiles, groups, TILE_N), np.float16 if half else np.float32)
        for name, (arr, shape, dtype) in expected.items():
            if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != dtype:
                got = f"{arr.shape} {arr.dtype}" if isinstance(arr, np.ndarray) else type(arr).__name__
                raise ValueError(f"packed {name} must be {shape} {np.dtype(dtype)}; got {got}")
        if self.offsets is not None:
            check_finite("offsets", self.offsets)

    @property
    def k_pad(self) -> int:
        return padded_k(self.fmt, self.k)

    @property
    def half_scales(self) -> bool:
        """Whether scales and offsets are float16 (:func:`half_scaled`, or a float16 format's
        scales with an implied zero point)."""
        return self.scales.dtype == np.float16 and (self.offsets is None or self.offsets.dtype == np.float16)

    @property
    def n_pad(self) -> int:
        return self.data.shape[0] * TILE_N

    @property
    def planes(self) -> int:
        return self.fmt.bits

    @property
    def group_len(self) -> int:
        """K elements (after padding) sharing one scale."""
        return group_length(self.fmt, self.k_pad)

    @property
    def nbytes(self) -> int:
        """Bytes a kernel streams: indices, scales and offsets."""
        return self.data.nbytes + self.scales.nbytes + (0 if self.offsets is None else self.offsets.nbytes)

    def offset_values(self) -> np.ndarray:
        """float32 offsets ``[N_pad / 32, n_groups, 32]``, computed when implied."""
        if self.offsets is not None:
            return self.offsets
        return self.scales.astype(np.float32) * np.float32(implied_offset(self.fmt))

    def indices(self) -> np.ndarray:
        """Sign-magnitude indices ``[planes, N_pad, K_pad / g]``."""
        planes_first = self.data.transpose(2, 0, 3, 1).reshape(self.planes, self.n_pad, -1)
        return _bytes_to_indices(planes_first, self.g)


def _chunk_rows(k_pad: int) -> int:
    """Rows of codes packed at a time: about :data:`CHUNK_BYTES` of codes, whole tiles."""
    return max(TILE_N, CHUNK_BYTES // max(k_pad, 1) // TILE_N * TILE_N)


def _code_rows(codes: np.ndarray, start: int, rows: int, k_pad: int) -> np.ndarray:
    """Rows ``[start, start + rows)`` of ``codes``, zero-padded to ``[rows, k_pad]``."""
    chunk = codes[start : start + rows]
    return chunk if chunk.shape == (rows, k_pad) else _pad_to(chunk, rows, k_pad)


def _pack_rows(codes: np.ndarray, g: int, out: np.ndarray) -> None:
    """Codes ``[R, K_pad]`` (whole tiles) -> ``out`` ``[R / 32, K_pad / 8, planes, 32]``.

    A plane's bit-stream bytes (element ``8*kb + j`` at bit ``j``) already hold its raw
    indices in the byte layout; only the sign-magnitude encoding is left to apply.
    """
    kbytes = codes.shape[1] // K_BYTE
    for i in range(out.shape[2]):
        plane = np.packbits(codes & np.uint8(1 << i), axis=-1, bitorder="little")
        out[:, :, i, :] = _sign_magnitude(plane, g).reshape(-1, TILE_N, kbytes).transpose(0, 2, 1)


def pack(qw: QuantizedWeight, g: int = 4) -> PackedWeight:
    """Convert a logical quantized weight into the packed kernel layout."""
    check_g(g)
    fmt, (n, k) = qw.fmt, qw.shape
    k_pad, n_pad = padded_k(fmt, k), -(-n // TILE_N) * TILE_N
    data = np.empty((n_pad // TILE_N, k_pad // K_BYTE, fmt.bits, TILE_N), np.uint8)
    step = _chunk_rows(k_pad)
    for start in range(0, n_pad, step):
        rows = min(step, n_pad - start)
        tiles = data[start // TILE_N : (start + rows) // TILE_N]
        _pack_rows(_code_rows(qw.codes, start, rows, k_pad), g, tiles)
    qw = without_silent_groups(qw)
    scales = _tile(_pad_to(qw.scales, n_pad, qw.scales.shape[1]))
    offsets = None
    if implied_offset(fmt) is None:
        offsets = _tile(_pad_to(offsets_of(qw), n_pad, qw.scales.shape[1]))
    return PackedWeight(fmt, n, k, g, data, scales, offsets, qw.zeros)


HALF_MAX = float(np.finfo(np.float16).max)


def as_half(name: str, values: np.ndarray) -> np.ndarray:
    """``values`` rounded to float16; a ``ValueError`` naming ``name`` when one exceeds its range."""
    largest = float(np.abs(values).max(initial=0.0))
    if not largest <= HALF_MAX:
        raise ValueError(f"{name}: values up to {largest:.6g} exceed float16's largest, {HALF_MAX:g}; build with "
                         "half_scales='off' to keep them float32")  # fmt: skip
    return values.astype(np.float16)


def half_scaled(pw: PackedWeight) -> PackedWeight:
    """``pw`` with float16 scales and offsets (module docstring, "Half scales")."""
    if pw.half_scales:
        return pw
    offsets = None if pw.offsets is None else as_half("offsets", pw.offsets)
    return replace(pw, scales=as_half("scales", pw.scales), offsets=offsets)


def vector_bytes(group_bytes: int) -> int:
    """``V`` of the vector layout for weight groups of ``group_bytes`` K bytes (module docstring)."""
    fitting = [v for v in VECTOR_WIDTHS if group_bytes % v == 0]
    if not fitting:
        raise ValueError(f"no vector width in {VECTOR_WIDTHS} divides a weight group of {group_bytes} bytes")
    return max(fitting)


def vector_transform(shape: tuple[int, ...], vector: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(reshape, axes)`` taking tile-layout ``data`` of ``shape`` to the vector layout: a reshape
    then a transpose, the same two steps in numpy (:func:`to_vector_layout`) and in a graph."""
    tiles, kbytes, planes, rows = shape
    if kbytes % vector:
        raise ValueError(f"{kbytes} K bytes do not split into vectors of {vector}")
    return (tiles, kbytes // vector, vector, planes, rows), (0, 1, 4, 3, 2)


def to_vector_layout(data: np.ndarray, vector: int) -> np.ndarray:
    """Tile-layout ``[N_pad/32, K_pad/8, planes, 32]`` -> vector layout ``[N_pad/32, K_pad/(8V), 32, planes, V]``."""
    reshape, axes = vector_transform(data.shape, vector)
    return np.ascontiguousarray(data.reshape(reshape).transpose(axes))


def from_vector_layout(vdata: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_vector_layout`."""
    tiles, slots, rows, planes, vector = vdata.shape
    return np.ascontiguousarray(vdata.transpose(0, 1, 4, 3, 2).reshape(tiles, slots * vector, planes, rows))


def silent_groups(qw: QuantizedWeight) -> np.ndarray:
    """``[N, n_groups]``: the groups whose codes all equal their zero point (every weight exactly 0)."""
    n, k = qw.shape
    if qw.fmt.group_size == "tensor":
        return np.zeros(qw.scales.shape, bool)
    groups, length = qw.scales.shape[1], group_length(qw.fmt, k)
    zeros = qw.zero_points().astype(np.float32)
    silent = np.empty((n, groups), bool)
    step = max(1, _chunk_rows(k))
    for start in range(0, n, step):
        codes = qw.codes[start : start + step].reshape(-1, groups, length).astype(np.float32)
        silent[start : start + step] = (codes == zeros[start : start + step, :, None]).all(-1)
    return silent


def without_silent_groups(qw: QuantizedWeight) -> QuantizedWeight:
    """``qw`` with a zero scale on its :func:`silent_groups`: the same weights, but the lookup sum
    of such a group is ``0 * (...)`` exactly. A bit-serial sum represents ``q - z = 0`` as
    ``sum_i 2**(i-1) t_i + (2**b - 1)/2 - z``, terms that cancel only up to the fast mode's table
    rounding times the scale: onnxruntime-genai's k-quant writes all-zero blocks (an embedding row
    of zeros) with scale 1.0 and 8-bit codes, and their rounding swamped the real blocks (logits
    2.9x off)."""
    silent = silent_groups(qw)
    if not silent.any():
        return qw
    scales = np.where(silent, np.zeros((), qw.scales.dtype), qw.scales)
    return QuantizedWeight(qw.fmt, qw.codes, scales, qw.zeros)


def unpack(pw: PackedWeight) -> QuantizedWeight:
    """Recover the logical weight from the packed layout (inverse of :func:`pack`, except that the
    scales of :func:`silent_groups` come back as 0: the same weights)."""
    raw = decode_indices(pw.indices(), pw.g)
    planes, n_pad, groups = raw.shape
    bits = (raw[..., None] >> np.arange(pw.g, dtype=np.uint8)) & 1
    bits = bits.reshape(planes, n_pad, groups * pw.g)
    codes = (bits << np.arange(planes, dtype=np.uint8)[:, None, None]).sum(0, dtype=np.uint8)
    scales = untile(pw.scales, pw.n).astype(pw.fmt.scale_dtype)
    return QuantizedWeight(pw.fmt, np.ascontiguousarray(codes[: pw.n, : pw.k]), scales, pw.zeros)
