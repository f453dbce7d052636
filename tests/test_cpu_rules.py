"""lutc's CPU rules for the kernels around the LUT matmuls: attention's activation-by-activation
matmuls (``BatchedMatmul``) and fused injective chains (``Elementwise``), checked to apply and to
compute what numpy computes.

Tolerances: the batched matmul sums the same K products in the same order as numpy's float32
einsum need not, so ``rtol = atol = 4 * K * eps`` (see ``test_float_matmul``); the elementwise
chains are the same float32 operations element by element (``sigmoid`` through LLVM's ``exp``),
a few ulps: ``rtol = 1e-6``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from corpus.feeds import CORPUS_DIR
from lutc.relay_passes.default_schedules import default_rules
from lutc.schedules.cpu import BatchedMatmul, Elementwise
from tvm import relax

import lutc
import lutc.builder
from lutc.backend import generated_source
from lutc.pipeline import get_pipeline
from lutc.targets import resolve_target

EPS = float(np.finfo(np.float32).eps) / 2


def _module(build, params: list[relax.Var]) -> tvm.IRModule:
    """``main(*params)`` returning ``build(bb, *params)``."""
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(build(bb, *params))
        bb.emit_func_output(out)
    return bb.get()


def _compile(build, params: list[relax.Var]):
    target = resolve_target("x86", 1)
    executable = tvm.compile(_module(build, params), target, relax_pipeline=get_pipeline(target, None))
    return relax.VirtualMachine(executable, tvm.cpu())["main"]


def _legalized(build, params: list[relax.Var]) -> list[tvm.tirx.PrimFunc]:
    mod = relax.transform.LegalizeOps()(_module(build, params))
    return [f for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]


def _attention_params(past: int | str):
    """Scores ``[1, 3, 3, 1, T]`` by values ``[1, 3, 1, T, 64]``: GQA 9/3 heads, one query, T positions."""
    t = tvm.tirx.Var("t", "int64") if isinstance(past, str) else past
    p = relax.Var("p", relax.TensorType((1, 3, 3, 1, t), "float32"))
    v = relax.Var("v", relax.TensorType((1, 3, 1, t, 64), "float32"))
    return [p, v]


@pytest.mark.parametrize("past", [41, "dynamic"])
def test_batched_matmul_applies_to_attention_and_matches_numpy(past):
    params = _attention_params(past)
    matmul = lambda bb, p, v: bb.emit(relax.op.matmul(p, v))  # noqa: E731
    (func,) = _legalized(matmul, params)
    assert BatchedMatmul().apply(func, resolve_target("x86", 1), False) is not None
    run = _compile(matmul, params)
    rng = np.random.default_rng(0)
    for t in (41,) if past == 41 else (1, 7, 41):
        p = rng.standard_normal((1, 3, 3, 1, t)).astype(np.float32)
        v = rng.standard_normal((1, 3, 1, t, 64)).astype(np.float32)
        want = np.matmul(p.astype(np.float64), v.astype(np.float64))
        got = run(tvm.runtime.tensor(p), tvm.runtime.tensor(v)).numpy()
        np.testing.assert_allclose(got, want, rtol=4 * t * EPS, atol=4 * t * EPS)


def _scores(bb, q, k, mask):
    """Attention's scores as the exporters write them: ``Q·Kᵀ * scale + mask`` (one fused kernel)."""
    scores = bb.emit(relax.op.matmul(q, k))
    return bb.emit(relax.op.add(bb.emit(relax.op.multiply(scores, relax.const(0.125, "float32"))), mask))


def _fused(build, params: list[relax.Var]) -> list[tvm.tirx.PrimFunc]:
    mod = relax.transform.AnnotateTIROpPattern()(relax.transform.LegalizeOps()(_module(build, params)))
    mod = relax.transform.FuseTIR()(relax.transform.FuseOps()(mod))
    return [f for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]


