"""Auto-tuning: design spaces, tasks, the tuning log (resume, corruption, concurrency), build, RPC, CLI.

Tuning tests use kernels of a few KiB and 2-6 trials: each trial builds and times one candidate.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import tvm
import tvm_ffi
from conftest import random_weights
from lutc.schedules import Knobs, rule_for
from tvm.s_tir import meta_schedule as ms

import lutc
from lutc import zoo
from lutc.gemm import build_lut_gemm, scheduled_module
from lutc.kernels import KernelSpec, lut_matmul
from lutc.quant import FORMATS, LutConfig, exact_error_bound, lut_gemm, pack, quantize
from lutc.targets import cross_compiler, resolve_target
from lutc.tuning import TuneOptions, TuningLog, TuningLogWarning, target_tag, tasks_of_specs, tune_kernels
from lutc.tuning.apply import TunedSchedules, UntunedKernelsWarning
from lutc.tuning.log import LOG_FORMAT, META, RECORDS, WORKLOADS
from lutc.tuning.measure import RpcTracker
from lutc.tuning.space import MutateCategorical
from lutc.tuning.tasks import workload_of

SPEC = KernelSpec(1, 64, 256, FORMATS["w2g128"])
"""A tiny kernel: 2 tiles of 32 rows, 2 groups of 16 bytes; chunks 2, 4, 8 or 16 bytes."""
TARGET = resolve_target("x86", 1)
QUICK = TuneOptions(trials=3, threads=1, repeat=2, progress=False, seed=0)


def _check_gemm(gemm, spec: KernelSpec, rows: int = 1) -> None:
    """The compiled kernel against the fast-mode LUT reference, within its exact error bound."""
    rng = np.random.default_rng(3)
    pw = pack(quantize(random_weights(rng, spec.n, spec.k), spec.fmt))
    x = rng.standard_normal((rows, spec.k)).astype(np.float32)
    expected = lut_gemm(x, pw, LutConfig(mode="fast"))
    atol = float(exact_error_bound(x, pw).max())
    np.testing.assert_allclose(gemm(x, gemm.prepare(pw)), expected, rtol=0, atol=atol)


def _pinned_record(spec: KernelSpec, chunk: int, seconds: float) -> ms.database.TuningRecord:
    """A record whose schedule pins ``chunk`` (other decisions at their defaults)."""
    workload = workload_of(lut_matmul(spec))
    func = workload["main"]
    sch = rule_for(func, TARGET).apply(func, TARGET, Knobs(pinned=(("chunk", chunk),)))
    db = ms.database.MemoryDatabase()
    args = ms.arg_info.ArgInfo.from_prim_func(func)
    return ms.database.TuningRecord(sch.trace, db.commit_workload(workload), [seconds], TARGET, args)


def _func_of(sch) -> tvm.tirx.PrimFunc:
    return sch.mod["main"].without_attr("global_symbol")


# ---- search space --------------------------------------------------------------------------


def test_target_tag_names_kind_and_isa_level():
    assert target_tag(resolve_target("x86-avx2")) == "llvm-x86_64-avx2"
    assert target_tag(resolve_target("x86-avx512")) == "llvm-x86_64-avx512"
    assert target_tag(resolve_target("arm")) == "llvm-aarch64-neon-dotprod"
    assert target_tag(resolve_target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver4"})) == (
        "llvm-x86_64-avx512"
    )
    zen2 = resolve_target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver2"})
    assert target_tag(zen2) == target_tag(resolve_target("x86-avx2"))  # every AVX2 CPU shares one log


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("x86-avx2", {"chunk": [2, 4, 8, 16], "m_inner": [0, 1]}),
        ("x86-avx512", {"chunk": [2, 4, 8, 16], "m_inner": [0, 1], "rows": [1, 2, 4]}),
    ],
)
def test_design_spaces_pin_each_structural_choice(name, expected):
    """Compiling needs no such CPU: the spaces of both x86 rules are checked everywhere."""
    target = resolve_target(name, 1)
    func = workload_of(lut_matmul(KernelSpec(4, 64, 256, FORMATS["w2g128"])))["main"]
    rule = rule_for(func, target)
    choices = rule.structural_choices(func, target)
    assert choices == expected
    spaces = rule.design_spaces(func, target)
    count = int(np.prod([len(v) for v in expected.values()]))
    assert len(spaces) == count
    funcs = [_func_of(s) for s in spaces]
    distinct = [f for i, f in enumerate(funcs) if not any(tvm_ffi.structural_equal(f, g) for g in funcs[:i])]
    assert len(distinct) == count
    for sch in spaces:  # pinned choices take no sample; unroll stays a free categorical
        categorical = [i for i in sch.trace.insts if i.kind.name == "SampleCategorical"]
        assert [list(map(int, i.attrs[0])) for i in categorical] == [[0, 16, 64]]


def test_mutate_categorical_moves_one_decision():
    func = workload_of(lut_matmul(SPEC))["main"]
    trace = rule_for(func, TARGET).apply(func, TARGET, Knobs(pinned=(("chunk", 8),))).trace
    mutated = MutateCategorical(seed=1).apply(trace)
    before = [int(d) for i, d in trace.decisions.items() if i.kind.name == "SampleCategorical"]
    after = [int(d) for i, d in mutated.decisions.items() if i.kind.name == "SampleCategorical"]
    assert len(before) == len(after) and sum(b != a for b, a in zip(before, after, strict=True)) == 1


def test_model_tasks_are_deduplicated_and_weighted():
    model = zoo.quantize_matmuls(zoo.float_mlp(64, 128, layers=4), 2, 32)  # 64 -> 128 -> 128 -> 128 -> 64
    mod, _ = lutc.builder.lut_module(model, lutc.BuildOptions())
    tasks = {t.name: t.weight for t in lutc.tuning.tasks_of_module(mod)}
    assert tasks == {"w2g32 fast M=any 128x64": 1, "w2g32 fast M=any 128x128": 2, "w2g32 fast M=any 64x128": 1}
    mod, _ = lutc.builder.lut_module(model, lutc.BuildOptions(), target=TARGET)  # this CPU: half scales
    assert {t.name for t in lutc.tuning.tasks_of_module(mod)} == {n.replace("fast", "fast half-scales") for n in tasks}


# ---- a tuned log, applied --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tuned_log(tmp_path_factory):
    """A log with ``QUICK.trials`` trials of SPEC, tuned once for the module."""
    log_dir = tmp_path_factory.mktemp("tuning_logs")
    [result] = tune_kernels([SPEC], TARGET, log_dir=log_dir, options=QUICK)
    assert result.trials_run == QUICK.trials and result.best_seconds is not None
    return log_dir


def test_tuning_writes_a_log_that_builds_use(tuned_log):
    contents = TuningLog(tuned_log, TARGET).read()
    assert len(contents.records) >= 1 and set(contents.trials.values()) == {QUICK.trials}
    best = contents.database().query_tuning_record(workload_of(lut_matmul(SPEC)), TARGET, "main")
    sch = tvm.s_tir.Schedule(workload_of(lut_matmul(SPEC)))  # the best record's schedule, replayed by hand
    best.trace.apply_to_schedule(sch, remove_postproc=False)
    tuned = TunedSchedules(tuned_log, TARGET)
    built = scheduled_module(SPEC, TARGET, tuned)["lut_matmul"].without_attr("global_symbol")
    assert tvm_ffi.structural_equal(built, _func_of(sch))
    assert list(tuned.applied) == ["w2g128 fast M=1 64x256"] and not tuned.fallbacks
    gemm = build_lut_gemm(SPEC, TARGET, threads=1, tuning_logs=tuned_log)
    assert gemm.tuned
    _check_gemm(gemm, SPEC)


def test_dynamic_row_kernels_have_a_record_of_their_own(tmp_path):
    """A dynamic-row fast kernel folds its epilogue, so its workload (timed at one row) is not the
    static decode kernel's: the decode record does not serve it, its own does, at any row count."""
    dynamic = KernelSpec(None, SPEC.n, SPEC.k, SPEC.fmt)
    [decode_task], [dynamic_task] = tasks_of_specs([SPEC]), tasks_of_specs([dynamic])
    assert not tvm_ffi.structural_equal(decode_task.workload, dynamic_task.workload)
    assert (decode_task.name, dynamic_task.name) == ("w2g128 fast M=1 64x256", "w2g128 fast M=any 64x256")
    [prompt_task] = tasks_of_specs([KernelSpec(16, SPEC.n, SPEC.k, SPEC.fmt)])  # folded too, not a stand-in
    assert prompt_task.name == "w2g128 fast M=16 64x256"
    tune_kernels([SPEC], TARGET, log_dir=tmp_path, options=QUICK)
    with pytest.warns(UntunedKernelsWarning, match=r"w2g128 fast M=any 64x256: no record"):
        assert not build_lut_gemm(dynamic, TARGET, threads=1, tuning_logs=tmp_path).tuned
    [result] = tune_kernels([dynamic], TARGET, log_dir=tmp_path, options=QUICK)
    assert result.trials_run == QUICK.trials
    gemm = build_lut_gemm(dynamic, TARGET, threads=1, tuning_logs=tmp_path)
    assert gemm.tuned
    for rows in (1, 5):
        _check_gemm(gemm, dynamic, rows)


