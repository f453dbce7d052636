"""Greedy decoding with a KV cache over a compiled decoder: :func:`generate`.

Works on the graphs decoders are exported as: ``input_ids`` (``[batch, seq]`` int64), an optional
``attention_mask`` (``[batch, past + seq]``) and ``position_ids``, past key/value inputs and the
matching present outputs, and ``logits`` (or the first output). Each past input is paired with its
present output by the graph (:func:`cache_pairs`: by name where the names say layer and key/value,
as ``past_key_values.N.key``, ``past_key.N`` -> ``present.N.key`` do; else by position; shapes
checked), or by ``cache_names=``. The cache never leaves TVM memory: each step's present tensors
are the next step's past.

A model with a position limit (``model.position_limit``, :class:`~lutc.frontend.positions.PositionLimit`)
decodes up to it: every call feeds ``past + new <= limit`` positions, so a prompt of ``P`` tokens
leaves room for ``limit - P + 1`` generated tokens (the last one is never fed back).
"""

from __future__ import annotations

import re
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .builder import build_sharing
from .compiled import load
from .errors import InputError, ModelError
from .frontend.model_info import TensorInfo
from .frontend.positions import PositionLimit
from .weights import WeightSet

FED = ("input_ids", "attention_mask", "position_ids")
"""The inputs :func:`step_feeds` makes; a decoder's other inputs are its past cache tensors."""
KINDS = {"key": "key", "k": "key", "value": "value", "v": "value"}
"""Words that name a cache tensor's half (:func:`_name_hint`)."""


@dataclass(frozen=True)
class CacheLayout:
    """How a decoder's inputs and outputs carry the cache: (past input, present output) pairs,
    and per past input its ``(heads, head_size)``."""

    pairs: tuple[tuple[str, str], ...]
    head_shapes: Mapping[str, tuple[int, int]]
    logits: str
    takes_mask: bool
    takes_positions: bool
    window_rows: Mapping[str, int] = field(default_factory=dict)
    """Past inputs of window-sized caches -> their rows (the window; zeros before the prompt)."""
    dtypes: Mapping[str, str] = field(default_factory=dict)
    """Past inputs -> their element type (``float32`` where absent; ``float16`` in fp16 graphs)."""

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        """The past tensors for the prompt step: zero-length, or a window-sized cache's rows of zeros."""
        return {
            name: np.zeros((batch, heads, self.window_rows.get(name, 0), size), self.dtypes.get(name, "float32"))
            for name, (heads, size) in self.head_shapes.items()
        }


def _head_shape(past: TensorInfo, present: TensorInfo) -> tuple[int, int]:
    """``(heads, head_size)`` of a ``[batch, heads, past, head_size]`` cache (the head size may be
    named in the input and fixed only in the output: onnxruntime-genai's ``kv_cache_dim``)."""
    sizes = [d for d in (past.shape[3:4] + present.shape[3:4]) if isinstance(d, int)]
    if len(past.shape) != 4 or len(present.shape) != 4 or not isinstance(past.shape[1], int) or not sizes:
        raise ModelError(f"generate needs [batch, heads, past, head_size] caches with fixed heads and head size; "
                         f"{past.describe()}")  # fmt: skip
    return past.shape[1], sizes[0]


def cache_layout(
    inputs: tuple[TensorInfo, ...], outputs: tuple[TensorInfo, ...], cache_names: Mapping[str, str] | None = None
) -> CacheLayout:
    """The cache layout of a decoder with these inputs and outputs; a :class:`ModelError` says
    what is missing where the graph is not one :func:`generate` can drive. Each past input is
    paired with its present output by :func:`cache_pairs` (``cache_names``: past -> present)."""
    names = {i.name for i in inputs}
    if "input_ids" not in names:
        raise ModelError("generate needs a decoder with an 'input_ids' input")
    other = sorted(i.name for i in inputs if i.name not in FED and len(i.shape) != 4)
    if other:
        raise ModelError(f"generate does not know what to feed the inputs {other}")
    logits = next((o.name for o in outputs if o.name == "logits"), outputs[0].name)
    pairs = cache_pairs(inputs, tuple(o for o in outputs if o.name != logits), cache_names)
    head_shapes = {past.name: _head_shape(past, present) for past, present in pairs}
    windows = {past.name: past.window_rows for past, _ in pairs if past.window_rows}
    dtypes = {past.name: past.dtype for past, _ in pairs}
    return CacheLayout(tuple((p.name, q.name) for p, q in pairs), head_shapes, logits, "attention_mask" in names,
                       "position_ids" in names, windows, dtypes)  # fmt: skip


