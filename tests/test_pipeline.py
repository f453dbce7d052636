"""The compilation as one pipeline of named phases; the tuning log applied by a pass whose outcome the
module carries; errors of lutc's own default-schedule rules surfacing from a build.

Records are made by hand (a rule's schedule with one choice pinned), so nothing here tunes.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tvm
from lutc.relay_passes import RewriteOptions
from lutc.relay_passes.schedule_kernels import scheduled_kernel
from lutc.schedules import Knobs, rule_for
from tvm import relax, tirx
from tvm.s_tir import meta_schedule as ms

import lutc
from lutc import zoo
from lutc.backend.legalize import legalize_and_fuse
from lutc.errors import CompileError
from lutc.kernels import KernelSpec, lut_matmul
from lutc.pipeline import get_pipeline, phases
from lutc.quant import FORMATS
from lutc.targets import resolve_target
from lutc.tuning import TuningLog, target_tag
from lutc.tuning.apply import UntunedKernelsWarning
from lutc.tuning.apply_tuning_log import TUNING_ATTR, LutcApplyTuningLog, tuning_summary
from lutc.tuning.tasks import tasks_of_module, workload_of

TARGET = resolve_target("x86", 1)
SPEC = KernelSpec(1, 64, 256, FORMATS["w2g128"])
UNTUNED = KernelSpec(1, 96, 256, FORMATS["w2g128"])
PHASES = ["lut", "tuning", "schedule", "lift", "legalize", "default_schedule", "weights", "lower"]


def _pinned(func: tvm.tirx.PrimFunc, chunk: int) -> tvm.s_tir.Schedule:
    return rule_for(func, TARGET).apply(func, TARGET, Knobs(pinned=(("chunk", chunk),)))


def _record(workload: tvm.IRModule, chunk: int, seconds: float) -> ms.database.TuningRecord:
    """A record of ``workload`` whose schedule pins ``chunk`` (other decisions at their defaults)."""
    func = workload["main"]
    db = ms.database.MemoryDatabase()
    args = ms.arg_info.ArgInfo.from_prim_func(func)
    return ms.database.TuningRecord(_pinned(func, chunk).trace, db.commit_workload(workload), [seconds], TARGET, args)


def _mlp():
    return zoo.quantize_matmuls(zoo.float_mlp(64, 128, layers=1), 2, 32)  # one 64x64 LUT matmul


# ---- the pipeline's shape -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["x86", "arm", "cuda-sm90"])
def test_phases_list_the_whole_compilation_in_order(name, tmp_path):
    target = resolve_target(name)
    listed = phases(target, RewriteOptions())
    assert list(listed) == PHASES
    assert listed["lut"][0].info.name == "LutcRewriteQuantizedMatmul"
    assert listed["tuning"] == []  # no log: every kernel on its default schedule
    first = ["LutcVectorWeights"] if name.startswith("cuda") else []  # GPU weights in the vector layout
    assert [p.info.name for p in listed["schedule"]] == [*first, "LutcScheduleKernels"]
    assert "LutcApplyDefaultSchedules" in [p.info.name for p in listed["default_schedule"]]
    assert phases(target)["lut"] == []  # no rewrite options: a module kept on TVM's path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntunedKernelsWarning)
        tuned = phases(target, RewriteOptions(), tmp_path)
    assert [p.info.name for p in tuned["tuning"]] == ["LutcApplyTuningLog"]
    pipeline = get_pipeline(target, RewriteOptions(), tmp_path)
    assert isinstance(pipeline, tvm.transform.Sequential) and pipeline.info.name == "LutcPipeline"


def test_build_runs_the_pipeline_once_from_the_imported_model(monkeypatch):
    calls = []

    def counted(*args):
        calls.append(args)
        return get_pipeline(*args)

    monkeypatch.setattr(lutc.builder, "get_pipeline", counted)
    model = lutc.build(_mlp(), "x86", threads=1)
    [(target, options, tuning_logs)] = calls
    assert target.kind.name == "llvm" and options == lutc.BuildOptions().rewrite_options(target) and tuning_logs is None
    assert model.decisions == {"fc0": "lut fast w2g32 float16 scales"}  # the LUT phase ran inside the pipeline
    assert "tuning" not in model.metadata


# ---- the tuning log, applied by a pass ---------------------------------------------------------


def test_apply_tuning_log_schedules_the_kernels_it_has_records_for(tmp_path):
    TuningLog(tmp_path, TARGET).merge([_record(workload_of(lut_matmul(SPEC)), 2, 5e-6)], {})
    before = tvm.IRModule({"lut_matmul": lut_matmul(SPEC), "untuned": lut_matmul(UNTUNED)})
    kept, script = before.clone(), before.script()
    with TARGET:
        after = LutcApplyTuningLog(tmp_path, TARGET)(before)
    expected = scheduled_kernel(_pinned(workload_of(lut_matmul(SPEC))["main"], 2))
    tvm.ir.assert_structural_equal(after["lut_matmul"], expected)
    tvm.ir.assert_structural_equal(after["untuned"], before["untuned"])  # LutcScheduleKernels' to schedule
    assert tuning_summary(after) == {
        "log": str(tmp_path / target_tag(TARGET)),
        "tuned": {"w2g128 fast M=1 64x256": 5e-6},
        "default": {"w2g128 fast M=1 96x256": "no record in the log"},
    }
    tvm.ir.assert_structural_equal(before, kept)  # the module given is unchanged
    assert before.script() == script and (before.attrs is None or TUNING_ATTR not in before.attrs)


def test_a_build_reads_what_the_tuning_pass_recorded(tmp_path):
    """A record for the model's kernel: tuned, no warning; the summary lists it as users saw it."""
    mod, _ = lutc.builder.lut_module(_mlp(), lutc.BuildOptions(), target=TARGET)
    [task] = tasks_of_module(mod)
    TuningLog(tmp_path, TARGET).merge([_record(task.workload, 4, 7e-6)], {})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntunedKernelsWarning)
        model = lutc.build(_mlp(), "x86", threads=1, tuning_logs=tmp_path)
    assert model.metadata["tuning"] == {
        "log": str(tmp_path / target_tag(TARGET)),
        "tuned": {"w2g32 fast half-scales M=any 64x64": 7e-6},
        "default": {},
    }
    assert "1 kernel(s) tuned, 0 on the default schedule" in model.summary()
    assert "w2g32 fast half-scales M=any 64x64: tuned, 7.0 us when tuned" in model.summary()
    x = np.random.default_rng(0).standard_normal((1, 3, 64)).astype(np.float32)
    untuned = lutc.build(_mlp(), "x86", threads=1)
    np.testing.assert_array_equal(model(x=x), untuned(x=x))  # same arithmetic, another loop order only


