"""ONNX Runtime (CPU): ``com.microsoft::MatMulNBits`` and fp32 ``MatMul``, one-node models.

Sessions run with ``intra_op_num_threads`` = the case's threads, ``inter_op_num_threads=1``,
sequential execution, and are called through an IOBinding with a preallocated output, so a
call allocates nothing. Cold mode builds one session per weight copy.

Each session has its own intra-op thread pool, whose workers spin for a while after a run. In
cold mode the idle pools of the other sessions then spin on the second core: 2-bit 4096x4096 on
2 threads took 2.5 ms per call cycling 17 sessions against 0.18 ms with spinning off. Cold
sessions therefore run with ``session.intra_op.allow_spinning=0`` (a real model has one
session and one pool, so no such contention); hot sessions keep ORT's default (spinning).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from ...quant.onnx_convert import to_matmul_nbits
from ..cases import Case, Inputs, Weights, cold_copies
from .base import FP32_TOL, INT8_ACT_TOL, Prepared

ORT_NBITS_BITS = (2, 4, 8)
"""Bit widths ORT's CPU MatMulNBits kernel runs."""

LUT_CONFIG = {"mlas.use_lut_gemm": "1"}
"""Session option selecting MLAS's T-MAC-style LUT GEMM for 2-bit MatMulNBits.

With it, outputs are the same for accuracy_level 0, 1, 2 and 4 and so is the speed (measured
with ORT 1.32): the LUT path ignores accuracy_level. We set 4 so that a session that silently
drops the option falls back to the int8 path, which ``_lut_in_effect`` detects."""

ACCURACY_LEVEL = 4
"""int8 activations: ORT's fastest MatMulNBits path on CPU."""

NO_SPINNING = {"session.intra_op.allow_spinning": "0"}


def _model(node: helper.NodeProto, inits: list, k: int, n: int, opsets: dict[str, int]) -> bytes:
    graph = helper.make_graph(
        [node],
        "bench",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, n])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    return model.SerializeToString()


def nbits_model(nbits: dict, accuracy_level: int) -> bytes:
    """A one-node ``MatMulNBits`` model from :func:`~lutc.quant.onnx_convert.to_matmul_nbits` output."""
    inits = [numpy_helper.from_array(nbits["b"], "B"), numpy_helper.from_array(nbits["scales"], "scales")]
    inputs = ["A", "B", "scales"]
    if nbits["zero_points"] is not None:
        inits.append(numpy_helper.from_array(nbits["zero_points"], "zero_points"))
        inputs.append("zero_points")
    attrs = {a: nbits[a] for a in ("K", "N", "bits", "block_size")}
    node = helper.make_node(
        "MatMulNBits", inputs, ["Y"], domain="com.microsoft", accuracy_level=accuracy_level, **attrs
    )
    return _model(node, inits, nbits["K"], nbits["N"], {"": 21, "com.microsoft": 1})


def fp32_model(w: np.ndarray) -> bytes:
    """A one-node ``MatMul`` model with float32 ``W[N, K]`` stored as the ``[K, N]`` initializer."""
    init = numpy_helper.from_array(np.ascontiguousarray(w.T), "B")
    node = helper.make_node("MatMul", ["A", "B"], ["Y"])
    return _model(node, [init], w.shape[1], w.shape[0], {"": 21})


def session(
    model: bytes, threads: int, config: dict[str, str] | None = None, basic: bool = False
) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    if basic:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, value)
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def _bound(sess: ort.InferenceSession, x: np.ndarray, out: np.ndarray) -> partial:
    binding = sess.io_binding()
    binding.bind_cpu_input("A", x)
    binding.bind_output("Y", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
    return partial(sess.run_with_iobinding, binding)


def prepare_sessions(
    model: bytes, weight_bytes: int, case: Case, x: np.ndarray, cold_bytes: int, config: dict[str, str] | None = None
) -> Prepared:
    """``Prepared`` over ``cold_copies`` sessions of ``model``, all writing one output array."""
    out = np.zeros((x.shape[0], case.n), np.float32)
    copies = cold_copies(weight_bytes, cold_bytes)
    config = (config or {}) | (NO_SPINNING if copies > 1 else {})
    calls = tuple(_bound(session(model, case.threads, config), x, out) for _ in range(copies))
    note = "spinning off" if copies > 1 else ""
    return Prepared(calls, out.copy, weight_bytes, note)


def _lut_in_effect(model: bytes, case: Case, x: np.ndarray, y_lut: np.ndarray) -> bool:
    """The LUT session's output differs from the same model without the option."""
    return not np.array_equal(session(model, case.threads).run(None, {"A": x})[0], y_lut)


@dataclass
class OrtMatMulNBits:
    """``MatMulNBits`` with ``accuracy_level=4``; ``lut=True`` adds ``mlas.use_lut_gemm=1`` (2-bit only).

    Weight bytes: ``B`` + ``scales`` (+ ``zero_points``).
    """

    lut: bool = False
    tolerance: float = INT8_ACT_TOL

    @property
    def name(self) -> str:
        return "ort-nbits-lut" if self.lut else "ort-nbits-acc4"

    def unsupported(self, case: Case) -> str | None:
        if case.bits not in ORT_NBITS_BITS:
            return f"ORT's CPU MatMulNBits runs bits {ORT_NBITS_BITS} only"
        if case.block < 16 or case.block & (case.block - 1):
            return f"MatMulNBits needs a power-of-two block_size >= 16, not {case.block}"
        if self.lut and case.bits != 2:
            return "mlas.use_lut_gemm is for 2-bit weights only"
        return None

    def prepare(self, case: Case, weights: Weights, inputs: Inputs, cold_bytes: int) -> Prepared:
        nbits = to_matmul_nbits(weights.qw)
        arrays = (nbits["b"], nbits["scales"], nbits["zero_points"])
        weight_bytes = sum(a.nbytes for a in arrays if a is not None)
        model = nbits_model(nbits, ACCURACY_LEVEL)
        prepared = prepare_sessions(model, weight_bytes, case, inputs.x, cold_bytes, LUT_CONFIG if self.lut else None)
        if not self.lut:
            return prepared
        prepared.calls[0]()
        active = _lut_in_effect(model, case, inputs.x, prepared.output())
        note = "LUT GEMM in effect" if active else "mlas.use_lut_gemm had NO effect (same output as without it)"
        return replace(prepared, note=", ".join(filter(None, [note, prepared.note])))


@dataclass
class OrtMatMulFp32:
    """fp32 ``MatMul`` with the dequantized weight as an initializer; bytes = ``4 * N * K``."""

    name: str = "ort-fp32"
    tolerance: float = FP32_TOL

    def unsupported(self, case: Case) -> str | None:
        return None

    def prepare(self, case: Case, weights: Weights, inputs: Inputs, cold_bytes: int) -> Prepared:
        w = weights.dequantized
        return prepare_sessions(fp32_model(w), w.nbytes, case, inputs.x, cold_bytes)
