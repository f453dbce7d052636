"""The search space of a LUT kernel: the schedule rule's design spaces, mutated by decision.

Each design space pins the structural choices (chunk size, row/group order) and leaves the
sampled ones free: the N tile of a parallel task (``sample_perfect_tile``) and the unroll of
the chunk loop (``sample_categorical``). The evolutionary search mutates both kinds.
"""

from __future__ import annotations

import random

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.mutator import PyMutator
from tvm.target import Target

from ..schedules import rule_for


@derived_object
class MutateCategorical(PyMutator):
    """Move one ``sample_categorical`` decision of a trace to another candidate."""

    def __init__(self, seed: int | None = None):
        self.rng = random.Random(seed)

    def _initialize_with_tune_context(self, context) -> None:
        pass

    def apply(self, trace, _rand_state):
        insts = [i for i in trace.insts if i.kind.name == "SampleCategorical" and len(i.attrs[0]) > 1]
        if not insts:
            return None
        inst = self.rng.choice(insts)
        current = int(trace.decisions[inst])
        other = self.rng.choice([d for d in range(len(inst.attrs[0])) if d != current])
        return trace.with_decision(inst, other, remove_postproc=True)

    def clone(self):
        return MutateCategorical(self.rng.randrange(2**31))


def design_spaces(target: Target) -> ms.space_generator.ScheduleFn:
    """A space generator from the first ``lutc.schedules`` rule that fits the kernel."""

    def spaces(sch):
        func = sch.mod["main"]
        return rule_for(func, target).design_spaces(func, target)

    mutators = {MutateCategorical(): 0.5, ms.mutator.MutateTileSize(): 0.5}
    return ms.space_generator.ScheduleFn(spaces, sch_rules=[], postprocs=[], mutator_probs=mutators)
