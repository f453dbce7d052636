"""The checks a compiled model's call runs on its inputs (:mod:`lutc.inputs`), without a build."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
import tvm_ffi

from lutc.errors import InputError
from lutc.frontend.model_info import TensorInfo
from lutc.inputs import SMALL_INDEX_INPUT, InputChecks
from lutc.runtime import tensors_of

INPUTS = (
    TensorInfo("input_ids", ("batch", "seq"), "int64", index_limit=100),
    TensorInfo("past", ("batch", 2, "past", 4), "float32", window_rows=3),
    TensorInfo("scale", (1,), "float32"),
)


def feeds(batch: int = 1, seq: int = 2, past: int = 5) -> dict[str, np.ndarray]:
    return {
        "input_ids": np.arange(batch * seq, dtype=np.int64).reshape(batch, seq),
        "past": np.zeros((batch, 2, past, 4), np.float32),
        "scale": np.ones(1, np.float32),
    }


def test_inputs_bind_in_model_order_by_name_and_by_position():
    checks, given = InputChecks.of(INPUTS), feeds()
    by_name = checks.bind((), given)
    mixed = checks.bind((given["input_ids"],), {"scale": given["scale"], "past": given["past"]})
    for bound in (by_name, mixed):
        assert [a is given[i.name] for i, a in zip(INPUTS, bound, strict=True)] == [True] * 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"past": np.zeros((1, 3, 5, 4), np.float32)}, r"input 'past' has shape \(1, 3, 5, 4\)"),
        ({"past": np.zeros((1, 2, 5), np.float32)}, r"input 'past' has shape \(1, 2, 5\)"),
        ({"past": np.zeros((1, 2, 2, 4), np.float32)}, "window-sized KV cache: it holds at least 3 rows"),
        ({"scale": np.ones(1, np.float64)}, "input 'scale' has dtype float64"),
        ({"scale": [1.0]}, "must be a numpy array, a TVM tensor or a DLPack array"),
        ({"input_ids": np.array([[1, 100]])}, r"values must lie in \[-100, 100\); got min 1, max 100"),
        ({"input_ids": np.array([[-101, 0]])}, "got min -101, max 0"),
        ({"past": np.zeros((2, 2, 5, 4), np.float32)}, "dimension 'batch' is 1 in 'input_ids' but 2 in 'past'"),
    ],
)
def test_a_call_refuses_inputs_that_do_not_fit(change: dict, message: str):
    with pytest.raises(InputError, match=message):
        InputChecks.of(INPUTS).bind((), {**feeds(), **change})


def test_index_range_is_checked_for_small_and_big_inputs_alike():
    checks = InputChecks.of(INPUTS)
    for seq in (SMALL_INDEX_INPUT, SMALL_INDEX_INPUT + 1):
        given = feeds(seq=seq)
        checks.bind((), given)
        given["input_ids"][0, seq - 1] = 100
        with pytest.raises(InputError, match="got min 0, max 100"):
            checks.bind((), given)


def test_binding_errors_name_the_inputs():
    checks, given = InputChecks.of(INPUTS), feeds()
    with pytest.raises(InputError, match="missing inputs"):
        checks.bind((), {"input_ids": given["input_ids"]})
    with pytest.raises(InputError, match="unknown input names"):
        checks.bind((), {**given, "mask": given["scale"]})
    with pytest.raises(InputError, match="given both by position and by name"):
        checks.bind((given["input_ids"],), given)
    with pytest.raises(InputError, match="got 4 positional"):
        checks.bind((*given.values(), given["scale"]), {})


def test_tvm_tensors_and_non_contiguous_arrays_are_checked_too():
    checks, given = InputChecks.of(INPUTS), feeds()
    ids = tvm.runtime.tensor(np.array([[3, 200]], np.int64))
    with pytest.raises(InputError, match="got min 3, max 200"):
        checks.bind((), {**given, "input_ids": ids})
    strided = np.zeros((1, 2, 5, 8), np.float32)[..., ::2]
    bound = checks.bind((), {**given, "past": strided})
    assert bound[1].flags.c_contiguous and np.array_equal(bound[1], strided)


def test_a_vm_tuple_becomes_its_tensors_in_order():
    tensors = [tvm.runtime.tensor(np.full(2, i, np.float32)) for i in range(3)]
    items = tensors_of(tvm_ffi.convert(tensors))
    assert [int(t.numpy()[0]) for t in items] == [0, 1, 2]
    assert tensors_of(tensors[1]) == (tensors[1],)
