"""Shared strategies and helpers for the lutc tests."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from lutc.quant import IntFormat, TernaryFormat, random_weights  # noqa: F401 (the tests import it from here)

settings.register_profile(
    "lutc",
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("lutc")


def all_formats(group_sizes=(32, 64, 128, "channel")) -> list:
    """Every format family over ``group_sizes``: sym, int zp, float zp, fp16, ternary."""
    formats = []
    for bits in (1, 2, 3, 4):
        for group in group_sizes:
            formats += [
                IntFormat(bits, group),
                IntFormat(bits, group, symmetric=False),
                IntFormat(bits, group, symmetric=False, zero_dtype="float"),
            ]
        formats.append(IntFormat(bits, group_sizes[0], symmetric=False, scale_dtype="float16"))
    formats += [TernaryFormat(group) for group in (*group_sizes, "tensor")]
    return formats


def k_for(fmt, groups: int, channel_k: int) -> int:
    """A K that splits into ``groups`` groups of ``fmt``, or ``channel_k`` for per-row scales."""
    return channel_k if fmt.group_size in ("channel", "tensor") else groups * fmt.group_size
