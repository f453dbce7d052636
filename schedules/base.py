"""The base of every lutc schedule rule, in the shape of dlight's rules.

A rule's ``apply(func, target, tunable)`` returns a schedule, or ``None`` when the rule does
not apply to that PrimFunc or target. Kernels are recognized by their ``lutc.kernel``
attribute, never by name. Every tunable choice is a ``sch.sample_*`` decision: with
``tunable=False`` each takes the rule's default, so the untuned schedule is the heuristic.
"""

from __future__ import annotations

from collections.abc import Sequence

from tvm import s_tir, tirx
from tvm.target import Target

KERNEL_ATTR = "lutc.kernel"


def kernel_of(func) -> str | None:
    """The ``lutc.kernel`` tag of a PrimFunc, if any (``None`` for anything else)."""
    if not isinstance(func, tirx.PrimFunc):
        return None
    attrs = func.attrs
    return str(attrs[KERNEL_ATTR]) if attrs is not None and KERNEL_ATTR in attrs else None


def block_names(sch: s_tir.Schedule) -> set[str]:
    """Names of the blocks directly under the root block."""
    return {sch.get(block).name_hint for block in sch.get_child_blocks(sch.get_sblock("root"))}


def choose(sch: s_tir.Schedule, candidates: Sequence[int], default: int, tunable: bool) -> int:
    """A ``sample_categorical`` decision over ``candidates``; ``default`` unless tuning."""
    candidates = list(candidates)
    probs = [1.0 / len(candidates)] * len(candidates)
    decision = None if tunable else candidates.index(default)
    return int(sch.get(sch.sample_categorical(candidates, probs, decision=decision)))


class LutRule:
    """Schedules one ``lutc.kernel`` on one target family."""

    kernel: str = ""

    def is_target_available(self, target: Target) -> bool:
        raise NotImplementedError

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, target: Target, tunable: bool) -> None:
        raise NotImplementedError

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool = False) -> s_tir.Schedule | None:
        if kernel_of(func) != self.kernel or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        self.schedule(sch, func, target, tunable)
        return sch
