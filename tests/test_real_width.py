"""The 1 B builder model at its real width, two layers deep, against ONNX Runtime.

``corpus/llama1b_2layers/model.onnx`` is onnxruntime-genai 0.18's builder output (``-p int4 -e
cpu``) for a Llama-3.2-1B-shaped checkpoint cut to 2 layers: hidden 2048, GQA 32/8, intermediate
8192, vocabulary 49152, tied embeddings (``GatherBlockQuantized`` reading the LM head's
weights), 4096 rotary positions. Only its graph is committed (19 KB); the test writes its 140 MB
``model.onnx.data`` at the offsets the graph names: random 4-bit codes, scales that give weights of
about ``1/sqrt(K)``, norm weights near 1 and the real rotary caches.

Exact mode (float tables) computes what ORT at ``accuracy_level=0`` computes up to float32
summation order: the relative error bound of ``test_corpus.py`` (5e-5 of the largest output).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from corpus.feeds import CORPUS_DIR

import lutc
from lutc.bench.model import ort_session, with_accuracy_level

GRAPH = CORPUS_DIR / "llama1b_2layers" / "model.onnx"
HEAD_SIZE, ROPE_THETA = 64, 500000.0
EXACT_RTOL = 5e-5

pytestmark = pytest.mark.slow


def _values(tensor: onnx.TensorProto, rng: np.random.Generator) -> np.ndarray:
    dims, name = tuple(tensor.dims), tensor.name
    if tensor.data_type == onnx.TensorProto.UINT8:
        return rng.integers(0, 256, dims, dtype=np.uint8)
    if name in ("cos_cache", "sin_cache"):
        angles = np.arange(dims[0])[:, None] / ROPE_THETA ** (np.arange(dims[1]) * 2 / HEAD_SIZE)
        return (np.cos(angles) if name == "cos_cache" else np.sin(angles)).astype(np.float32)
    if name.endswith("_scales"):
        return rng.uniform(0.003, 0.007, dims).astype(np.float32)  # w = s (q - 8): about 1/sqrt(2048)
    return rng.uniform(0.9, 1.1, dims).astype(np.float32)  # norm weights


def write_model(folder: Path, seed: int = 0) -> Path:
    """The graph and its data file in ``folder``; returns the model's path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    shutil.copyfile(GRAPH, path)
    shutil.copyfile(GRAPH.parent / "genai_config.json", folder / "genai_config.json")
    rng = np.random.default_rng(seed)
    with (folder / "model.onnx.data").open("wb") as data:
        for tensor in onnx.load(str(path), load_external_data=False).graph.initializer:
            entries = {e.key: e.value for e in tensor.external_data}
            data.seek(int(entries["offset"]))
            data.write(_values(tensor, rng).tobytes())
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_model(tmp_path_factory.mktemp("llama1b_2layers")).parent


@pytest.fixture(scope="module")
def reference(model_dir) -> ort.InferenceSession:
    return ort_session(with_accuracy_level(onnx.load(str(model_dir / "model.onnx")), 0), 2, basic=True)


@pytest.fixture(scope="module")
def decoder(model_dir):
    return lutc.build_decoder(model_dir / "model.onnx", mode="exact")


def _feeds(seq: int, past: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {"input_ids": rng.integers(0, 49152, (1, seq)), "attention_mask": np.ones((1, past + seq), np.int64)}
    for layer in range(2):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{layer}.{kind}"] = rng.standard_normal((1, 8, past, HEAD_SIZE)).astype(np.float32)
    return feeds


@pytest.mark.parametrize(("seq", "past"), [(8, 0), (1, 8)], ids=["prompt", "step"])
def test_matches_onnxruntime(decoder, reference, seq, past):
    model = decoder[0] if seq > 1 else decoder[1]
    feeds = _feeds(seq, past)
    expected = reference.run(None, feeds)
    got = model(**feeds)
    for name, ours, theirs in zip([o.name for o in reference.get_outputs()], got, expected, strict=True):
        if name == "logits":  # the prompt model computes the last position's only
            assert ours.shape[1] == 1
            theirs = theirs[:, -1:]
        scale = np.abs(theirs).max()
        assert np.abs(ours - theirs).max() <= EXACT_RTOL * scale, name


def test_weights_are_shared_and_the_position_limit_read(decoder):
    model, step = decoder
    assert model.weight_set is step.weight_set
    assert model.position_limit.positions == 4096  # cos_cache rows, genai_config's context_length
    assert model.weight_bytes > 130e6
