"""Logits of the last position only: the prompt of a generation needs no other row.

A decoder's ``logits`` ``[batch, seq, vocab]`` come from the LM head, a matmul over the hidden
states, and at most position-wise ops after it (a softcap's ``Div``/``Tanh``/``Mul``, a ``Cast``).
Slicing the LM head's activation to its last row along the sequence axis gives the same last row
of logits and skips ``seq - 1`` rows of the largest matmul of the model (vocab x hidden).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

LOGITS = "logits"
LM_HEAD_OPS = frozenset({"MatMul", "MatMulNBits"})
POSITION_WISE_OPS = frozenset({"Cast", "Identity", "Mul", "Div", "Add", "Sub", "Tanh", "Softcap"})
"""Ops between the LM head and ``logits`` that act row by row when their other inputs are constant."""
SLICE_PREFIX = "lutc_last_position"


def logits_output(names: list[str]) -> str:
    """The logits among a decoder's outputs: the one named ``logits``, else the first."""
    return LOGITS if LOGITS in names else names[0]


def slice_logits_to_last_position(model: onnx.ModelProto) -> str | None:
    """Slice, in place, the LM head's activation of ``model`` to the last position; the LM head's
    output name, or ``None`` (the graph unchanged) where the logits are not ``[batch, seq, vocab]``
    or do not come from a matmul through position-wise ops only."""
    graph = model.graph
    output = next(o for o in graph.output if o.name == logits_output([o.name for o in graph.output]))
    dims = output.type.tensor_type.shape.dim
    path = _lm_head_path(graph, output.name) if len(dims) == 3 else None
    if path is None:
        return None
    head = path[-1]
    prefix = f"{SLICE_PREFIX}/{head.output[0]}"
    new = _slice_nodes(head.input[0], prefix)
    head.input[0] = f"{prefix}/output"
    _insert_before(graph, head.output[0], new)
    dims[1].Clear()
    dims[1].dim_value = 1
    _forget_shapes(graph, {out for node in path for out in node.output})
    return head.output[0]


def _forget_shapes(graph: onnx.GraphProto, names: set[str]) -> None:
    """Drop the recorded shapes of ``names`` (their sequence dim is now 1; inference redoes them)."""
    kept = [value for value in graph.value_info if value.name not in names]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def _insert_before(graph: onnx.GraphProto, output: str, new: list[onnx.NodeProto]) -> None:
    """``new`` into the graph's node list just before the node making ``output`` (it reads theirs)."""
    nodes = list(graph.node)
    at = next(i for i, n in enumerate(nodes) if output in n.output)
    del graph.node[:]
    graph.node.extend([*nodes[:at], *new, *nodes[at:]])


def _constants(graph: onnx.GraphProto) -> set[str]:
    """Values known before run time: initializers and ``Constant`` outputs."""
    found = {init.name for init in graph.initializer}
    return found | {out for node in graph.node if node.op_type == "Constant" for out in node.output}


def _lm_head_path(graph: onnx.GraphProto, logits: str) -> list[onnx.NodeProto] | None:
    """The nodes from ``logits`` back to the matmul they come from (last), through position-wise
    ops with constant operands; ``None`` where there is no such path."""
    producers = {out: node for node in graph.node for out in node.output}
    constants = _constants(graph)
    path, node = [], producers.get(logits)
    while node is not None and node.op_type in POSITION_WISE_OPS:
        moving = [name for name in node.input if name and name not in constants]
        if len(moving) != 1:
            return None
        path, node = [*path, node], producers.get(moving[0])
    if node is None or node.op_type not in LM_HEAD_OPS or node.input[0] in constants:
        return None
    return [*path, node]


def _slice_nodes(activation: str, prefix: str) -> list[onnx.NodeProto]:
    """``activation[:, -1:, ...]`` as ``Slice`` with constant starts, ends and axes."""
    consts = {"starts": -1, "ends": 2**63 - 1, "axes": 1}
    nodes = [
        helper.make_node("Constant", [], [f"{prefix}/{key}"], name=f"{prefix}/{key}",
                         value=helper.make_tensor(f"{prefix}/{key}", TensorProto.INT64, [1], [value]))
        for key, value in consts.items()
    ]  # fmt: skip
    inputs = [activation, *(f"{prefix}/{key}" for key in consts)]
    return [*nodes, helper.make_node("Slice", inputs, [f"{prefix}/output"], name=f"{prefix}/Slice")]
