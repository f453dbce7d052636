"""TVM's default path: a Relax dequantize + matmul, with no lutc in it.

The Relax function takes ``x[M, K]`` float32, the codes and the scales:

- codes: uint8 ``[N, K / block, block * bits / 8]``, ``8 / bits`` codes per byte LSB-first along
  K (exactly ``MatMulNBits``' ``B``) for bits 1, 2, 4; one code per byte for 3 bits;
- scales: float32 ``[N, K / block]``; symmetric, zero point ``2**(bits - 1)``.

It unpacks with ``right_shift``/``bitwise_and``, dequantizes with ``astype``/``subtract``/
``multiply`` and multiplies with ``R.matmul``, written as ``(W @ x^T)^T``: dlight's CPU GEMV
rule schedules only inner-reduction GEMVs, and ``x @ W^T`` legalizes to an outer-reduction
matmul no CPU rule takes (about 5x slower at M=1). Compilation is TVM's CPU legalization
passes (``relax.backend.cpu_generic.legalize_passes``: LegalizeOps, FuseOps, FuseTIR, ...),
then ``dl.ApplyDefaultSchedule(dl.cpu.GEMV(), dl.cpu.Reduction())`` (``tvm.compile``'s llvm
pipeline applies no dlight rule itself), then ``tvm.compile`` and ``relax.VirtualMachine``.

FuseOps does not fuse the dequantize into the matmul, so every call materializes the float32
weight (``4 * N * K`` bytes) with an unscheduled, serial kernel: hot and cold differ little.
At M > 1 no dlight CPU rule matches the matmul either, and it runs unscheduled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np
import tvm
import tvm_ffi
from tvm import relax
from tvm.relax.backend import cpu_generic
from tvm.s_tir import dlight as dl
from tvm.target import Target, codegen

from ...quant.onnx_convert import pack_matmul_nbits_codes
from ...runtime import set_threads
from ..cases import Case, Inputs, Weights, cold_copies
from .base import FP32_TOL, LastBuild, Prepared


def codes_per_byte(bits: int) -> int:
    return 8 // bits if 8 % bits == 0 else 1


def weight_arrays(weights: Weights) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, scales)`` in the layout the Relax function takes (module docstring)."""
    qw = weights.qw
    n, k = qw.shape
    block, bits = int(qw.fmt.group_size), qw.fmt.bits
    if codes_per_byte(bits) == 1:
        return qw.codes.reshape(n, k // block, block), qw.scales
    return pack_matmul_nbits_codes(qw.codes, bits, block), qw.scales


def _unpack(codes: relax.Expr, bits: int, n: int, k: int, block: int) -> relax.Expr:
    """Relax expression: packed codes -> uint8 ``[N, K / block, block]``."""
    op = relax.op
    if codes_per_byte(bits) == 1:
        return codes
    shifts = relax.const(np.arange(0, 8, bits, dtype=np.uint8))
    unpacked = op.right_shift(op.expand_dims(codes, 3), shifts)
    unpacked = op.bitwise_and(unpacked, relax.const(np.uint8((1 << bits) - 1)))
    return op.reshape(unpacked, (n, k // block, block))


def dequant_matmul(case: Case) -> tvm.IRModule:
    """The Relax module ``main(x, codes, scales) -> y`` of one case."""
    op, (m, k, n, bits, block) = relax.op, (case.m, case.k, case.n, case.bits, case.block)
    per = codes_per_byte(bits)
    x = relax.Var("x", relax.TensorType((m, k), "float32"))
    codes = relax.Var("codes", relax.TensorType((n, k // block, block // per), "uint8"))
    scales = relax.Var("scales", relax.TensorType((n, k // block), "float32"))
    builder = relax.BlockBuilder()
    with builder.function("main", [x, codes, scales]):
        with builder.dataflow():
            q = op.astype(_unpack(codes, bits, n, k, block), "float32")
            w = op.multiply(op.subtract(q, relax.const(np.float32(2 ** (bits - 1)))), op.expand_dims(scales, 2))
            y = builder.emit_output(op.permute_dims(op.matmul(op.reshape(w, (n, k)), op.permute_dims(x))))
        builder.emit_func_output(y)
    return builder.get()


def host_target(num_cores: int) -> Target:
    """``llvm`` for this CPU (``mcpu`` as LLVM detects it)."""
    return Target({"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu(), "num-cores": num_cores})


def compile_default(mod: tvm.IRModule, target: Target) -> relax.VMExecutable:
    """TVM's CPU legalization, dlight's default CPU rules, then ``tvm.compile``."""
    passes = [*cpu_generic.legalize_passes(target), dl.ApplyDefaultSchedule(dl.cpu.GEMV(), dl.cpu.Reduction())]
    with target:
        mod = tvm.transform.Sequential(passes)(mod)
    return tvm.compile(mod, target)


@dataclass
class TvmDefault:
    """Relax dequantize + matmul through dlight and the VM; bytes = codes + scales.

    Compiled once per (M, K, N, bits, block) for ``num-cores = num_cores``: the target's
    ``num-cores`` does not change the generated code (checked), the thread count is set on
    TVM's pool at run time.
    """

    num_cores: int = 1
    name: str = "tvm-default"
    tolerance: float = FP32_TOL
    _built: LastBuild = field(default_factory=LastBuild, repr=False)

    def unsupported(self, case: Case) -> str | None:
        return None

    def _main(self, case: Case) -> tvm_ffi.Function:
        def build() -> tvm_ffi.Function:
            executable = compile_default(dequant_matmul(case), host_target(self.num_cores))
            return relax.VirtualMachine(executable, tvm.cpu())["main"]

        return self._built.get((case.m, case.k, case.n, case.bits, case.block), build)

    def prepare(self, case: Case, weights: Weights, inputs: Inputs, cold_bytes: int) -> Prepared:
        main = self._main(case)
        set_threads(case.threads)
        codes, scales = weight_arrays(weights)
        nbytes = codes.nbytes + scales.nbytes
        dev = tvm.cpu()
        x = tvm.runtime.tensor(inputs.x, dev)
        copies = [[tvm.runtime.tensor(a, dev) for a in (codes, scales)] for _ in range(cold_copies(nbytes, cold_bytes))]
        calls = tuple(partial(main, x, *copy) for copy in copies)
        return Prepared(calls, lambda: main(x, *copies[0]).numpy(), nbytes)
