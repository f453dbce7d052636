"""Auto-tuning of the LUT kernels with meta_schedule, into reusable per-target logs.

Kernel-level: tasks come from kernel specs or from a module after lutc's LUT passes. Tuning a
model (:func:`lutc.tune`, :mod:`lutc.tune_model`) builds that module first.
"""

from .api import tune_kernels
from .log import TuningLog, TuningLogWarning
from .measure import RpcTracker
from .tag import target_tag
from .tasks import TuneTask, tasks_of_module, tasks_of_specs
from .tuner import TaskResult, TuneOptions, tune_tasks

__all__ = [
    "RpcTracker",
    "TaskResult",
    "TuneOptions",
    "TuneTask",
    "TuningLog",
    "TuningLogWarning",
    "target_tag",
    "tasks_of_module",
    "tasks_of_specs",
    "tune_kernels",
    "tune_tasks",
]
