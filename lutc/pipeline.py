"""The whole compilation of ``lutc.build`` as one pipeline of named phases, in the shape of TVM's
per-target pipelines (``relax/backend/<target>/pipeline.py``).

:func:`phases` lists them, in order; :func:`get_pipeline` runs them as one ``Sequential``:

1. ``lut`` (every target): rewrite quantized matmuls into LUT kernels, share tables, fold RMSNorms
   into the precompute they feed, drop dead code (``lutc.tune`` extracts its tasks after this
   phase, :func:`lut_passes`);
2. ``tuning``: with a tuning log, the LUT kernels it has records for get their tuned schedule, and
   the module records which did (``lutc.tuning.apply_tuning_log``);
3. the target family's phases (:mod:`lutc.backend`): ``schedule`` (the other LUT kernels' default
   schedules), ``lift`` (weight preprocessing out of ``main``), ``legalize`` (and fuse),
   ``default_schedule`` (everything else), ``weights`` (the default schedules' weight rewrites)
   and ``lower``.

To see them: ``for name, passes in phases(target, RewriteOptions()).items(): print(name,
[p.info.name for p in passes])``.
"""

from __future__ import annotations

from pathlib import Path

import tvm
from tvm import relax
from tvm.target import Target

from .backend import backend_of
from .relay_passes import LutcFuseNormPrecompute, LutcRewriteQuantizedMatmul, LutcShareTables, RewriteOptions
from .tuning.apply_tuning_log import LutcApplyTuningLog

Phases = dict[str, list[tvm.transform.Pass]]
"""Phase name -> its passes, in the order they run."""


def lut_passes(options: RewriteOptions) -> list[tvm.transform.Pass]:
    """The LUT rewrite, then (``options.fuse``) table sharing and norm folding."""
    if not options.fuse:
        return [LutcRewriteQuantizedMatmul(options), relax.transform.DeadCodeElimination()]
    return [
        LutcRewriteQuantizedMatmul(options),
        LutcShareTables(),
        relax.transform.DeadCodeElimination(),  # the merged calls' reshapes: a norm's only use left
        LutcFuseNormPrecompute(),
        relax.transform.DeadCodeElimination(),
    ]


def tuning_passes(target: Target, tuning_logs: str | Path | None) -> list[tvm.transform.Pass]:
    """Schedules from ``tuning_logs/<target-tag>/`` (read now); none without a log."""
    if tuning_logs is None:
        return []
    return [LutcApplyTuningLog(Path(tuning_logs), target)]


def phases(
    target: Target, rewrite_options: RewriteOptions | None = None, tuning_logs: str | Path | None = None
) -> Phases:
    """Every phase of the compilation for ``target``, by name, in order (module docstring).

    ``rewrite_options``: the LUT rewrite's (``None``: no ``lut`` phase: a module without quantized
    matmuls, or one kept on TVM's dequantize path). ``tuning_logs``: a :func:`lutc.tune` directory
    (``None``: no ``tuning`` phase, every kernel on its default schedule).
    """
    return {
        "lut": lut_passes(rewrite_options) if rewrite_options is not None else [],
        "tuning": tuning_passes(target, tuning_logs),
        **backend_of(target).phases(target),
    }


def get_pipeline(
    target: Target, rewrite_options: RewriteOptions | None = None, tuning_logs: str | Path | None = None
) -> tvm.transform.Sequential:
    """The Relax pipeline for ``target``: :func:`phases`, one ``Sequential`` each, in one ``Sequential``.

    Run it under ``with target:`` (``tvm.compile`` does): the default schedules take the current target.
    """
    stages = phases(target, rewrite_options, tuning_logs)
    return tvm.transform.Sequential(
        [tvm.transform.Sequential(passes, name=name) for name, passes in stages.items()], name="LutcPipeline"
    )
