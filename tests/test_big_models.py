"""Models past protobuf's 2 GB limit build in bounded memory; weights are read, not copied.

The model is written without torch: 16 ``MatMulNBits`` of 16384 x 16384 (4-bit, block 32) whose
codes go straight into a sparse external data file (zero codes, but for 128 random rows a node),
2.68 GB of data in all. It is built in a subprocess whose peak RSS must stay within the weights'
bytes plus 1.5 GB (the bound of ``lutc.build``; graph preparation and import never see the bytes).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

NODES, SIZE, BLOCK = 16, 16384, 32
RANDOM_ROWS = 128
SCALE = 1.0 / 4096
MARGIN = 1.5e9
"""Bytes a build may hold beyond its weights (the issue's bound)."""


def _external(name: str, dims: list[int], data_type: int, location: str, offset: int, length: int):
    init = TensorProto(name=name, data_type=data_type, dims=dims, data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        init.external_data.add(key=key, value=value)
    return init


def write_sparse_model(folder: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """``model.onnx`` + ``model.onnx.data`` (see the module docstring); returns each node's random
    rows' codes ``[RANDOM_ROWS, SIZE]`` by output name, for the reference."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    blob, blocks = BLOCK // 2, SIZE // BLOCK
    b_bytes, s_bytes = SIZE * blocks * blob, SIZE * blocks * 4
    nodes, inits, outputs, codes = [], [], [], {}
    with (folder / "model.onnx.data").open("wb") as data:
        for i in range(NODES):
            offset = i * (b_bytes + s_bytes)
            packed = rng.integers(0, 256, (RANDOM_ROWS, blocks * blob), dtype=np.uint8)
            data.seek(offset)
            data.write(packed.tobytes())  # the other rows stay a hole: zero codes
            data.seek(offset + b_bytes)
            data.write(np.full(SIZE * blocks, SCALE, np.float32).tobytes())
            codes[f"y{i}"] = np.stack([packed & 15, packed >> 4], axis=-1).reshape(RANDOM_ROWS, SIZE)
            inits.append(_external(f"w{i}.B", [SIZE, blocks, blob], TensorProto.UINT8, "model.onnx.data", offset,
                                   b_bytes))  # fmt: skip
            inits.append(_external(f"w{i}.scales", [SIZE, blocks], TensorProto.FLOAT, "model.onnx.data",
                                   offset + b_bytes, s_bytes))  # fmt: skip
            attrs = {"domain": "com.microsoft", "K": SIZE, "N": SIZE, "bits": 4, "block_size": BLOCK}
            inputs = ["x", f"w{i}.B", f"w{i}.scales"]
            nodes.append(helper.make_node("MatMulNBits", inputs, [f"y{i}"], f"mm{i}", **attrs))
            outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, SIZE]))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SIZE])
    graph = helper.make_graph(nodes, "sparse_wide", [x], outputs, inits)
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    onnx.save(model, str(folder / "model.onnx"))
    return codes


BUILD = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    import lutc
    model = lutc.build(sys.argv[1], "x86", mode="exact")
    x = np.random.default_rng(1).standard_normal((1, {size})).astype(np.float32)
    outputs = model(x=x)
    np.save(sys.argv[2], np.stack([o[0] for o in outputs]))
    print(json.dumps({{"peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "weights": model.weight_bytes}}))
    """
).format(size=SIZE)


@pytest.mark.slow
def test_a_model_past_two_gigabytes_builds_in_bounded_memory(tmp_path):
    codes = write_sparse_model(tmp_path / "model")
    data_bytes = (tmp_path / "model" / "model.onnx.data").stat().st_size
    assert data_bytes > 2**31
    command = [sys.executable, "-c", BUILD, str(tmp_path / "model" / "model.onnx"), str(tmp_path / "y.npy")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["weights"] >= data_bytes
    assert report["peak"] <= report["weights"] + MARGIN, f"peak RSS {report['peak'] / 1e9:.2f} GB"
    x = np.random.default_rng(1).standard_normal((1, SIZE)).astype(np.float32)
    got = np.load(tmp_path / "y.npy")
    for i, name in enumerate(sorted(codes, key=lambda n: int(n[1:]))):
        expected = np.full(SIZE, -8 * SCALE * x.sum(dtype=np.float64))  # zero codes: w = s * (0 - 8)
        expected[:RANDOM_ROWS] = SCALE * ((codes[name].astype(np.float64) - 8) @ x[0].astype(np.float64))
        # exact mode: float32 tables, sums over K = 16384 of terms ~ SCALE * 8 * |x|
        np.testing.assert_allclose(got[i], expected, rtol=1e-4, atol=1e-4)
