"""onnxruntime-genai builder graphs of twelve model families (``corpus/families``, made by
``corpus/make_builder_corpus.py --families``): each builds dynamic in exact and fast mode, matches
ONNX Runtime on a 24-token prompt and on a decode step after 20 cached positions (both longer than
the 16-position sliding window of the windowed families), and in exact mode generates the same 32
greedy tokens as ORT's loop (:func:`lutc.decode.greedy_loop` on an ORT session) after the prompt.

The reference and the bounds are ``test_corpus.py``'s: ORT with basic graph optimizations and
``MatMulNBits`` at ``accuracy_level=0``; exact mode within 5e-5 of the largest reference output,
fast mode within 6 % and cosine 0.999.

A graph lutc refuses is a strict ``xfail`` with the refusal's type, and the refusal's message is
checked (another message is a failure): the test turns into an XPASS failure once lutc supports it,
and ``corpus/README.md``'s family table says what each one is refused for.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from corpus.feeds import CORPUS_DIR, load_manifest, make_feeds

import lutc
from lutc.bench.model import ort_session, with_accuracy_level
from lutc.decode import cache_layout, greedy_loop
from lutc.errors import ModelError

FAMILY_DIR = CORPUS_DIR / "families"
BUILDS = load_manifest(FAMILY_DIR / "manifest.json")
ENTRIES = [e for e in BUILDS if "file" in e]  # the others did not build (their build_error) or run in ORT
EXACT_RTOL = 5e-5
FLOAT16_EXACT_RTOL = 2e-2
"""Exact mode on a float16 graph: ORT rounds every op's result to float16 (2**-11 relative) and lutc
computes its contrib ops in float32, so two layers of about ten roundings each separate them by
a few float16 ulps of the logits' magnitude (measured 8.9e-3 of max |logits| = 4.7)."""
FAST_RTOL = 6e-2
FAST_MIN_COSINE = 0.999
NEW_TOKENS = 32

pytestmark = pytest.mark.slow

QMOE = (
    "unsupported operators: com.microsoft::QMoE (/model/layers.0/moe/QMoE: ONNX Runtime contrib op without a "
    "converter), com.microsoft::QMoE (/model/layers.1/moe/QMoE: ONNX Runtime contrib op without a converter)"
)
REFUSED: dict[str, tuple[type[Exception], str]] = {
    "gptoss": (ModelError, QMOE),  # (also sliding_window_cache=1 and head_sink on layer 0, which lutc takes)
    "gptoss_full_cache": (ModelError, QMOE),
}  # fmt: skip
"""stem -> (the error lutc raises at build, its message): what lutc does not support yet."""


@functools.cache
def _build(stem: str, mode: str) -> lutc.CompiledModel:
    """The family graph built dynamic in ``mode`` (once per session); a refusal other than the one
    :data:`REFUSED` records is an ``AssertionError``, so that a changed message fails the xfail."""
    try:
        return lutc.build(FAMILY_DIR / stem / "model.onnx", target="x86", mode=mode)
    except Exception as error:
        expected = REFUSED.get(stem)
        if expected is None or not isinstance(error, expected[0]) or str(error) != expected[1]:
            raise AssertionError(f"{stem} {mode}: unexpected {type(error).__name__}: {error}") from error
        raise


@functools.cache
def _reference(stem: str) -> ort.InferenceSession:
    model = onnx.load(str(FAMILY_DIR / stem / "model.onnx"))
    return ort_session(with_accuracy_level(model, 0), 2, basic=True)


def _params(entries: list[dict]) -> list:
    params = []
    for entry in entries:
        marks = []
        if entry["stem"] in REFUSED:
            kind, message = REFUSED[entry["stem"]]
            marks.append(pytest.mark.xfail(strict=True, raises=kind, reason=message))
        params.append(pytest.param(entry, marks=marks, id=entry["stem"]))
    return params


def _check(got: list[np.ndarray], want: list[np.ndarray], names: list[str], mode: str) -> None:
    assert [g.shape for g in got] == [w.shape for w in want]
    for name, g, w in zip(names, got, want, strict=True):
        bound = FLOAT16_EXACT_RTOL if w.dtype == np.float16 else EXACT_RTOL
        g, w = g.astype(np.float64), w.astype(np.float64)
        scale = float(np.abs(w).max())
        error = float(np.abs(g - w).max()) / scale
        if mode == "exact":
            assert error <= bound, f"{name}: max error {error:.2e} of max |ref| {scale:.3g}"
        else:
            cosine = float((g * w).sum() / np.linalg.norm(g) / np.linalg.norm(w))
            assert error <= FAST_RTOL and cosine >= FAST_MIN_COSINE, f"{name}: error {error:.2e}, cosine {cosine:.5f}"


def _lut_matmuls(stem: str, mode: str) -> int:
    """The graph's MatMulNBits lutc runs as LUT kernels: every one in fast mode (8-bit ones with eight
    planes), those of at most 4 bits in exact mode (wider ones are float matmuls there)."""
    graph = onnx.load(str(FAMILY_DIR / stem / "model.onnx")).graph
    bits = [next((a.i for a in n.attribute if a.name == "bits"), 4) for n in graph.node if n.op_type == "MatMulNBits"]
    return sum(mode == "fast" or b <= 4 for b in bits)


@pytest.mark.parametrize("mode", ["exact", "fast"])
@pytest.mark.parametrize("entry", _params(ENTRIES))
def test_prompt_and_step_match_onnxruntime(entry, mode):
    model = _build(entry["stem"], mode)
    assert sum(how.startswith("lut") for how in model.decisions.values()) == _lut_matmuls(entry["stem"], mode)
    session = _reference(entry["stem"])
    names = [o.name for o in session.get_outputs()]
    for alt in (False, True):  # a 24-token prompt; one token after 20 cached
        feeds = make_feeds(entry, alt=alt)
        got = model(**feeds)
        _check([np.asarray(g) for g in got], session.run(None, feeds), names, mode)


@pytest.mark.parametrize("entry", _params(ENTRIES))
def test_greedy_tokens_match_onnxruntime(entry):
    model = _build(entry["stem"], "exact")
    session = _reference(entry["stem"])
    ids = make_feeds(entry)["input_ids"]
    ours = lutc.generate(model, ids, NEW_TOKENS)
    layout = cache_layout(model.inputs, model.outputs)
    dtypes = {i.name: np.float16 if i.type == "tensor(float16)" else None for i in session.get_inputs()}
    cast = lambda feeds: {k: v.astype(dtypes[k]) if dtypes[k] else v for k, v in feeds.items()}  # noqa: E731
    theirs = greedy_loop(lambda feeds: session.run(None, cast(feeds)), layout,
                         [o.name for o in session.get_outputs()], ids, NEW_TOKENS)  # fmt: skip
    assert ours.tokens.tolist() == theirs.tokens.tolist()
    assert len(set(theirs.tokens[0].tolist())) > 3, "a degenerate sequence: the comparison would say little"


def test_every_family_is_in_the_corpus_or_says_why_not():
    """Each family the issue names has a graph here, or the builder's error (or ORT's) recorded."""
    families = {e["family"] for e in BUILDS if e["stem"] == e["family"]}
    assert families == {"llama32", "qwen25", "qwen3", "phi3mini", "phi4mini", "mistral", "gemma2", "gemma3",
                        "granite", "olmo2", "smollm3", "gptoss"}  # fmt: skip
    for entry in BUILDS:
        assert ("file" in entry) != bool(entry.get("build_error") or entry.get("ort_error")), entry["stem"]
        assert re.fullmatch(r"[a-z0-9_]+", entry["stem"])
