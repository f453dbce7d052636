"""A tuning log: meta_schedule's JSON database for one target, kept safe to share.

``<log_dir>/<target-tag>/`` holds ``database_workload.json`` and
``database_tuning_record.json`` (meta_schedule's own files) and ``lutc-log.json`` (the log
format, the TVM version that wrote it, and how many trials each workload has had).

- Reading checks every line first. A corrupt, truncated or foreign-version log gives a
  warning and reads as empty; it is never half-used and never crashes a build.
- Writing happens only in :meth:`TuningLog.merge`: under an exclusive ``flock`` it reads
  the current log, adds the new records and replaces the files, so two tuning runs that
  share a directory both land their results. A corrupt log is moved aside, not deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import tvm
import tvm_ffi
from tvm.s_tir import meta_schedule as ms
from tvm.target import Target

from ..kernels.names import kernel_of
from ..schedules import rule_for
from .tag import target_tag

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
META = "lutc-log.json"
LOCK = ".lock"
LOG_FORMAT = 1


class TuningLogWarning(UserWarning):
    """A tuning log was unusable (corrupt, truncated, foreign) and is ignored."""


@dataclass
class LogContents:
    """What a log holds: its records and the trials spent per workload hash."""

    records: list[ms.database.TuningRecord] = field(default_factory=list)
    trials: dict[str, int] = field(default_factory=dict)

    def database(self) -> ms.database.MemoryDatabase:
        """An in-memory database of the records (queries never touch the files)."""
        db = ms.database.MemoryDatabase()
        for record in self.records:
            commit_record(db, record)
        return db


def commit_record(db: ms.database.Database, record: ms.database.TuningRecord) -> None:
    """Add ``record`` to ``db``, registering its workload there first."""
    workload = db.commit_workload(record.workload.mod)
    db.commit_tuning_record(
        ms.database.TuningRecord(record.trace, workload, record.run_secs, record.target, record.args_info)
    )


def record_key(record: ms.database.TuningRecord) -> str:
    """Identity of a record across databases: its workload and its JSON."""
    return f"{workload_hash(record.workload.mod)}:{json.dumps(record.as_json(), sort_keys=True, default=str)}"


FAILED_RUN_SECONDS = 1e9
"""meta_schedule stores a failed trial as run times of 1e10 s: anything this long is a failure."""


def mean_run_seconds(run_secs) -> float | None:
    """The mean of a record's or runner result's ``run_secs`` (``None`` when there are none, or
    for a failed trial)."""
    secs = [float(s.value) if hasattr(s, "value") else float(s) for s in run_secs or []]
    if not secs or max(secs) >= FAILED_RUN_SECONDS:
        return None
    return sum(secs) / len(secs)


def workload_hash(mod: tvm.IRModule) -> str:
    return str(tvm_ffi.structural_hash(mod))


class TuningLog:
    """The log directory of one target under ``log_dir``."""

    def __init__(self, log_dir: str | Path, target: Target):
        self.target = target
        self.dir = Path(log_dir) / target_tag(target)

    @property
    def files(self) -> tuple[Path, Path, Path]:
        return self.dir / WORKLOADS, self.dir / RECORDS, self.dir / META

    def read(self) -> LogContents:
        """The log's contents; empty, with a :class:`TuningLogWarning`, when it is unusable."""
        with self._locked(exclusive=False):
            contents, problem = self._load()
        if problem:
            warnings.warn(f"tuning log {self.dir} ignored: {problem}", TuningLogWarning, stacklevel=2)
        return contents

    def merge(self, records: list[ms.database.TuningRecord], trials: Mapping[str, int]) -> int:
        """Add ``records`` not yet in the log and raise per-workload trial counts; returns records added."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._locked(exclusive=True):
            contents, problem = self._load()
            if problem:
                self._quarantine(problem)
            known = {record_key(r) for r in contents.records}
            added = [r for r in records if record_key(r) not in known]
            spent = dict(contents.trials)
            for key, count in trials.items():
                spent[key] = spent.get(key, 0) + count
            self._write(LogContents(contents.records + added, spent))
        return len(added)

    def replace(self, contents: LogContents) -> None:
        """Replace the whole log with ``contents`` (under the lock; used by migration)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._locked(exclusive=True):
            self._write(contents)

    def _load(self) -> tuple[LogContents, str | None]:
        workloads, records, meta = self.files
        if not any(p.exists() for p in self.files):
            return LogContents(), None
        try:
            trials = _check_meta(meta)
            _check_lines(workloads, records)
            _register_intrinsics(workloads, self.target)
            db = ms.database.JSONDatabase(str(workloads), str(records), allow_missing=False)
            return LogContents(list(db.get_all_tuning_records()), trials), None
        except Exception as err:  # any failure to parse means the log is unusable, never a crash
            return LogContents(), str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__

    def _write(self, contents: LogContents) -> None:
        """Write the log into a temporary directory, then move the files into place."""
        tmp = Path(tempfile.mkdtemp(prefix=".merge-", dir=self.dir))
        try:
            db = ms.database.JSONDatabase(str(tmp / WORKLOADS), str(tmp / RECORDS), allow_missing=True)
            for record in contents.records:
                commit_record(db, record)
            meta = {"format": LOG_FORMAT, "tvm": tvm.__version__, "target": str(self.target), "trials": contents.trials}
            (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
            for name in (WORKLOADS, RECORDS, META):
                (tmp / name).touch()
                os.replace(tmp / name, self.dir / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _quarantine(self, problem: str) -> None:
        """Move an unusable log aside (nothing is deleted) before writing a fresh one."""
        aside = self.dir / f"unusable-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        aside.mkdir()
        for path in self.files:
            if path.exists():
                os.replace(path, aside / path.name)
        message = f"tuning log {self.dir} was unusable ({problem}); moved to {aside}"
        warnings.warn(message, TuningLogWarning, stacklevel=3)

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        """``flock`` the directory's lock file; reading a log in a read-only place goes unlocked."""
        try:
            handle = open(self.dir / LOCK, "a+")  # noqa: SIM115 (held for the whole block)
        except OSError:
            if exclusive:
                raise
            yield
            return
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield


def _check_meta(meta: Path) -> dict[str, int]:
    """The trial counts of a log lutc wrote with this TVM; raises for anything else."""
    if not meta.exists():
        raise ValueError(f"{META} is missing (not a log lutc wrote, or a partial copy)")
    info = json.loads(meta.read_text())
    if not isinstance(info, dict) or info.get("format") != LOG_FORMAT:
        raise ValueError(f"{META} has log format {info.get('format') if isinstance(info, dict) else info!r}, "
                         f"lutc reads {LOG_FORMAT}")  # fmt: skip
    if info.get("tvm") != tvm.__version__:
        raise ValueError(f"written by TVM {info.get('tvm')}, this is TVM {tvm.__version__} (re-tune)")
    trials = info.get("trials", {})
    if not isinstance(trials, dict) or not all(isinstance(v, int) for v in trials.values()):
        raise ValueError(f"{META} has malformed trial counts")
    return {str(k): int(v) for k, v in trials.items()}


def _check_lines(workloads: Path, records: Path) -> None:
    """Every line must be a whole JSON entry of the right shape (a cut-off write is not)."""
    n_workloads = 0
    for number, entry in _json_lines(workloads):
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry)):
            raise ValueError(f"{workloads.name} line {number} is not a workload entry")
        n_workloads += 1
    for number, entry in _json_lines(records):
        ok = isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], int) and isinstance(entry[1], list)
        if not ok or not 0 <= entry[0] < n_workloads:
            raise ValueError(f"{records.name} line {number} is not a tuning record of a known workload")


def _register_intrinsics(workloads: Path, target: Target) -> None:
    """Loading a record replays its trace, whose ``tensorize`` names lutc's micro-kernels:
    register them for each LUT workload first."""
    for _, entry in _json_lines(workloads):
        func = ms.database.Workload.from_json(entry).mod["main"]
        if kernel_of(func) is not None:
            rule_for(func, target).register_intrinsics(func, target)


def _json_lines(path: Path) -> Iterator[tuple[int, object]]:
    if not path.exists():
        raise ValueError(f"{path.name} is missing")
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path.name} line {number} is not JSON ({err.msg}; truncated?)") from None