Pairs = list[tuple[TensorInfo, TensorInfo]]


def cache_pairs(inputs: tuple[TensorInfo, ...], outputs: tuple[TensorInfo, ...],
                cache_names: Mapping[str, str] | None = None) -> Pairs:  # fmt: skip
    """(past input, present output) for every input but :data:`FED`: ``cache_names`` where given; else
    by name where each side's names give every tensor's layer and key/value (:func:`_name_hint`);
    else the k-th past with the k-th present. A pair must match in dtype, heads and head size."""
    past = [i for i in inputs if i.name not in FED]
    if not past:
        raise ModelError(f"generate needs past/present KV pairs (past_key_values.N.key -> present.N.key); "
                         f"inputs {[i.name for i in inputs]}, outputs {[o.name for o in outputs]}")  # fmt: skip
    if cache_names is not None:
        return _given_pairs(past, outputs, cache_names)
    caches = [o for o in outputs if len(o.shape) == 4]
    for pairing in (_pairs_by_name, _pairs_by_position):
        pairs = pairing(past, caches)
        if pairs is not None and all(_same_cache(p, q) for p, q in pairs):
            return pairs
    raise ModelError("generate cannot pair the decoder's past inputs with its present outputs by position, "
                     "shape or name; pass cache_names={past: present}. " + _sides(past, outputs))  # fmt: skip


def _sides(past: list[TensorInfo], outputs: tuple[TensorInfo, ...]) -> str:
    return (f"Past inputs: {', '.join(p.describe() for p in past)}; "
            f"outputs: {', '.join(o.describe() for o in outputs)}")  # fmt: skip


def _given_pairs(past: list[TensorInfo], outputs: tuple[TensorInfo, ...], cache_names: Mapping[str, str]) -> Pairs:
    by_name = {o.name: o for o in outputs}
    unknown = sorted(set(cache_names) - {p.name for p in past}) + sorted(set(cache_names.values()) - set(by_name))
    missing = [p.name for p in past if p.name not in cache_names]
    if unknown or missing:
        what = f"names no past input or output: {unknown}" if unknown else f"leaves out the past inputs {missing}"
        raise ModelError(f"cache_names {what}. " + _sides(past, outputs))
    pairs = [(p, by_name[cache_names[p.name]]) for p in past]
    bad = [f"{p.describe()} -> {q.describe()}" for p, q in pairs if not _same_cache(p, q)]
    if bad:
        raise ModelError(f"cache_names pairs tensors of different dtype, heads or head size: {'; '.join(bad)}")
    return pairs