def test_a_build_without_records_warns_and_lists_the_fallbacks(tmp_path):
    with pytest.warns(UntunedKernelsWarning, match=r"1 LUT kernel\(s\) use the default schedule .*64x64: no record"):
        model = lutc.build(_mlp(), "x86", threads=1, tuning_logs=tmp_path)
    assert model.metadata["tuning"] == {
        "log": str(tmp_path / target_tag(TARGET)),
        "tuned": {},
        "default": {"w2g32 fast half-scales M=any 64x64": "no record in the log"},
    }
    assert "0 kernel(s) tuned, 1 on the default schedule" in model.summary()


# ---- default schedules: lutc's rules are not dlight's -------------------------------------------


def test_an_error_in_a_lutc_rule_fails_the_build(monkeypatch):
    """Not a "dlight failed" warning and a kernel left unscheduled: a bug in lutc's rule is an error."""
    from lutc.schedules.cpu import Elementwise

    def broken(self, func, target, tunable):
        raise RuntimeError("a bug in lutc's Elementwise rule")

    monkeypatch.setattr(Elementwise, "apply", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CompileError, match="a bug in lutc's Elementwise rule"):
            lutc.build(_mlp(), "x86", threads=1)
    assert not [w for w in caught if "dlight failed" in str(w.message)]


# ---- legalization ---------------------------------------------------------------------------------


def test_a_reshape_over_an_expression_dim_is_a_view_not_a_kernel():
    """GQA's ``[b, 2, 2, past + seq, 64] -> [b, 4, past + seq, 64]`` (a dynamo decode step) stays a
    reshape, a view: TVM's copy kernel for it, which ``RewriteDataflowReshape`` cannot prove an
    identity, is never made. A reshape over plain dims is legalized as before (fusable)."""
    b, p, s = (tirx.Var(n, "int64") for n in ("b", "past", "seq"))
    params = [
        relax.Var("mask", relax.TensorType((b, p), "float32")),
        relax.Var("ids", relax.TensorType((b, s), "float32")),
        relax.Var("kv", relax.TensorType((b, 2, 2, p + s, 64), "float32")),
        relax.Var("x", relax.TensorType((b, 8), "float32")),
    ]
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            heads = bb.emit(relax.op.reshape(params[2], (b, 4, p + s, 64)))
            doubled = bb.emit(relax.op.add(heads, heads))
            flat = bb.emit(relax.op.exp(relax.op.reshape(params[3], (b, 2, 4))))
            out = bb.emit_output(relax.Tuple([doubled, flat]))
        bb.emit_func_output(out)
    mod = tvm.transform.Sequential(legalize_and_fuse([]))(bb.get())
    calls = [binding.value for block in mod["main"].body.blocks for binding in block.bindings]
    views = [c for c in calls if isinstance(c, relax.Call) and c.op.same_as(tvm.ir.Op.get("relax.reshape"))]
    assert len(views) == 1 and views[0].args[0].same_as(params[2])
    kernels = [c for c in calls if isinstance(c, relax.Call) and c.op.same_as(tvm.ir.Op.get("relax.call_tir"))]
    assert any(c.args[1].fields[0].same_as(params[3]) for c in kernels)  # the plain reshape: a kernel
    run = relax.VirtualMachine(tvm.compile(bb.get(), TARGET, relax_pipeline=get_pipeline(TARGET, None)), tvm.cpu())
    rng = np.random.default_rng(0)
    kv, x = rng.standard_normal((1, 2, 2, 5, 64)).astype(np.float32), rng.standard_normal((1, 8)).astype(np.float32)
    args = [np.zeros((1, 2), np.float32), np.zeros((1, 3), np.float32), kv, x]
    doubled, flat = run["main"](*(tvm.runtime.tensor(a) for a in args))
    np.testing.assert_array_equal(doubled.numpy(), (kv + kv).reshape(1, 4, 5, 64))  # one float add: exact
    np.testing.assert_allclose(flat.numpy(), np.exp(x.astype(np.float64)).reshape(1, 2, 4), rtol=8e-7)