@pytest.mark.parametrize("seq", [13, "dynamic"])
def test_batched_matmul_takes_the_fused_scale_and_mask_and_matches_numpy(seq):
    s = tvm.tirx.Var("s", "int64") if isinstance(seq, str) else seq
    params = [
        relax.Var("q", relax.TensorType((1, 4, s, 64), "float32")),
        relax.Var("k", relax.TensorType((1, 4, 64, s), "float32")),
        relax.Var("mask", relax.TensorType((1, 1, s, s), "float32")),
    ]
    (func,) = _fused(_scores, params)
    sch = BatchedMatmul().apply(func, resolve_target("x86", 1), False)
    assert sch is not None
    _init, update, epilogue = sch.get_child_blocks(sch.get_sblock("root"))  # the scale inlined into the add
    assert sch.get(epilogue).name_hint == "T_add"
    row = sch.get_loops(update)[2]  # batch, head, row: the epilogue follows each row's products
    assert [sch.get(loop) for loop in sch.get_loops(epilogue)[:3]][-1].same_as(sch.get(row))
    run = _compile(_scores, params)
    rng = np.random.default_rng(0)
    for t in (13,) if seq == 13 else (1, 13):
        q, mask = rng.standard_normal((1, 4, t, 64)).astype(np.float32), rng.standard_normal((1, 1, t, t))
        k = rng.standard_normal((1, 4, 64, t)).astype(np.float32)
        mask = mask.astype(np.float32)
        want = np.matmul(q.astype(np.float64), k.astype(np.float64)) * 0.125 + mask
        got = run(*(tvm.runtime.tensor(a) for a in (q, k, mask))).numpy()
        np.testing.assert_allclose(got, want, rtol=4 * 64 * EPS, atol=4 * 64 * EPS)


def test_batched_matmul_leaves_weight_matmuls_to_the_float_rule():
    x = relax.Var("x", relax.TensorType((1, 64), "float32"))
    w = relax.const(np.ones((64, 32), np.float32))
    (func,) = _legalized(lambda bb, x: bb.emit(relax.op.matmul(x, w)), [x])
    target = resolve_target("x86", 1)
    first = next(rule for rule in default_rules() if rule.apply(func, target, False) is not None)
    assert type(first).__name__ == "FloatMatmul"


def _swiglu(bb, gate, up):
    silu = bb.emit(relax.op.multiply(gate, relax.op.sigmoid(gate)))
    return bb.emit(relax.op.multiply(silu, up))


@pytest.mark.parametrize("n", [1536, 100])
def test_elementwise_chain_is_inlined_and_matches_numpy(n):
    params = [relax.Var(name, relax.TensorType((1, 1, n), "float32")) for name in ("gate", "up")]
    fused = relax.transform.FuseTIR()(
        relax.transform.FuseOps()(
            relax.transform.AnnotateTIROpPattern()(relax.transform.LegalizeOps()(_module(_swiglu, params)))
        )
    )
    (func,) = [f for _, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    sch = Elementwise().apply(func, resolve_target("x86", 1), False)
    assert sch is not None and len(sch.get_child_blocks(sch.get_sblock("root"))) == 1
    run = _compile(_swiglu, params)
    rng = np.random.default_rng(n)
    gate, up = rng.standard_normal((2, 1, 1, n)).astype(np.float32)
    want = gate / (1 + np.exp(-gate.astype(np.float64))) * up
    np.testing.assert_allclose(run(tvm.runtime.tensor(gate), tvm.runtime.tensor(up)).numpy(), want, rtol=1e-6)


def test_elementwise_declines_a_reduction():
    x = relax.Var("x", relax.TensorType((4, 64), "float32"))
    (func,) = _legalized(lambda bb, x: bb.emit(relax.op.sum(x, axis=[1])), [x])
    assert Elementwise().apply(func, resolve_target("x86", 1), False) is None


UNSCHEDULED = {"layer_norm", "softmax", "split", "shape_func", "compute_symbolic_expr"}
"""Kernels still left to TVM's loops in the corpus GPT-2 (row reductions, a split, the VM's shape
work): the README's known limits."""


def test_corpus_gpt2_attention_and_gelu_are_scheduled(monkeypatch):
    """The exporter's ``Q·Kᵀ * scale + mask`` kernel takes the batched matmul rule (it was left
    unscheduled: 4 ms of a 128-token call) and ``gelu_new``'s cube calls no ``powf``."""
    lowered = []
    compile_lowered = lutc.builder._compile
    monkeypatch.setattr(
        lutc.builder, "_compile", lambda mod, target: compile_lowered(lowered.append(mod) or mod, target)
    )
    model = lutc.build(str(CORPUS_DIR / "gpt2_ts_prefill_q4b32s.onnx"), "x86", threads=1)
    kernels = [(gv.name_hint, f) for gv, f in lowered[0].functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    left = {re.sub(r"\d+$", "", name) for name, f in kernels if not (f.attrs and f.attrs.get("tirx.is_scheduled"))}
    assert left <= UNSCHEDULED
    assert any(re.match(r"fused_matmul\d*_multiply", name) for name, _ in kernels)  # the scores kernel, fused
    ir = generated_source(model._executable.mod, "llvm")
    assert "define" in ir and "powf" not in ir and "llvm.pow." not in ir