def _name_hint(name: str) -> tuple[int, str] | None:
    """``(layer, "key"|"value")`` from a cache tensor's name: its one number and its last key/value
    word (``past_key_values.3.key``, ``past_value.3``, ``present.3.key``); ``None`` if it has neither."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    numbers = [int(w) for w in words if w.isdigit()]
    kinds = [KINDS[w] for w in words if w in KINDS]
    return (numbers[0], kinds[-1]) if len(numbers) == 1 and kinds else None


def _pairs_by_name(past: list[TensorInfo], present: list[TensorInfo]) -> Pairs | None:
    hints = {_name_hint(p.name): p for p in present}
    wanted = [_name_hint(p.name) for p in past]
    if None in wanted or len(set(wanted)) != len(wanted) or not all(h in hints for h in wanted):
        return None
    return [(p, hints[h]) for p, h in zip(past, wanted, strict=True)]


def _pairs_by_position(past: list[TensorInfo], present: list[TensorInfo]) -> Pairs | None:
    return list(zip(past, present, strict=True)) if len(past) == len(present) else None


def _same_cache(past: TensorInfo, present: TensorInfo) -> bool:
    """Whether ``present`` can be ``past``'s next value: both ``[batch, heads, length, head_size]`` of
    one dtype, with no fixed heads or head size that differ."""
    if len(past.shape) != 4 or len(present.shape) != 4 or past.dtype != present.dtype:
        return False
    dims = zip(past.shape[1::2], present.shape[1::2], strict=True)  # heads, head size
    return all(a == b for a, b in dims if isinstance(a, int) and isinstance(b, int))


@dataclass(frozen=True)
class Generation:
    """What :func:`generate` made: ``tokens`` ``[batch, new]`` and the time of each step;
    ``stopped_at_limit``: the model's position limit where it cut the generation short."""

    tokens: np.ndarray
    prompt_length: int
    prefill_seconds: float
    step_seconds: tuple[float, ...]
    stopped_at_limit: PositionLimit | None = None

    @property
    def prefill_tokens_per_second(self) -> float:
        return self.tokens.shape[0] * self.prompt_length / self.prefill_seconds

    @property
    def decode_tokens_per_second(self) -> float:
        """Generated tokens per second over the decode steps, at the median step time."""
        return self.tokens.shape[0] / statistics.median(self.step_seconds) if self.step_seconds else float("nan")

    def describe(self) -> str:
        steps = self.step_seconds
        decode = (
            (
                f"decode {len(steps)} steps: {self.decode_tokens_per_second:.1f} tokens/s "
                f"(median {statistics.median(steps) * 1e3:.2f} ms, min {min(steps) * 1e3:.2f} ms)"
            )
            if steps
            else ""
        )
        prefill = f"prefill {self.prompt_length} tokens: {self.prefill_seconds * 1e3:.2f} ms "
        limit = self.stopped_at_limit
        stopped = f"; stopped at the model's position limit, {limit.describe()}" if limit is not None else ""
        return prefill + f"({self.prefill_tokens_per_second:.0f} tokens/s); " + decode + stopped  # fmt: skip


Step = Callable[[dict], tuple]
"""One model call: feeds by input name -> outputs in order (numpy or TVM tensors)."""
Choose = Callable[[np.ndarray], np.ndarray]
"""The next token of each row from the logits of its last position, ``[batch, vocab]`` -> ``[batch]``
(read-only: they may be the model's output tensor)."""


def argmax(logits: np.ndarray) -> np.ndarray:
    """Greedy choice: the token of the largest logit (the first where several tie)."""
    return logits.argmax(axis=-1)


Tokens = Iterator[tuple[np.ndarray, float]]
"""New tokens ``[batch]`` as they come, each with the seconds its model call and choice took."""


def decode_tokens(step: Step, layout: CacheLayout, outputs: list[str], input_ids: np.ndarray, new_tokens: int,
                  choose: Choose = argmax, decode: Step | None = None) -> Tokens:  # fmt: skip
    """Each new token (``[batch]``) with the seconds its call and choice took, as it comes: the prompt
    on ``step``, then each token fed back, with the step's present tensors as the next past, on
    ``decode`` (``step`` where ``None``)."""
    batch, prompt = input_ids.shape
    index = {name: i for i, name in enumerate(outputs)}
    past, ids = layout.empty_past(batch), input_ids
    for position in range(new_tokens):
        feeds = step_feeds(layout, ids, past, prompt + position)
        start = time.perf_counter()
        out = (step if position == 0 or decode is None else decode)(feeds)
        token = choose(np.from_dlpack(out[index[layout.logits]])[:, -1, :])
        seconds = time.perf_counter() - start
        past = {p: out[index[q]] for p, q in layout.pairs}
        ids = token.astype(np.int64).reshape(batch, 1)
        yield token, seconds


