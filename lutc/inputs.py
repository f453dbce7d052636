"""The checks a compiled model's call runs on its inputs, worked out once per model.

A decode step of a small model runs its kernels in about 200 µs; checking seven inputs with
generic code (a generator per shape, two numpy reductions for a one-token index range) cost
50 µs of it on Zen 3. :class:`InputChecks` keeps, per input, the dtype, rank, fixed dims (one
``itemgetter``) and named dims, so a call's checks are a few attribute reads per input.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tvm

from .errors import InputError
from .frontend.model_info import TensorInfo

SMALL_INDEX_INPUT = 64
"""Index inputs of at most this many values have their range checked in Python (one ``tolist``),
bigger ones by numpy's ``min``/``max`` (1-3 µs each, whatever the size)."""


@dataclass(frozen=True)
class InputCheck:
    """What a call checks of one input: dtype, rank, fixed dims, index range, window rows."""

    info: TensorInfo
    dtype: np.dtype
    rank: int
    fixed_dims: Callable[[tuple], object] | None
    """``itemgetter`` of the fixed dims' positions (``None``: every dim is dynamic)."""
    fixed_sizes: object
    """What :attr:`fixed_dims` returns for a fitting shape."""
    named_dims: tuple[tuple[int, str], ...]
    """(position, name) of the dims named by the graph (``batch``, ``seq``): they agree across inputs."""

    @classmethod
    def of(cls, info: TensorInfo) -> InputCheck:
        fixed = [(i, d) for i, d in enumerate(info.shape) if isinstance(d, int)]
        getter = operator.itemgetter(*(i for i, _ in fixed)) if fixed else None
        sizes = tuple(d for _, d in fixed) if len(fixed) > 1 else (fixed[0][1] if fixed else None)
        named = tuple((i, d) for i, d in enumerate(info.shape) if isinstance(d, str))
        return cls(info, np.dtype(info.dtype), len(info.shape), getter, sizes, named)

    def shape_fits(self, shape: tuple[int, ...]) -> bool:
        """``shape`` has the input's rank and its fixed dims."""
        if len(shape) != self.rank:
            return False
        return self.fixed_dims is None or self.fixed_dims(shape) == self.fixed_sizes

    def checked(self, value):
        """A checked numpy array or TVM tensor for this input (DLPack arrays become TVM tensors)."""
        if type(value) is not np.ndarray:
            return self._checked_other(value)
        info = self.info
        if value.dtype != self.dtype:
            raise InputError(f"input {info.name!r} has dtype {value.dtype}; the model takes {info.describe()}")
        self._check_shape(value.shape)
        if info.index_limit is not None:
            self._check_index_range(value)
        return value if value.flags.c_contiguous else value.copy(order="C")  # ascontiguousarray makes 0-d 1-d

    def _checked_other(self, value):
        if not isinstance(value, np.ndarray | tvm.runtime.Tensor) and hasattr(value, "__dlpack__"):
            value = _from_dlpack(value)
        if isinstance(value, np.ndarray):  # a subclass, or a DLPack array TVM could not take
            return self.checked(np.asarray(value))
        if not isinstance(value, tvm.runtime.Tensor):
            raise InputError(f"input {self.info.name!r} must be a numpy array, a TVM tensor or a DLPack array "
                             f"({self.info.describe()}); got {type(value).__name__}")  # fmt: skip
        info = self.info
        if str(value.dtype) != info.dtype:
            raise InputError(f"input {info.name!r} has dtype {value.dtype}; the model takes {info.describe()}")
        self._check_shape(tuple(int(d) for d in value.shape))
        if info.index_limit is not None:
            self._check_index_range(np.from_dlpack(value))
        return value

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        info = self.info
        if not self.shape_fits(shape):
            raise InputError(f"input {info.name!r} has shape {shape}; the model takes {info.describe()}")
        if info.window_rows is not None and shape[2] < info.window_rows:
            raise InputError(f"input {info.name!r} is a window-sized KV cache: it holds at least {info.window_rows} "
                             f"rows (local_window_size; zeros before the prompt); got {shape[2]}")  # fmt: skip

    def _check_index_range(self, array: np.ndarray) -> None:
        """Values index an embedding of ``index_limit`` rows: they lie in ``[-limit, limit)``."""
        limit = self.info.index_limit
        if array.size == 0:
            return
        if array.size <= SMALL_INDEX_INPUT:
            values = array.ravel().tolist()
            low, high = min(values), max(values)
        else:
            low, high = array.min(), array.max()
        if low < -limit or high >= limit:
            raise InputError(f"input {self.info.name!r} indexes an embedding of {limit} rows: its values must lie "
                             f"in [{-limit}, {limit}); got min {low}, max {high}")  # fmt: skip


@dataclass(frozen=True)
class InputChecks:
    """A model's inputs as a call binds and checks them."""

    checks: tuple[InputCheck, ...]
    names: tuple[str, ...]
    name_set: frozenset[str]

    @classmethod
    def of(cls, inputs: tuple[TensorInfo, ...]) -> InputChecks:
        names = tuple(i.name for i in inputs)
        return cls(tuple(InputCheck.of(i) for i in inputs), names, frozenset(names))

    def bind(self, args: tuple, kwargs: dict) -> list:
        """The inputs in the model's order, each checked; named dims agree across inputs."""
        if not args and kwargs.keys() == self.name_set:  # every input by name: the common call
            values = [kwargs[name] for name in self.names]
        else:
            values = self._bound(args, kwargs)
        checked = [check.checked(value) for check, value in zip(self.checks, values, strict=True)]
        self._check_named_dims(checked)
        return checked

    def _bound(self, args: tuple, kwargs: dict) -> list:
        names = list(self.names)
        if len(args) > len(names):
            raise InputError(f"the model takes {len(names)} inputs ({', '.join(names)}); got {len(args)} positional")
        unknown = sorted(set(kwargs) - self.name_set)
        if unknown:
            raise InputError(f"unknown input names {unknown}; the model takes {names}")
        bound = dict(zip(names, args, strict=False))
        twice = sorted(set(bound) & set(kwargs))
        if twice:
            raise InputError(f"inputs {twice} given both by position and by name")
        bound.update(kwargs)
        missing = [n for n in names if n not in bound]
        if missing:
            raise InputError(f"missing inputs {missing}; the model takes {names}")
        return [bound[n] for n in names]

    def _check_named_dims(self, values: list) -> None:
        """Named dynamic dimensions must agree across inputs."""
        sizes: dict[str, int] = {}
        for check, value in zip(self.checks, values, strict=True):
            shape = value.shape
            for position, dim in check.named_dims:
                if sizes.setdefault(dim, shape[position]) != shape[position]:
                    self._raise_disagreement(dim, values)

    def _raise_disagreement(self, dim: str, values: list) -> None:
        first = None
        for check, value in zip(self.checks, values, strict=True):
            for position, named in check.named_dims:
                if named == dim:
                    first = first or (check.info.name, int(value.shape[position]))
                    if first[1] != int(value.shape[position]):
                        raise InputError(f"dimension {dim!r} is {first[1]} in {first[0]!r} but "
                                         f"{int(value.shape[position])} in {check.info.name!r}")  # fmt: skip


def _from_dlpack(value):
    """A TVM tensor sharing ``value``'s memory, or (TVM takes only 64-byte aligned data) a numpy view."""
    try:
        return tvm.runtime.from_dlpack(value)
    except RuntimeError:
        return np.from_dlpack(value)
