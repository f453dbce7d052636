"""Exporter-made models (``tests/corpus``): every one builds, runs every quantized MatMul on a LUT
kernel, and matches ONNX Runtime on the same quantized model, dynamic and with ``shapes=``.

The reference is ORT with basic graph optimizations: at ``ORT_ENABLE_ALL`` ORT fuses
``DequantizeLinear -> MatMul`` into ``MatMulNBits`` with int8 activations, 1.3 % off its own
unfused result, which would hide lutc's exact-mode accuracy; for the same reason the reference
runs ``MatMulNBits`` at ``accuracy_level=0`` (float activations), where onnxruntime-genai's
builder wrote 4.

Tolerances, relative to the largest reference output:
- exact mode (float32 tables): lutc and ORT both compute dequantize-then-matmul in float32 and
  differ only in summation order; a K = 384 dot product in float32 carries at most about
  K * 2**-24 = 2.3e-5 relative error, and the corpus models measure 1e-6. Bound: 5e-5.
- fast mode (int8 tables): each table is rounded to int8 (relative step 1/254; README: 0.7-1.3 %
  per matmul at K = 4096, ``lutc.quant.lut.fast_error_bound``); two layers chain 7-8 matmuls,
  and the corpus measures 1.1-2.6 % on logits and cosine >= 0.9997. Bounds: 6 % and cosine 0.999.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from corpus.feeds import CORPUS_DIR, load_manifest, make_feeds

import lutc

ENTRIES = load_manifest()
IDS = [e["file"].removesuffix(".onnx") for e in ENTRIES]
EXACT_RTOL = 5e-5
FAST_RTOL = 6e-2
FAST_MIN_COSINE = 0.999

pytestmark = pytest.mark.slow


@functools.cache
def _reference_session(file: str) -> ort.InferenceSession:
    model = onnx.load(str(CORPUS_DIR / file))
    for node in model.graph.node:
        for attribute in node.attribute:
            if node.op_type == "MatMulNBits" and attribute.name == "accuracy_level":
                attribute.i = 0
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _reference(entry: dict, feeds: dict) -> list[np.ndarray]:
    return _reference_session(entry["file"]).run(None, feeds)


def _outputs(model: lutc.CompiledModel, feeds: dict) -> list[np.ndarray]:
    result = model(**feeds)
    return list(result) if isinstance(result, tuple) else [result]


def _check(entry: dict, model: lutc.CompiledModel, feeds: dict, mode: str) -> None:
    got, want = _outputs(model, feeds), _reference(entry, feeds)
    assert [g.shape for g in got] == [w.shape for w in want]
    for name, g, w in zip(entry["outputs"], got, want, strict=True):
        scale = float(np.abs(w).max())
        error = float(np.abs(g - w).max()) / scale
        if mode == "exact":
            assert error <= EXACT_RTOL, f"{name}: max error {error:.2e} of max |ref| {scale:.3g}"
        else:
            cosine = float((g * w).sum() / np.linalg.norm(g) / np.linalg.norm(w))
            assert error <= FAST_RTOL and cosine >= FAST_MIN_COSINE, f"{name}: error {error:.2e}, cosine {cosine:.5f}"


def _lut_count(model: lutc.CompiledModel) -> int:
    return sum(1 for how in model.decisions.values() if how.startswith("lut"))


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_dynamic_build_matches_ort_at_two_sizes(entry):
    model = lutc.build(CORPUS_DIR / entry["file"], target="x86")
    assert _lut_count(model) == entry["lut_matmuls"], model.decisions
    for alt in (False, True):
        _check(entry, model, make_feeds(entry, alt=alt), "fast")


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_static_build_matches_ort(entry):
    feeds = make_feeds(entry)
    shapes = {name: list(array.shape) for name, array in feeds.items()}
    model = lutc.build(CORPUS_DIR / entry["file"], target="x86", shapes=shapes)
    assert {i.name: list(i.shape) for i in model.inputs} == shapes
    assert _lut_count(model) == entry["lut_matmuls"]
    _check(entry, model, feeds, "fast")
    assert "graph preparation" in model.summary()


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_exact_mode_matches_ort_to_float_rounding(entry):
    model = lutc.build(CORPUS_DIR / entry["file"], target="x86", mode="exact")
    _check(entry, model, make_feeds(entry, alt=True), "exact")


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e["family"] == "bert"], ids=lambda e: e["file"])
def test_bert_padding_mask_matches_ort(entry):
    """Right padding reaches attention through the mask (ORT's 1-D ``mask_index`` in the fused graph)."""
    feeds = make_feeds(entry, alt=True)
    feeds["attention_mask"][:, -4:] = 0
    feeds["attention_mask"][0, -7:] = 0
    model = lutc.build(CORPUS_DIR / entry["file"], target="x86", mode="exact")
    _check(entry, model, feeds, "exact")


@pytest.mark.parametrize("name", ["llama_ts_prefill_q4b32s", "bert_ts_ortopt_q4b32s"])
def test_token_ids_outside_the_vocabulary_are_refused(name):
    """TVM's gather reads out of bounds (a crash) for such ids; ORT raises. lutc refuses by name."""
    entry = next(e for e in ENTRIES if e["file"] == f"{name}.onnx")
    model = lutc.build(CORPUS_DIR / entry["file"], target="x86")
    feeds = make_feeds(entry)
    feeds["input_ids"][0, 0] = 10_000
    with pytest.raises(lutc.errors.InputError, match=r"'input_ids' indexes an embedding of 256 rows"):
        model(**feeds)