def collect(tokens: Tokens, prompt: int, eos_token_id: int | None = None,
            progress: Callable[[int], None] | None = None) -> Generation:  # fmt: skip
    """A :class:`Generation` of :func:`decode_tokens`'s tokens, stopped once every row produced
    ``eos_token_id``; ``progress(count)`` after each token."""
    made, times = [], []
    for token, seconds in tokens:
        made.append(token)
        times.append(seconds)
        if progress is not None:
            progress(len(made))
        if eos_token_id is not None and bool((token == eos_token_id).all()):
            break
    return Generation(np.stack(made, axis=1), prompt, times[0], tuple(times[1:]))


def greedy_loop(
    step: Step,
    layout: CacheLayout,
    outputs: list[str],
    input_ids: np.ndarray,
    new_tokens: int,
    eos_token_id: int | None = None,
    progress: Callable[[int], None] | None = None,
    decode: Step | None = None,
) -> Generation:
    """The decoding loop shared by lutc and the baselines (ORT): argmax of the last position's
    logits, fed back with the step's present tensors as the next past. ``step`` runs the prompt
    and, unless ``decode`` is given, every later token."""
    tokens = decode_tokens(step, layout, outputs, input_ids, new_tokens, argmax, decode)
    return collect(tokens, input_ids.shape[1], eos_token_id, progress)


def generate(model, input_ids: np.ndarray, max_new_tokens: int, *, step_model=None, eos_token_id: int | None = None,
             progress: Callable[[int], None] | None = None, cache_names: Mapping[str, str] | None = None,
             choose: Choose = argmax) -> Generation:  # fmt: skip
    """Greedy decoding of ``max_new_tokens`` after ``input_ids`` (``[batch, prompt]`` int64) with a
    compiled decoder (:func:`lutc.build`); stops early once every row produced ``eos_token_id``.
    ``progress(step)`` is called after each token; ``choose`` picks each token from the logits
    (:func:`argmax`; :class:`lutc.sampling.Sampler` samples).

    ``step_model``: the same decoder built for one token per call (:func:`step_shapes`), which
    then runs every token after the prompt: with batch and sequence static, the Relax VM does
    far less shape work per call (a sixth of the step on a 30-layer model, README).
    ``cache_names``: past input -> present output, where :func:`cache_pairs` cannot tell.

    A ``model.position_limit`` (a :class:`~lutc.frontend.positions.PositionLimit`) bounds the
    tokens: a prompt past it is an ``InputError`` before anything runs; where ``max_new_tokens``
    do not fit, fewer are generated, with a warning, and ``Generation.stopped_at_limit`` says so."""
    tokens, room = decode_stream(model, input_ids, max_new_tokens, step_model=step_model, cache_names=cache_names,
                                 choose=choose)  # fmt: skip
    made = collect(tokens, np.shape(input_ids)[1], eos_token_id, progress)
    cut = room < max_new_tokens and made.tokens.shape[1] == room  # not where every row ended first
    return replace(made, stopped_at_limit=getattr(model, "position_limit", None)) if cut else made


def decode_stream(model, input_ids: np.ndarray, max_new_tokens: int, *, step_model=None,
                  cache_names: Mapping[str, str] | None = None,
                  choose: Choose = argmax) -> tuple[Tokens, int]:  # fmt: skip
    """:func:`generate`'s tokens as they come (:func:`decode_tokens`), checked before the first
    call, and how many it makes at most (fewer than ``max_new_tokens`` at a position limit)."""
    input_ids = np.asarray(input_ids)
    if input_ids.ndim != 2 or input_ids.dtype != np.int64 or 0 in input_ids.shape:
        got = f"{input_ids.dtype}{list(input_ids.shape)}"
        raise InputError(f"input_ids must be a non-empty [batch, prompt] int64 array; got {got}")
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be at least 1; got {max_new_tokens}")
    room = min(_room(getattr(model, "position_limit", None), input_ids.shape[1], max_new_tokens), max_new_tokens)
    layout = cache_layout(model.inputs, model.outputs, cache_names)
    if step_model is not None and cache_layout(step_model.inputs, step_model.outputs, cache_names) != layout:
        raise ModelError("step_model must be the same decoder as model (its inputs and outputs differ)")
    prompt_feeds = step_feeds(layout, input_ids, layout.empty_past(input_ids.shape[0]), input_ids.shape[1])
    model.check_inputs(**prompt_feeds)  # checked once: the loop makes the rest alike
    prefill, decode = (_ordered_call(m) for m in (model, step_model or model))
    outputs = [o.name for o in model.outputs]
    return decode_tokens(prefill, layout, outputs, input_ids, room, choose, decode), room


