"""The base of every lutc schedule rule, in the shape of dlight's rules.

A rule's ``apply(func, target, knobs)`` returns a schedule, or ``None`` when the rule does
not apply to that PrimFunc or target. Kernels are recognized by their ``lutc.kernel``
attribute (:func:`lutc.kernels.names.kernel_of`), never by name, and their blocks by the
names in :mod:`lutc.kernels.names`. Every tunable choice is a ``sch.sample_*`` decision: with
``Knobs()`` each takes the rule's default, so the untuned schedule is the heuristic.

Choices that change the loop structure or the tensorize intrinsic (``structural_choices``)
cannot be mutated by replaying a trace, so a tuner gets one design space per combination
(``design_spaces``), each with those choices pinned and the rest left to sample.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tvm import s_tir, tirx
from tvm.target import Target

from ..kernels.names import kernel_of


def block_names(sch: s_tir.Schedule) -> set[str]:
    """Names of the blocks directly under the root block."""
    return {sch.get(block).name_hint for block in sch.get_child_blocks(sch.get_sblock("root"))}


@dataclass(frozen=True)
class Knobs:
    """How a rule takes its decisions.

    ``tunable``: draw every ``sch.sample_*`` at random (a search) instead of the defaults.
    ``pinned``: structural choices ``(name, value)`` fixed for one design space; no sample.
    """

    tunable: bool = False
    pinned: tuple[tuple[str, int], ...] = ()

    def pinned_value(self, name: str) -> int | None:
        return dict(self.pinned).get(name)


DEFAULT_KNOBS = Knobs()
"""Every decision at the rule's default: the untuned heuristic schedule."""


def choose(sch: s_tir.Schedule, name: str, candidates: Sequence[int], default: int, knobs: Knobs) -> int:
    """The structural choice ``name``: pinned, else a ``sample_categorical`` (``default`` unless tuning)."""
    candidates = list(candidates)
    pinned = knobs.pinned_value(name)
    if pinned is not None:
        if pinned not in candidates:
            raise ValueError(f"pinned {name}={pinned} is not one of {candidates}")
        return pinned
    probs = [1.0 / len(candidates)] * len(candidates)
    decision = None if knobs.tunable else candidates.index(default)
    return int(sch.get(sch.sample_categorical(candidates, probs, decision=decision)))


def pinned_combinations(choices: Mapping[str, Sequence[int]]) -> list[Knobs]:
    """One tunable ``Knobs`` per combination of the structural choices."""
    names = sorted(choices)
    combos = itertools.product(*(choices[name] for name in names))
    return [Knobs(tunable=True, pinned=tuple(zip(names, combo, strict=True))) for combo in combos]


class LutRule:
    """Schedules one ``lutc.kernel`` on one target family."""

    kernel: str = ""

    def is_target_available(self, target: Target) -> bool:
        raise NotImplementedError

    def schedule(self, sch: s_tir.Schedule, func: tirx.PrimFunc, target: Target, knobs: Knobs) -> None:
        raise NotImplementedError

    def structural_choices(self, func: tirx.PrimFunc, target: Target) -> dict[str, list[int]]:
        """Choices that change the loop structure (see the module docstring); none by default."""
        return {}

    def register_intrinsics(self, func: tirx.PrimFunc, target: Target) -> None:
        """Register every tensor intrinsic a schedule of ``func`` may name (a saved trace replays
        only once they exist); none by default."""

    def applies(self, func: tirx.PrimFunc, target: Target) -> bool:
        return kernel_of(func) == self.kernel and self.is_target_available(target)

    def apply(self, func: tirx.PrimFunc, target: Target, knobs: Knobs = DEFAULT_KNOBS) -> s_tir.Schedule | None:
        if not self.applies(func, target):
            return None
        sch = s_tir.Schedule(func)
        self.schedule(sch, func, target, knobs)
        return sch

    def design_spaces(self, func: tirx.PrimFunc, target: Target) -> list[s_tir.Schedule]:
        """One sampled schedule per combination of structural choices (for meta_schedule)."""
        return [self.apply(func, target, knobs) for knobs in pinned_combinations(self.structural_choices(func, target))]