def test_kernels_without_a_record_fall_back_with_a_warning(tuned_log):
    spec = KernelSpec(1, 96, 256, FORMATS["w2g128"])
    with pytest.warns(UntunedKernelsWarning, match=r"w2g128 fast M=1 96x256: no record"):
        gemm = build_lut_gemm(spec, TARGET, threads=1, tuning_logs=tuned_log)
    assert not gemm.tuned
    _check_gemm(gemm, spec)


def test_tuning_again_resumes(tuned_log):
    start = time.perf_counter()
    [again] = tune_kernels([SPEC], TARGET, log_dir=tuned_log, options=QUICK)
    assert again.trials_run == 0 and again.trials_total == QUICK.trials
    assert time.perf_counter() - start < 30  # nothing built or timed
    more = TuneOptions(trials=QUICK.trials + 2, threads=1, repeat=2, progress=False)
    [extended] = tune_kernels([SPEC], TARGET, log_dir=tuned_log, options=more)
    assert extended.trials_run == 2 and extended.trials_total == QUICK.trials + 2
    assert set(TuningLog(tuned_log, TARGET).read().trials.values()) == {QUICK.trials + 2}


def test_the_best_record_is_the_schedule_used(tmp_path):
    """Two hand-made records: the build takes the faster one, whatever the default is."""
    log = TuningLog(tmp_path, TARGET)
    log.merge([_pinned_record(SPEC, 2, 5e-6), _pinned_record(SPEC, 16, 9e-6)], {})
    built = scheduled_module(SPEC, TARGET, TunedSchedules(tmp_path, TARGET))["lut_matmul"]
    func = workload_of(lut_matmul(SPEC))["main"]
    pinned = _func_of(rule_for(func, TARGET).apply(func, TARGET, Knobs(pinned=(("chunk", 2),))))
    default = scheduled_module(SPEC, TARGET)["lut_matmul"]
    assert tvm_ffi.structural_equal(built.without_attr("global_symbol"), pinned)
    assert not tvm_ffi.structural_equal(built, default)