def _room(limit: PositionLimit | None, prompt: int, wanted: int) -> int:
    """How many tokens a prompt of ``prompt`` tokens leaves room for under ``limit`` (all
    ``wanted`` without one); an ``InputError`` if the prompt alone is past it, a warning where
    fewer than ``wanted`` fit."""
    if limit is None:
        return wanted
    if prompt > limit.positions:
        raise InputError(f"the prompt has {prompt} tokens, more than the model's position limit of "
                         f"{limit.describe()}; shorten it to at most {limit.positions} tokens")  # fmt: skip
    room = limit.positions - prompt + 1  # the last token generated is never fed back: it needs no position
    if room < wanted:
        warnings.warn(f"generating at most {room} of the {wanted} tokens asked for: after a prompt of {prompt} "
                      f"tokens, the model's position limit of {limit.describe()} leaves room for {room}",
                      stacklevel=4)  # fmt: skip
    return room


def step_feeds(layout: CacheLayout, ids: np.ndarray, past: dict, seen: int) -> dict:
    """One call's inputs: ``ids`` ``[batch, length]``, the ``past`` tensors, and the mask and
    positions for ``seen`` cached positions after the call."""
    batch, length = ids.shape
    feeds = {"input_ids": ids, **past}
    if layout.takes_mask:
        feeds["attention_mask"] = np.ones((batch, seen), np.int64)
    if layout.takes_positions:
        feeds["position_ids"] = np.tile(np.arange(seen - length, seen, dtype=np.int64), (batch, 1))
    return feeds


def _ordered_call(model) -> Step:
    """A step calling ``model`` with the loop's feeds in its input order, unchecked (the loop made them)."""
    names = [i.name for i in model.inputs]
    return lambda feeds: model.run_ordered([feeds[name] for name in names])


def step_shapes(batch: int = 1) -> dict[str, list[int]]:
    """``shapes=`` for a decode-step build (:func:`lutc.build`): ``input_ids`` fixed to
    ``[batch, 1]``, which fixes those dims wherever the graph names them alike (the mask's and
    the cache's batch); the cache length stays dynamic."""
    return {"input_ids": [batch, 1]}


DECODER_FILES = ("prompt.so", "step.so", "decoder.weights")
"""What :func:`export_decoder` writes into its folder (plus each library's ``.lutc.json``)."""


def export_decoder(model, step_model, folder) -> Path:
    """Write a decoder built by :func:`build_decoder` into ``folder``: both libraries and one weight
    file they share (:data:`DECODER_FILES`); :func:`load_decoder` reads it back. Returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    prompt, step, weights = DECODER_FILES
    model.export_library(folder / prompt, weights=weights)
    step_model.export_library(folder / step, weights=weights)
    return folder


def load_decoder(folder) -> tuple:
    """``(model, step_model)`` from a folder :func:`export_decoder` wrote, their weights read once."""
    folder = Path(folder)
    model = load(folder / DECODER_FILES[0])
    return model, load(folder / DECODER_FILES[1], weights=model.weight_set)


def build_decoder(path, target="x86", *, batch: int = 1, **options) -> tuple:
    """``(model, step_model)`` for :func:`generate`: the decoder as is (the prompt) and built for one
    token per call (every later token). The two share their weights (one copy in memory; exported
    with the same ``weights=`` file name, one file on disk)."""
    weights = WeightSet()
    prompt = build_sharing(path, target, weights, last_logits=True, **options)
    return prompt, build_sharing(path, target, weights, shapes=step_shapes(batch), **options)
