"""What one LUT GEMM kernel computes: shapes, weight format and table mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tvm import tirx

from ..quant.formats import AnyFormat, format_from_attr, format_to_attr, group_length, n_groups
from ..quant.layout import K_BYTE, TILE_N, VECTOR_WIDTHS, implied_offset, padded_k
from .names import SPEC_ATTR

TABLE_DTYPE = {"fast": "int8", "exact": "float32"}
ACC_DTYPE = {"fast": "int32", "exact": "float32"}


def table_entries(half_tables: bool) -> int:
    """Entries stored per 4-element table: 8 symmetrized, else 16."""
    return 2 ** (KERNEL_G - 1) if half_tables else 2**KERNEL_G


MIN_GROUP = 16
"""Smallest weight group the kernels take: two K bytes, one full micro-kernel chunk."""

KERNEL_G = 4
"""Activation group width of the compiled kernels: a 16-entry table, one nibble per index."""


@dataclass(frozen=True)
class KernelSpec:
    """``y[M, N] = x[M, K] @ W[N, K]^T (+ bias)`` with ``W`` in format ``fmt``.

    ``mode`` picks float32 tables (``"exact"``) or int8 tables (``"fast"``); ``half_tables``
    stores half tables and recovers the sign from the index (see :mod:`lutc.quant.lut`).
    """

    m: int | None
    """Rows of ``x``; ``None`` compiles for any number of rows (a dynamic sequence length)."""
    n: int
    k: int
    fmt: AnyFormat
    mode: Literal["exact", "fast"] = "fast"
    half_tables: bool = False
    bias: bool = False
    g: int = KERNEL_G
    vector: int = 1
    """Bytes of one (row, plane) a GPU thread loads at once: 1 is the tile layout every CPU kernel
    reads; more is the vector layout of :func:`lutc.quant.layout.to_vector_layout`."""
    half_scales: bool = False
    """The packed scales and offsets are float16 (:func:`lutc.quant.layout.half_scaled`): fast
    mode's default on CPUs that convert float16 in hardware."""

    def __post_init__(self) -> None:
        for name in ("m", "n", "k") if self.m is not None else ("n", "k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"kernel {name} must be a positive int; got {value!r}")
        if self.mode not in ("exact", "fast"):
            raise ValueError(f"mode must be 'exact' or 'fast'; got {self.mode!r}")
        if self.g != KERNEL_G:
            raise NotImplementedError(f"compiled kernels use g={KERNEL_G}; g={self.g} exists only in lutc.quant")
        padded_k(self.fmt, self.k)
        if self.group_len < MIN_GROUP:
            raise NotImplementedError(
                f"compiled kernels need weight groups of at least {MIN_GROUP} K elements; "
                f"format {self.fmt.name} with K={self.k} has {self.group_len}"
            )
        if self.vector != 1 and (self.vector not in VECTOR_WIDTHS or self.group_bytes % self.vector):
            raise ValueError(f"vector={self.vector} must be one of {VECTOR_WIDTHS} dividing the group's "
                             f"{self.group_bytes} bytes")  # fmt: skip

    @property
    def planes(self) -> int:
        return self.fmt.bits

    @property
    def k_pad(self) -> int:
        return padded_k(self.fmt, self.k)

    @property
    def n_tiles(self) -> int:
        return -(-self.n // TILE_N)

    @property
    def k_bytes(self) -> int:
        """Bytes per row and plane: each covers 8 K elements."""
        return self.k_pad // K_BYTE

    @property
    def n_groups(self) -> int:
        return n_groups(self.fmt, self.k)

    @property
    def group_len(self) -> int:
        return group_length(self.fmt, self.k_pad)

    @property
    def group_bytes(self) -> int:
        return self.group_len // K_BYTE

    @property
    def table_groups(self) -> int:
        return self.k_pad // self.g

    @property
    def entries(self) -> int:
        return table_entries(self.half_tables)

    @property
    def table_dtype(self) -> str:
        return TABLE_DTYPE[self.mode]

    @property
    def acc_dtype(self) -> str:
        return ACC_DTYPE[self.mode]

    @property
    def scale_dtype(self) -> str:
        return self.fmt.scale_dtype

    @property
    def tag(self) -> str:
        """A name for kernels of this spec, stable across runs."""
        table = "half" if self.half_tables else "full"
        bias = "_bias" if self.bias else ""
        rows = "dyn" if self.m is None else self.m
        vector = f"_v{self.vector}" if self.vector > 1 else ""
        half = "_hs" if self.half_scales else ""
        return f"m{rows}_n{self.n}_k{self.k}_{self.fmt.name}_{self.mode}_{table}{bias}{vector}{half}"

    @property
    def precompute_tag(self) -> str:
        """What the precompute depends on: matmuls with equal tags can share tables."""
        rows = "dyn" if self.m is None else self.m
        table = "half" if self.half_tables else "full"
        return f"m{rows}_k{self.k}_kp{self.k_pad}_gl{self.group_len}_{self.mode}_{table}"

    def weight_types(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """The packed weight ``lut_matmul`` reads (:mod:`lutc.quant.layout`): part -> (shape, dtype);
        ``offsets`` only for formats whose zero point is stored."""
        ng, nt = self.n_groups, self.n_tiles
        data = (nt, self.k_bytes, self.planes, TILE_N)
        if self.vector > 1:
            data = (nt, self.k_bytes // self.vector, TILE_N, self.planes, self.vector)
        types = {
            "data": (data, "uint8"),
            "scales": ((nt, ng, TILE_N), "float16" if self.half_scales else self.scale_dtype),
        }
        if implied_offset(self.fmt) is None:
            types["offsets"] = ((nt, ng, TILE_N), "float16" if self.half_scales else "float32")
        return types

    def as_attr(self) -> dict:
        """Every field as a plain dict (``m`` -1 when dynamic), for IR attributes and JSON; ``vector``
        only when not 1 and ``half_scales`` only when set (the kernels without them keep their
        attributes, and so their tuning records)."""
        attr = {"m": -1 if self.m is None else self.m, "n": self.n, "k": self.k, "fmt": format_to_attr(self.fmt),
                "mode": self.mode, "half_tables": int(self.half_tables), "bias": int(self.bias),
                "g": self.g}  # fmt: skip
        attr |= {"vector": self.vector} if self.vector != 1 else {}
        return attr | ({"half_scales": 1} if self.half_scales else {})

    @staticmethod
    def from_attr(attr) -> KernelSpec:
        """Inverse of :meth:`as_attr`; also accepts TVM attribute maps, and the ``symmetric`` key
        that kernels tuned before the field was named ``half_tables`` carry (old tuning logs)."""
        m = int(attr["m"])
        half = attr["half_tables"] if "half_tables" in attr else attr["symmetric"]
        return KernelSpec(
            None if m < 0 else m, int(attr["n"]), int(attr["k"]), format_from_attr(attr["fmt"]), str(attr["mode"]),
            bool(int(half)), bool(int(attr["bias"])), int(attr["g"]),
            int(attr["vector"]) if "vector" in attr else 1, bool(int(attr.get("half_scales", 0))),
        )  # fmt: skip

    @staticmethod
    def from_func(func: tirx.PrimFunc) -> KernelSpec:
        """The spec a ``lut_matmul`` or ``lut_precompute`` PrimFunc was built from."""
        return KernelSpec.from_attr(func.attrs[SPEC_ATTR])

    def rows(self) -> tirx.PrimExpr | int:
        """The row extent for a new PrimFunc: ``m``, or a fresh int64 variable when dynamic."""
        return self.m if self.m is not None else tirx.Var("m", "int64")
