"""``lutc.tune``: auto-tuning with meta_schedule. Not implemented yet (the auto-tuning issue)."""

from __future__ import annotations

from pathlib import Path


def tune(model, target="x86", *, trials: int = 2000, log_dir: str | Path = "tuning_logs", rpc=None, **options):
    """Tune the LUT kernels of ``model`` for ``target`` into ``log_dir/<target-tag>/``.

    Not implemented yet: builds use the measured default schedules (README, Known limits).
    """
    raise NotImplementedError(
        "lutc.tune is not implemented yet; lutc.build uses the default schedules, which are measured heuristics"
    )