# ---- bad logs ---------------------------------------------------------------------------------


def _truncate_records(path):
    text = (path / RECORDS).read_text()
    (path / RECORDS).write_text(text[: len(text) // 2])


def _garble_workloads(path):
    (path / WORKLOADS).write_text('["123", "not base64 json"]\n')


def _foreign_version(path):
    meta = json.loads((path / META).read_text())
    (path / META).write_text(json.dumps(meta | {"tvm": "0.19.0"}))


def _future_format(path):
    meta = json.loads((path / META).read_text())
    (path / META).write_text(json.dumps(meta | {"format": LOG_FORMAT + 1}))


def _no_meta(path):
    (path / META).unlink()


@pytest.mark.parametrize("damage", [_truncate_records, _garble_workloads, _foreign_version, _future_format, _no_meta])
def test_bad_logs_warn_and_are_ignored(tmp_path, damage):
    log = TuningLog(tmp_path, TARGET)
    log.merge([_pinned_record(SPEC, 2, 5e-6)], {"x": 1})
    damage(log.dir)
    with pytest.warns(TuningLogWarning, match="ignored"):
        assert TuningLog(tmp_path, TARGET).read().records == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TuningLogWarning)
        with pytest.warns(UntunedKernelsWarning, match="no record"):
            gemm = build_lut_gemm(SPEC, TARGET, threads=1, tuning_logs=tmp_path)
    _check_gemm(gemm, SPEC)
    with pytest.warns(TuningLogWarning, match="moved to"):  # writing moves the bad log aside, keeps it
        assert log.merge([_pinned_record(SPEC, 4, 6e-6)], {}) == 1
    [aside] = log.dir.glob("unusable-*")
    assert (aside / RECORDS).exists() or (aside / META).exists() or (aside / WORKLOADS).exists()
    assert len(TuningLog(tmp_path, TARGET).read().records) == 1


MERGER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_tuning import SPEC, TARGET, _pinned_record
    from lutc.tuning import TuningLog
    log = TuningLog({log_dir!r}, TARGET)
    for i in range(4):
        log.merge([_pinned_record(SPEC, 4, {base} + i * 1e-7)], {{"w": 1}})
    """
)


def test_concurrent_writers_both_land(tmp_path):
    tests = str(Path(__file__).parent)
    scripts = [MERGER.format(tests=tests, log_dir=str(tmp_path), base=base) for base in (1e-5, 2e-5)]
    procs = [subprocess.Popen([sys.executable, "-c", s], stderr=subprocess.PIPE, text=True) for s in scripts]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    contents = TuningLog(tmp_path, TARGET).read()
    assert len(contents.records) == 8 and contents.trials == {"w": 8}


# ---- remote measurement over RPC --------------------------------------------------------------


@pytest.fixture
def rpc_tracker():
    """A TVM RPC tracker and one server registered under key ``lutc-test``, on loopback (own processes)."""
    from tvm import rpc
    from tvm.rpc.tracker import Tracker

    tracker = Tracker("127.0.0.1", port=19190, port_end=19290, silent=True)
    address = ("127.0.0.1", tracker.port)
    server = rpc.Server("127.0.0.1", port=19300, port_end=19400, key="lutc-test", tracker_addr=address)
    try:
        _wait_for_key(tracker.port, "lutc-test")
        yield RpcTracker("127.0.0.1", tracker.port, "lutc-test")
    finally:
        server.terminate()
        tracker.terminate()


def _wait_for_key(port: int, key: str, timeout: float = 60) -> None:
    from tvm import rpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if key in rpc.connect_tracker("127.0.0.1", port).text_summary():
                return
        except (ConnectionError, OSError, RuntimeError):
            pass
        time.sleep(1)
    raise TimeoutError(f"no RPC server registered key {key!r} within {timeout} s")


def test_tuning_through_an_rpc_tracker(tmp_path, rpc_tracker):
    options = TuneOptions(trials=2, threads=1, repeat=2, progress=False, rpc=rpc_tracker)
    [result] = tune_kernels([SPEC], TARGET, log_dir=tmp_path, options=options)
    assert result.trials_run == 2 and result.best_seconds is not None
    assert len(TuningLog(tmp_path, TARGET).read().records) == 2


def test_cross_compiler_follows_the_target_triple():
    assert cross_compiler(resolve_target("arm")) == "aarch64-linux-gnu-gcc"
    assert cross_compiler(resolve_target("x86")) is None


def test_rpc_tracker_address_is_checked():
    assert RpcTracker.parse("10.0.0.2:9190", "rk3588") == RpcTracker("10.0.0.2", 9190, "rk3588")
    for address, key in (("10.0.0.2", "k"), ("host:port", "k"), ("h:9190", "")):
        with pytest.raises(ValueError, match="RPC tracker"):
            RpcTracker.parse(address, key)


# ---- the model-level API and CLI ----------------------------------------------------------------


def test_cli_tunes_a_model_and_compiles_with_its_log(tmp_path, capsys):
    from lutc.cli import main

    model = zoo.quantize_matmuls(zoo.float_mlp(64, 128, layers=1), 2, 32)
    path = tmp_path / "mlp.onnx"
    path.write_bytes(model.SerializeToString())
    logs = tmp_path / "logs"
    argv = ["tune", str(path), "--trials", "2", "--threads", "1", "--log-dir", str(logs)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.count("2 trials now") == 1, captured.out  # one 64x64 matmul
    assert "w2g32 fast half-scales M=any 64x64: 2/2 trials, best" in captured.err  # progress, as lines off a terminal
    assert main(["compile", str(path), "--tuning-logs", str(logs), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 kernel(s) tuned, 0 on the default schedule" in out, out


def test_tune_rejects_a_model_without_lut_kernels(tmp_path):
    model = zoo.float_mlp(64, 128, layers=1)
    with pytest.raises(ValueError, match="nothing to tune"):
        lutc.tune(model, "x86", trials=2, log_dir=tmp_path, progress=False)


def test_tune_options_are_checked():
    with pytest.raises(ValueError, match="trials"):
        TuneOptions(trials=0)
    with pytest.raises(ValueError, match="measure"):
        TuneOptions(measure="warm")
    assert len(tasks_of_specs([SPEC, SPEC, KernelSpec(None, 64, 256, FORMATS["w2g128"])])) == 2  # M=1, M=any
    exact = [KernelSpec(rows, 64, 256, FORMATS["w2g128"], mode="exact") for rows in (1, None)]
    assert len(tasks_of_specs(exact)) == 1  # exact mode's dynamic kernel is the static one's (no fold)


# ---- migration and the shipped logs ------------------------------------------------------------


def _as_older_kernel(record: ms.database.TuningRecord) -> ms.database.TuningRecord:
    """The record under a structurally different workload with the same spec: what a log
    written by an older lutc (another version of the kernel) looks like."""
    old = tvm.IRModule({"main": record.workload.mod["main"].with_attr("lutc.older_kernel", 1)})
    return ms.database.TuningRecord(
        record.trace, ms.database.Workload(old), record.run_secs, record.target, record.args_info
    )


def test_migration_moves_records_of_an_older_kernel_to_the_current_one(tuned_log, tmp_path):
    from lutc.tuning.migrate import migrate_log

    contents = TuningLog(tuned_log, TARGET).read()
    older = lutc.tuning.log.LogContents(
        [_as_older_kernel(r) for r in contents.records],
        {lutc.tuning.log.workload_hash(_as_older_kernel(r).workload.mod): QUICK.trials for r in contents.records},
    )
    TuningLog(tmp_path, TARGET).replace(older)
    with pytest.warns(UntunedKernelsWarning, match="no record"):
        assert not build_lut_gemm(SPEC, TARGET, threads=1, tuning_logs=tmp_path).tuned
    report = migrate_log(tmp_path, TARGET)
    assert report.moved and not report.dropped, report.describe()
    migrated = TuningLog(tmp_path, TARGET).read()
    assert set(migrated.trials) == {lutc.tuning.log.workload_hash(workload_of(lut_matmul(SPEC)))}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntunedKernelsWarning)
        gemm = build_lut_gemm(SPEC, TARGET, threads=1, tuning_logs=tmp_path)
    assert gemm.tuned
    _check_gemm(gemm, SPEC)
    assert migrate_log(tmp_path, TARGET).current  # a second run finds nothing to move


def test_migration_drops_records_whose_schedule_no_longer_applies(tuned_log, tmp_path):
    """A record of the unfolded M = 16 kernel (before prompts folded their epilogue) cannot replay on
    today's: migration reports it and removes it from the log, leaving the current records alone."""
    from lutc.tuning.migrate import migrate_log

    record = TuningLog(tuned_log, TARGET).read().records[0]  # SPEC's (M = 1, current)
    stale_mod = tvm.IRModule({"main": lut_matmul(KernelSpec(16, SPEC.n, SPEC.k, SPEC.fmt), folded=False)})
    stale = ms.database.TuningRecord(record.trace, ms.database.Workload(stale_mod), record.run_secs, record.target)
    TuningLog(tmp_path, TARGET).replace(lutc.tuning.log.LogContents([record, stale], {}))
    report = migrate_log(tmp_path, TARGET)
    assert list(report.dropped) == ["w2g128 fast M=16 64x256"] and report.current, report.describe()
    kept = TuningLog(tmp_path, TARGET).read().records
    decode = workload_of(lut_matmul(SPEC))
    assert [lutc.tuning.log.workload_hash(r.workload.mod) for r in kept] == [lutc.tuning.log.workload_hash(decode)]


def test_shipped_logs_match_the_current_kernels():
    """Every workload in ``tuning_logs/`` is today's kernel for its spec: a change to the
    kernels' TensorIR must come with ``python -m lutc.tuning.migrate tuning_logs`` (or a re-tune)."""
    shipped = Path(__file__).resolve().parents[1] / "tuning_logs"
    for tag_dir in sorted(p for p in shipped.iterdir() if p.is_dir()):
        for line in (tag_dir / WORKLOADS).read_text().splitlines():
            mod = ms.database.Workload.from_json(json.loads(line)).mod
            current = workload_of(mod["main"])
            assert tvm_ffi.structural_equal(mod, current), f"{tag_dir.name}: {mod['main'].attrs['lutc.spec']} is stale"


def test_a_failed_trial_has_no_time_and_its_reason_is_kept():
    """meta_schedule stores failures as 1e10 s runs: they must not pass for the best time."""
    from lutc.tuning.log import mean_run_seconds
    from lutc.tuning.tuner import _Run

    assert mean_run_seconds([1e10, 1e10]) is None and mean_run_seconds([2e-4, 4e-4]) == pytest.approx(3e-4)
    run = _Run(None)
    run.record([None, 5e-5], ["AttributeError: no random_fill_for_measure on the server"])
    run.record([None], ["AttributeError: no random_fill_for_measure on the server"])
    assert run.best == 5e-5
    assert run.failure_summary() == "2 of 3 trials failed: AttributeError: no random_fill_for_measure on the server"
    assert _Run(None).failure_summary() is None
