"""Graph passes: Before/Expected modules compared with tvm.ir.assert_structural_equal."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tvm
from conftest import random_weights
from lutc.relay_passes import DECISIONS_ATTR, LutcRewriteQuantizedMatmul, LutcShareTables, RewriteOptions
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from lutc.frontend.weight_params import WEIGHTS_ATTR, weight_var
from lutc.kernels import KernelSpec, lut_matmul, lut_precompute
from lutc.kernels.dequantize import DequantizeSpec, lut_dequantize
from lutc.quant import IntFormat, pack, quantize

FMT = IntFormat(2, 32, symmetric=False)
N, K = 40, 64


def _weight():
    return quantize(random_weights(np.random.default_rng(0), N, K), FMT)


def _dequantize_func(node: str = "proj"):
    spec = DequantizeSpec(N, K, 2, 32, "int", FMT.implied_zero, fmt=FMT, node=node)
    return lut_dequantize(spec)


def _arguments(arrays, kind: str, keys: list[str]) -> tuple[list, list, dict | None]:
    """``(args, params after x, main's attrs)`` for ``arrays`` as constants, plain inputs, or model
    weights keyed ``keys`` (the importer's form)."""
    if kind == "constant":
        return [relax.const(a) for a in arrays], [], None
    if kind == "input":
        args = [relax.Var(name, relax.TensorType(a.shape, str(a.dtype))) for name, a in zip("csz", arrays, strict=True)]
        return args, args, None
    args = [weight_var(key, a.shape, str(a.dtype)) for a, key in zip(arrays, keys, strict=True)]
    return args, args, {"num_input": 1, WEIGHTS_ATTR: keys}


def _before(qw, kind: str = "constant") -> tvm.IRModule:
    """``y = x @ lut_dequantize(codes, scales, zeros)`` for x[2, 3, K]."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 3, K), "float32"))
    args, params, attrs = _arguments((qw.codes, qw.scales, qw.zeros), kind, ["codes:proj", "scales:proj", "zeros:proj"])
    with bb.function("main", [x, *params], attrs=attrs):
        with bb.dataflow():
            dq = bb.add_func(_dequantize_func(), "lut_dequantize")
            w = bb.emit(relax.call_tir(dq, args, relax.TensorType((K, N), "float32")))
            y = bb.emit_output(bb.emit(relax.op.matmul(x, w)))
        bb.emit_func_output(y)
    return bb.get()


def _expected(qw, kind: str = "constant") -> tvm.IRModule:
    spec = KernelSpec(6, N, K, FMT, mode="fast")
    packed = pack(qw)
    keys = ["packed.data:proj", "packed.scales:proj", "packed.offsets:proj"]
    weights, params, attrs = _arguments((packed.data, packed.scales, packed.offsets), kind, keys)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 3, K), "float32"))
    with bb.function("main", [x, *params], attrs=attrs):
        with bb.dataflow():
            flat = bb.emit(relax.op.reshape(x, [6, K]))
            types = [
                relax.TensorType((6, spec.table_groups, 16), "int8"),
                relax.TensorType((6, spec.n_groups), "float32"),
                relax.TensorType((6, spec.n_groups), "float32"),
                relax.TensorType((6,), "float32"),
            ]
            tables = bb.emit(relax.call_tir(bb.add_func(lut_precompute(spec), "lut_precompute"), [flat], types))
            args = [relax.TupleGetItem(tables, i) for i in range(4)] + weights
            mm = bb.add_func(lut_matmul(spec), "lut_matmul")
            out = bb.emit(relax.call_tir(mm, args, relax.TensorType((6, N), "float32")))
            y = bb.emit_output(bb.emit(relax.op.reshape(out, [2, 3, N])))
        bb.emit_func_output(y)
    return bb.get()


def test_rewrite_of_a_model_weight_reads_new_packed_weight_parameters():
    """The logical weight parameters give way to packed ones (computed at load), keyed by the node."""
    qw = _weight()
    after = LutcRewriteQuantizedMatmul(RewriteOptions("fast"))(_before(qw, "weight"))
    tvm.ir.assert_structural_equal(_main_only(after), _main_only(_expected(qw, "weight")), map_free_vars=True)
    assert [str(k) for k in after["main"].attrs[WEIGHTS_ATTR]] == [
        "packed.data:proj", "packed.scales:proj", "packed.offsets:proj"]  # fmt: skip


def _main_only(mod: tvm.IRModule) -> tvm.IRModule:
    """The module minus unused functions and module attributes, for comparison."""
    mod = relax.transform.DeadCodeElimination(["main"])(mod)
    return tvm.IRModule(dict(mod.functions_items()))


def test_rewrite_turns_quantized_matmul_into_lut_kernels():
    qw = _weight()
    after = LutcRewriteQuantizedMatmul(RewriteOptions("fast"))(_before(qw))
    tvm.ir.assert_structural_equal(_main_only(after), _main_only(_expected(qw)))
    assert dict(after.attrs[DECISIONS_ATTR]) == {"proj": "lut fast w2g32a"}


def test_model_without_quantized_matmul_passes_through_unchanged():
    @I.ir_module
    class Plain:
        @R.function
        def main(x: R.Tensor((2, 8), "float32"), w: R.Tensor((8, 4), "float32")) -> R.Tensor((2, 4), "float32"):
            with R.dataflow():
                y = R.matmul(x, w)
                R.output(y)
            return y

    after = LutcRewriteQuantizedMatmul()(Plain)
    tvm.ir.assert_structural_equal(after["main"], Plain["main"])
    assert dict(after.attrs[DECISIONS_ATTR]) == {}


def test_non_constant_weight_stays_on_the_dequantize_path_with_a_warning():
    before = _before(_weight(), "input")
    with pytest.warns(UserWarning, match="proj: quantized weight is neither a constant nor a model weight"):
        after = LutcRewriteQuantizedMatmul()(before)
    tvm.ir.assert_structural_equal(after["main"], before["main"])
    assert "not a constant" in after.attrs[DECISIONS_ATTR]["proj"]


def test_kept_nodes_stay_on_the_dequantize_path():
    before = _before(_weight())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        after = LutcRewriteQuantizedMatmul(RewriteOptions(keep_dequantize=frozenset({"proj"})))(before)
    tvm.ir.assert_structural_equal(after["main"], before["main"])
    assert after.attrs[DECISIONS_ATTR]["proj"] == "dequantize path: kept by request"


def test_share_tables_merges_equal_precomputes():
    @I.ir_module
    class Before:
        @T.prim_func(s_tir=True)
        def precompute(x: T.Buffer((1, 8), "float32"), t: T.Buffer((1, 2, 16), "int8")):
            T.func_attr({"lutc.kernel": "lut_precompute"})
            for a, e in T.grid(2, 16):
                with T.sblock("table"):
                    va, ve = T.axis.remap("SS", [a, e])
                    t[0, va, ve] = T.Cast("int8", x[0, va * 4])

        @R.function
        def main(x: R.Tensor((1, 1, 8), "float32")):
            cls = Before
            with R.dataflow():
                q_flat = R.reshape(x, R.shape([1, 8]))
                q_tables = R.call_tir(cls.precompute, (q_flat,), out_ty=R.Tensor((1, 2, 16), "int8"))
                k_flat = R.reshape(x, R.shape([1, 8]))
                k_tables = R.call_tir(cls.precompute, (k_flat,), out_ty=R.Tensor((1, 2, 16), "int8"))
                out = (q_tables, k_tables)
                R.output(out)
            return out

    @I.ir_module
    class Expected:
        @T.prim_func(s_tir=True)
        def precompute(x: T.Buffer((1, 8), "float32"), t: T.Buffer((1, 2, 16), "int8")):
            T.func_attr({"lutc.kernel": "lut_precompute"})
            for a, e in T.grid(2, 16):
                with T.sblock("table"):
                    va, ve = T.axis.remap("SS", [a, e])
                    t[0, va, ve] = T.Cast("int8", x[0, va * 4])

        @R.function
        def main(x: R.Tensor((1, 1, 8), "float32")):
            cls = Expected
            with R.dataflow():
                q_flat = R.reshape(x, R.shape([1, 8]))
                q_tables = R.call_tir(cls.precompute, (q_flat,), out_ty=R.Tensor((1, 2, 16), "int8"))
                k_flat = R.reshape(x, R.shape([1, 8]))  # noqa: F841 - dead, left for DCE
                out = (q_tables, q_tables)
                R.output(out)
            return out

    tvm.ir.assert_structural_equal(LutcShareTables()(Before), Expected)


@pytest.mark.parametrize("fuse", [True, False])
def test_decoder_block_shares_tables_between_qkv_and_gate_up(fuse):
    """Seven projections, four activations: q/k/v read one, gate/up another, o and down their own.
    ``fuse=False``: one precompute per projection."""
    from lutc.relay_passes.calls import called_kernel

    from lutc import zoo
    from lutc.frontend import import_onnx
    from lutc.pipeline import lut_passes

    model = zoo.quantize_matmuls(zoo.float_decoder_block(128, 2, 256), 2, 32)
    mod, _ = import_onnx(model)
    mod = tvm.transform.Sequential(lut_passes(RewriteOptions(fuse=fuse)))(mod)
    kinds = [called_kernel(mod, call) for call in _calls(mod["main"])]
    assert kinds.count("lut_matmul") == 7
    assert kinds.count("lut_precompute") == (4 if fuse else 7)


def _calls(func: relax.Function) -> list[relax.Call]:
    found = []
    relax.analysis.post_order_visit(func, lambda e: found.append(e) if isinstance(e, relax.Call) else None)
    return found


def test_schedule_kernels_applies_the_lutc_rule_and_marks_the_kernel():
    from lutc.relay_passes import LutcScheduleKernels

    from lutc import schedules
    from lutc.targets import resolve_target

    target = resolve_target("x86")
    spec = KernelSpec(1, N, K, FMT)
    before = tvm.IRModule({"lut_matmul": lut_matmul(spec)})
    expected = schedules.schedule(lut_matmul(spec), target).mod["main"].without_attr("global_symbol")
    expected = expected.with_attrs({"tirx.is_scheduled": True, "op_pattern": 8})
    with target:
        after = LutcScheduleKernels(target)(before)
    tvm.ir.assert_structural_equal(after["lut_matmul"], expected)


def test_default_schedules_skip_scheduled_kernels():
    from lutc.relay_passes import LutcApplyDefaultSchedules

    from lutc.targets import resolve_target

    @T.prim_func(s_tir=True)
    def scheduled(a: T.Buffer((4,), "float32"), b: T.Buffer((4,), "float32")):
        T.func_attr({"tirx.is_scheduled": True})
        for i in range(4):
            with T.sblock("copy"):
                vi = T.axis.remap("S", [i])
                b[vi] = a[vi]

    before = tvm.IRModule({"scheduled": scheduled})
    with resolve_target("x86"):
        after = LutcApplyDefaultSchedules()(before)
    tvm.ir.assert_structural_equal(after["scheduled"], scheduled)


def _row_sum():
    """A reduction none of lutc's CPU rules takes: it reaches dlight's GEMV rule."""

    @T.prim_func(s_tir=True)
    def row_sum(a: T.Buffer((4, 8), "float32"), b: T.Buffer((4,), "float32")):
        for i, k in T.grid(4, 8):
            with T.sblock("sum"):
                vi, vk = T.axis.remap("SR", [i, k])
                with T.init():
                    b[vi] = T.float32(0)
                b[vi] = b[vi] + a[vi, vk]

    return row_sum


def test_default_schedules_leave_a_kernel_unscheduled_when_dlight_fails(monkeypatch):
    from lutc.relay_passes import LutcApplyDefaultSchedules
    from tvm.s_tir import dlight

    from lutc.targets import resolve_target

    def failing_rule(self, func, target, tunable):
        raise AssertionError("dlight rule failed")  # dlight's analysis asserts (``assert s_loops``)

    monkeypatch.setattr(dlight.cpu.GEMV, "apply", failing_rule)
    before = tvm.IRModule({"row_sum": _row_sum()})
    with resolve_target("x86"), pytest.warns(UserWarning, match=r"row_sum: dlight failed \(GEMV: AssertionError\)"):
        after = LutcApplyDefaultSchedules()(before)
    tvm.ir.assert_structural_equal(after["row_sum"], before["row_sum"])


@pytest.mark.parametrize("error", [RuntimeError, AssertionError])
def test_default_schedules_let_an_error_in_a_lutc_rule_surface(monkeypatch, error):
    """lutc's own rules are not guarded like dlight's: their error is a bug, never a "dlight failed"."""
    from lutc.relay_passes import LutcApplyDefaultSchedules
    from lutc.schedules.cpu import Elementwise

    from lutc.targets import resolve_target

    def broken(self, func, target, tunable):
        raise error("a bug in lutc's Elementwise rule")

    monkeypatch.setattr(Elementwise, "apply", broken)
    before = tvm.IRModule({"lut_dequantize": _dequantize_func()})  # an injective kernel: Elementwise's
    with resolve_target("x86"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(error, match="a bug in lutc's Elementwise rule"):
            LutcApplyDefaultSchedules()(before)
    assert not [w for w in caught if "dlight failed" in str(w.message)]


# ---- passes return new modules: the module given stays as it was ------------------------------


def _scalar_kernel():
    @T.prim_func(s_tir=True)
    def shape_kernel(n: T.int64, out: T.Buffer((1,), "int64")):
        out[0] = n

    return shape_kernel


def _schedule_kernels_case():
    from lutc.relay_passes import LutcScheduleKernels

    from lutc.targets import resolve_target

    target = resolve_target("x86")
    return LutcScheduleKernels(target), tvm.IRModule({"lut_matmul": lut_matmul(KernelSpec(1, N, K, FMT))}), target


def _default_schedules_case():
    from lutc.relay_passes import LutcApplyDefaultSchedules

    from lutc.targets import resolve_target

    return LutcApplyDefaultSchedules(), tvm.IRModule({"lut_dequantize": _dequantize_func()}), resolve_target("x86")


def _isolate_shape_kernels_case():
    from lutc.relay_passes import LutcIsolateShapeKernels

    from lutc.targets import resolve_target

    return LutcIsolateShapeKernels(), tvm.IRModule({"shape_kernel": _scalar_kernel()}), resolve_target("x86")


@pytest.mark.parametrize("case", [_schedule_kernels_case, _default_schedules_case, _isolate_shape_kernels_case])
def test_passes_leave_the_module_given_unchanged(case):
    transform, before, target = case()
    before = before.with_attr("lutc.test", "kept")
    kept, script = before.clone(), before.script()
    with target:
        after = transform(before)
    assert not after.same_as(before) and after.script() != script  # the pass did change something
    tvm.ir.assert_structural_equal(before, kept)
    assert before.script() == script
    assert str(after.attrs["lutc.test"]) == "kept"  # a new module keeps the module's attributes
