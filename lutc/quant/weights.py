"""Quantized weights in logical form (one code per byte), with numpy quantize and dequantize."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .formats import AnyFormat, TernaryFormat, group_length, n_groups


def describe(arr: np.ndarray) -> str:
    """``shape (..) dtype ..`` for error messages."""
    return f"shape {tuple(arr.shape)} dtype {arr.dtype}"


def _check_array(name: str, arr: object, shape: tuple[int, ...], kinds: str) -> None:
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{name} must be a numpy array; got {type(arr).__name__}")
    if arr.dtype.kind not in kinds:
        raise ValueError(f"{name} has {describe(arr)}; expected a dtype of kind {kinds!r}")
    if arr.shape != shape:
        raise ValueError(f"{name} has {describe(arr)}; expected shape {shape}")


def check_finite(name: str, arr: np.ndarray) -> None:
    """Raise ``ValueError`` naming the first non-finite entry of ``arr``."""
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} has {int(bad.sum())} non-finite values (first at {first}: {arr[first]})")


@dataclass(frozen=True, eq=False)
class QuantizedWeight:
    """A ``[N, K]`` weight in format ``fmt``: codes, scales and (asymmetric) zero points.

    - ``codes``: uint8 ``[N, K]``, each in ``[0, fmt.max_code]``.
    - ``scales``: ``[N, n_groups]`` in ``fmt.scale_dtype``, finite.
    - ``zeros``: ``None`` when ``fmt.zero_point == "none"``; else ``[N, n_groups]``, uint8 codes
      for ``"int"`` and ``fmt.scale_dtype`` floats for ``"float"``.
    """

    fmt: AnyFormat
    codes: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.codes, np.ndarray) or self.codes.ndim != 2:
            got = describe(self.codes) if isinstance(self.codes, np.ndarray) else type(self.codes).__name__
            raise ValueError(f"codes must be a 2-D [N, K] array; got {got}")
        n, k = self.codes.shape
        _check_array("codes", self.codes, (n, k), "u")
        if self.codes.dtype != np.uint8:
            raise ValueError(f"codes has {describe(self.codes)}; expected uint8")
        groups = (n, n_groups(self.fmt, k))
        _check_array("scales", self.scales, groups, "f")
        if self.scales.dtype != np.dtype(self.fmt.scale_dtype):
            raise ValueError(
                f"scales has {describe(self.scales)}; format {self.fmt.name} stores {self.fmt.scale_dtype}"
            )
        check_finite("scales", self.scales)
        if self.codes.size and int(self.codes.max()) > self.fmt.max_code:
            raise ValueError(
                f"codes hold {int(self.codes.max())}, above {self.fmt.max_code} for format {self.fmt.name}"
            )
        self._check_zeros(groups)

    def _check_zeros(self, groups: tuple[int, int]) -> None:
        kind = self.fmt.zero_point
        if kind == "none":
            if self.zeros is not None:
                raise ValueError(f"format {self.fmt.name} is symmetric but zero points were given")
            return
        if self.zeros is None:
            raise ValueError(f"format {self.fmt.name} needs zero points of shape {groups}")
        _check_array("zeros", self.zeros, groups, "u" if kind == "int" else "f")
        if kind == "int" and self.zeros.size and int(self.zeros.max()) > self.fmt.max_code:
            raise ValueError(f"integer zero points hold {int(self.zeros.max())}, above {self.fmt.max_code}")
        if kind == "float":
            check_finite("zeros", self.zeros)

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape  # type: ignore[return-value]

    def zero_points(self) -> np.ndarray:
        """Zero points as float32 ``[N, n_groups]``, implied ones filled in."""
        if self.zeros is None:
            return np.full(self.scales.shape, self.fmt.implied_zero, np.float32)
        return self.zeros.astype(np.float32)


def expand_groups(per_group: np.ndarray, k: int) -> np.ndarray:
    """Repeat a ``[N, n_groups]`` array along K to ``[N, K]``."""
    return np.repeat(per_group, k // per_group.shape[1], axis=1)


def dequantize(qw: QuantizedWeight) -> np.ndarray:
    """Float32 ``[N, K]`` weights: ``s * (q - z)`` evaluated in float32."""
    k = qw.shape[1]
    scales = expand_groups(qw.scales.astype(np.float32), k)
    zeros = expand_groups(qw.zero_points(), k)
    return scales * (qw.codes.astype(np.float32) - zeros)


def _grouped(w: np.ndarray, fmt: AnyFormat) -> np.ndarray:
    """``[N, K]`` -> ``[N, n_groups, G]``; per-tensor formats see one group of everything."""
    n, k = w.shape
    if fmt.group_size == "tensor":
        return w.reshape(1, 1, n * k)
    return w.reshape(n, n_groups(fmt, k), group_length(fmt, k))


def _spread(per_group: np.ndarray, fmt: AnyFormat, n: int) -> np.ndarray:
    """Per-group statistics back to ``[N, n_groups]`` (a per-tensor value repeated per row)."""
    stats = per_group[..., 0]
    return np.broadcast_to(stats, (n, 1)).copy() if fmt.group_size == "tensor" else stats


def _round_scale(scale: np.ndarray, fmt: AnyFormat) -> np.ndarray:
    """Scales in storage dtype; a zero scale (an all-zero group) becomes 1 so codes stay finite."""
    scale = np.where(scale == 0, 1.0, scale).astype(fmt.scale_dtype)
    return np.where(scale == 0, np.finfo(fmt.scale_dtype).tiny, scale).astype(fmt.scale_dtype)


def quantize(w: np.ndarray, fmt: AnyFormat) -> QuantizedWeight:
    """Round-to-nearest quantization of float ``[N, K]`` weights into ``fmt``.

    - symmetric: ``s = w_absmax_signed / -2**(bits-1)`` (the value of largest magnitude maps to
      code 0, as ONNX Runtime's and llama.cpp's quantizers do), ``q = round(w / s) + z``;
    - asymmetric: ``s = (max - min) / (2**bits - 1)`` with min/max widened to include 0,
      ``z = round(-min / s)`` (int) or ``-min / s`` (float);
    - ternary: BitNet b1.58 absmean, ``s = mean(|w|)``, ``t = clip(round(w / s), -1, 1)``.
    """
    w = np.asarray(w)
    if w.ndim != 2 or w.dtype.kind != "f":
        raise ValueError(f"weights must be a 2-D float [N, K] array; got {describe(w)}")
    check_finite("weights", w)
    n, k = w.shape
    grouped = _grouped(w.astype(np.float32), fmt)
    if isinstance(fmt, TernaryFormat):
        return _quantize_ternary(grouped, fmt, n, k)
    if fmt.symmetric:
        return _quantize_symmetric(grouped, fmt, n, k)
    return _quantize_asymmetric(grouped, fmt, n, k)


def _codes(grouped: np.ndarray, scale: np.ndarray, zero: np.ndarray, fmt: AnyFormat, n: int, k: int) -> np.ndarray:
    q = np.rint(grouped / scale[..., None].astype(np.float32) + zero[..., None])
    return np.clip(q, 0, fmt.max_code).astype(np.uint8).reshape(n, k)


def _quantize_symmetric(grouped: np.ndarray, fmt: AnyFormat, n: int, k: int) -> QuantizedWeight:
    pick = np.abs(grouped).argmax(axis=-1)[..., None]
    signed_max = np.take_along_axis(grouped, pick, axis=-1)
    scale = _round_scale(signed_max / -fmt.implied_zero, fmt)
    codes = _codes(grouped, scale[..., 0], np.full(scale.shape[:-1], fmt.implied_zero), fmt, n, k)
    return QuantizedWeight(fmt, codes, _spread(scale, fmt, n))


def _quantize_asymmetric(grouped: np.ndarray, fmt: AnyFormat, n: int, k: int) -> QuantizedWeight:
    lo = np.minimum(grouped.min(axis=-1, keepdims=True), 0)
    hi = np.maximum(grouped.max(axis=-1, keepdims=True), 0)
    scale = _round_scale((hi - lo) / fmt.max_code, fmt)
    zero = -lo / scale.astype(np.float32)
    if fmt.zero_dtype == "int":
        zero = np.clip(np.rint(zero), 0, fmt.max_code).astype(np.uint8)
    else:
        zero = zero.astype(fmt.scale_dtype)
    codes = _codes(grouped, scale[..., 0], zero[..., 0].astype(np.float32), fmt, n, k)
    return QuantizedWeight(fmt, codes, _spread(scale, fmt, n), _spread(zero, fmt, n))


def _quantize_ternary(grouped: np.ndarray, fmt: TernaryFormat, n: int, k: int) -> QuantizedWeight:
    scale = _round_scale(np.abs(grouped).mean(axis=-1, keepdims=True), fmt)
    codes = _codes(grouped, scale[..., 0], np.ones(scale.shape[:-1]), fmt, n, k)
    return QuantizedWeight(fmt, codes, _spread(scale, fmt, n))


def random_weights(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Float32 ``[N, K]`` Gaussian weights with 1 % outliers (x8), as real LLM weights have: the
    test weights of the tests and of ``tools/gpu_check``."""
    w = rng.standard_normal((n, k)).astype(np.float32)
    w[rng.random((n, k)) < 0.01] *= 8
    return w


def reference_matmul(x: np.ndarray, qw: QuantizedWeight, bias: np.ndarray | None = None) -> np.ndarray:
    """``x @ dequantize(qw).T (+ bias)`` in float64: the ground truth for every kernel."""
    y = np.asarray(x, np.float64) @ dequantize(qw).astype(np.float64).T
    return y if bias is None else y + np.asarray(bias, np.float64)
