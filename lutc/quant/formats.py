"""Weight formats: one frozen dataclass per family, plus a registry of named presets.

A weight matrix is stored row-major as ``[N, K]``: one row per output channel, K along the
reduction axis (the transpose of ONNX ``MatMul``'s ``B``, the orientation of
``MatMulNBits``). Codes are unsigned integers of ``bits`` bits; scales, and zero points when
present, are per ``(row, group)`` where a group is ``group_size`` consecutive K elements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

GroupSize = int | Literal["channel", "tensor"]
ScaleDType = Literal["float32", "float16"]

SUPPORTED_BITS = (1, 2, 3, 4, 5, 6, 7, 8)
SCALE_DTYPES = ("float32", "float16")


class WeightFormat(Protocol):
    """What every weight format tells the rest of lutc."""

    @property
    def bits(self) -> int:
        """Storage bits per code, which is also the number of bit-planes."""

    @property
    def group_size(self) -> GroupSize:
        """K elements per scale: an int, ``"channel"`` (one per row) or ``"tensor"``."""

    @property
    def scale_dtype(self) -> ScaleDType:
        """Storage dtype of the scales."""

    @property
    def zero_point(self) -> Literal["none", "int", "float"]:
        """Whether zero points are stored per group, and as what."""

    @property
    def implied_zero(self) -> float:
        """The zero point used when none is stored."""

    @property
    def max_code(self) -> int:
        """Largest code a weight may hold."""

    @property
    def name(self) -> str:
        """A short, stable name (``w2g128``, ``w4g32a``, ``t2g64``)."""


def _check_group_size(group_size: GroupSize) -> None:
    if group_size in ("channel", "tensor"):
        return
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)):
        raise ValueError(f"group_size must be a positive int, 'channel' or 'tensor'; got {group_size!r}")
    if group_size <= 0:
        raise ValueError(f"group_size must be positive; got {group_size}")


def _check_scale_dtype(scale_dtype: str) -> None:
    if scale_dtype not in SCALE_DTYPES:
        raise ValueError(f"scale_dtype must be one of {SCALE_DTYPES}; got {scale_dtype!r}")


def _group_tag(group_size: GroupSize) -> str:
    return {"channel": "c", "tensor": "t"}.get(group_size, str(group_size))  # type: ignore[arg-type]


@dataclass(frozen=True)
class IntFormat:
    """Unsigned ``bits``-bit codes with a scale and zero point per group.

    Dequantization: ``w[n, k] = s[n, k // G] * (q[n, k] - z[n, k // G])`` where

    - ``q`` is in ``[0, 2**bits - 1]``;
    - symmetric formats store no zero point: ``z = 2**(bits - 1)`` (the ``MatMulNBits`` default);
    - asymmetric formats store ``z`` per group, as an integer code in ``[0, 2**bits - 1]``
      (``zero_point="int"``) or as a float (``zero_point="float"``).
    """

    bits: Literal[1, 2, 3, 4, 5, 6, 7, 8]
    group_size: GroupSize = 128
    symmetric: bool = True
    zero_dtype: Literal["int", "float"] = "int"
    scale_dtype: ScaleDType = "float32"

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or self.bits not in SUPPORTED_BITS:
            raise ValueError(f"unsupported bit width {self.bits!r}: lutc supports {SUPPORTED_BITS} and ternary")
        _check_group_size(self.group_size)
        _check_scale_dtype(self.scale_dtype)
        if self.zero_dtype not in ("int", "float"):
            raise ValueError(f"zero_dtype must be 'int' or 'float'; got {self.zero_dtype!r}")

    @property
    def zero_point(self) -> Literal["none", "int", "float"]:
        return "none" if self.symmetric else self.zero_dtype

    @property
    def implied_zero(self) -> float:
        return float(2 ** (self.bits - 1))

    @property
    def max_code(self) -> int:
        return 2**self.bits - 1

    @property
    def name(self) -> str:
        suffix = {"none": "", "int": "a", "float": "af"}[self.zero_point]
        half = "h" if self.scale_dtype == "float16" else ""
        return f"w{self.bits}g{_group_tag(self.group_size)}{suffix}{half}"


@dataclass(frozen=True)
class TernaryFormat:
    """Ternary weights {-1, 0, +1} (BitNet b1.58) in 2-bit storage.

    Dequantization: ``w[n, k] = s[n, k // G] * (q[n, k] - 1)`` with ``q`` in ``{0, 1, 2}``,
    i.e. ``t = q - 1``. ``group_size="tensor"`` gives BitNet's single absmean scale.
    """

    group_size: GroupSize = "tensor"
    scale_dtype: ScaleDType = "float32"

    def __post_init__(self) -> None:
        _check_group_size(self.group_size)
        _check_scale_dtype(self.scale_dtype)

    bits = 2
    zero_point = "none"
    implied_zero = 1.0
    max_code = 2

    @property
    def name(self) -> str:
        half = "h" if self.scale_dtype == "float16" else ""
        return f"t2g{_group_tag(self.group_size)}{half}"


AnyFormat = IntFormat | TernaryFormat


def _presets() -> dict[str, AnyFormat]:
    formats: list[AnyFormat] = []
    for bits in SUPPORTED_BITS:
        for group in (32, 64, 128, "channel"):
            formats.append(IntFormat(bits, group, symmetric=True))
            formats.append(IntFormat(bits, group, symmetric=False))
            formats.append(IntFormat(bits, group, symmetric=False, zero_dtype="float"))
    formats += [TernaryFormat(group) for group in (32, 64, 128, "channel", "tensor")]
    return {fmt.name: fmt for fmt in formats}


FORMATS: dict[str, AnyFormat] = _presets()
"""Named presets: ``w{bits}g{group}[a|af][h]`` and ``t2g{group}``.

``a`` = integer zero points, ``af`` = float zero points, ``h`` = fp16 scales, group ``c`` =
per-channel and ``t`` = per-tensor. Example: ``FORMATS["w2g128"]``.
"""


def get_format(name: str) -> AnyFormat:
    """Look up a preset by name, with an error listing close names."""
    try:
        return FORMATS[name]
    except KeyError:
        close = sorted(n for n in FORMATS if n[:2] == name[:2])[:12]
        raise ValueError(f"unknown weight format {name!r}; presets starting alike: {close}") from None


def n_groups(fmt: AnyFormat, k: int) -> int:
    """Groups per row of a ``[N, K]`` matrix, checking that K splits evenly."""
    if fmt.group_size in ("channel", "tensor"):
        return 1
    if k % fmt.group_size:
        raise ValueError(f"K={k} is not a multiple of the group size {fmt.group_size} (format {fmt.name})")
    return k // fmt.group_size


def group_length(fmt: AnyFormat, k: int) -> int:
    """K elements per group for a matrix with ``k`` columns."""
    return k if fmt.group_size in ("channel", "tensor") else int(fmt.group_size)


def format_to_attr(fmt: AnyFormat) -> dict:
    """A plain dict describing ``fmt``, for IR attributes and JSON."""
    if isinstance(fmt, TernaryFormat):
        return {"family": "ternary", "group_size": fmt.group_size, "scale_dtype": fmt.scale_dtype}
    return {
        "family": "int",
        "bits": fmt.bits,
        "group_size": fmt.group_size,
        "symmetric": int(fmt.symmetric),
        "zero_dtype": fmt.zero_dtype,
        "scale_dtype": fmt.scale_dtype,
    }


def format_from_attr(attr) -> AnyFormat:
    """Inverse of :func:`format_to_attr`; also accepts TVM attribute maps."""
    group = attr["group_size"]
    group_size = str(group) if str(group) in ("channel", "tensor") else int(group)
    scale_dtype = str(attr["scale_dtype"])
    if str(attr["family"]) == "ternary":
        return TernaryFormat(group_size, scale_dtype)
    return IntFormat(int(attr["bits"]), group_size, bool(int(attr["symmetric"])), str(attr["zero_dtype"]), scale_dtype)
