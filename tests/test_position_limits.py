"""Positions past a model's rotary caches are an error, never garbage.

A rotary model reads one ``cos_cache``/``sin_cache`` row per position; TVM's ``take`` would read
past the last row where ONNX Runtime refuses. The compiled model checks every position before the
rows are read (``InputError`` naming the node and the limit); :func:`lutc.frontend.positions.position_limit`
reads the limit from the model and its configuration files, and :func:`lutc.generate` stops there.

The builder model's caches hold 128 rows (``manifest.json``: ``max_positions``). Exact mode
(float tables) matches ORT at ``accuracy_level=0`` to float32 summation order: relative error
bound 5e-5 of the largest output, as in ``test_corpus.py`` (the corpus measures ~1e-6).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from corpus.feeds import CORPUS_DIR
from onnx import TensorProto, helper, numpy_helper
from test_contrib_ops import MS, _caches, _gqa_feeds, _gqa_node, _model
from test_corpus import _reference_session

import lutc
from lutc.bench.generate import ort_generate
from lutc.decode import cache_layout
from lutc.errors import InputError
from lutc.frontend.positions import PositionLimit, position_limit

BUILDER = CORPUS_DIR / "llama_genai_int4.onnx"
ROWS = 128
GQA_NODE = "/model/layers.0/attn/GroupQueryAttention"
EXACT_RTOL = 5e-5
LIMIT_MESSAGE = (
    rf"GroupQueryAttention node '{GQA_NODE}' .*cos_cache holds {ROWS} positions \(the model's position limit\)"
)


def _feeds(past: int, seq: int, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {
        "input_ids": rng.integers(0, 512, (batch, seq)).astype(np.int64),
        "attention_mask": np.ones((batch, past + seq), np.int64),
    }
    for layer in range(2):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{layer}.{kind}"] = rng.standard_normal((batch, 2, past, 64)).astype(np.float32)
    return feeds


@pytest.fixture(scope="module")
def builder_model() -> lutc.CompiledModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the importer renames the past inputs
        return lutc.build(BUILDER, target="x86", mode="exact")


@pytest.fixture(scope="module")
def reference() -> ort.InferenceSession:
    return _reference_session(BUILDER.name)


class _Limited:
    """A compiled model with another ``position_limit`` (``None``: as if the model stated none)."""

    def __init__(self, model: lutc.CompiledModel, limit: PositionLimit | None):
        self._model, self.position_limit = model, limit

    def __getattr__(self, name):
        return getattr(self._model, name)


# --- the compiled model's run-time check -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("past", "seq"), [(127, 2), (128, 1), (0, 129), (100, 40)])
def test_a_call_past_the_caches_is_refused_naming_the_limit(builder_model, reference, past, seq):
    feeds = _feeds(past, seq)
    with pytest.raises(InputError, match=LIMIT_MESSAGE) as refused:
        builder_model(**feeds)
    assert f"past + new tokens must be at most {ROWS}" in str(refused.value)
    with pytest.raises(Exception, match=r"cos_cache|sequence_length"):  # ORT refuses the same call
        reference.run(None, feeds)


@pytest.mark.slow
@pytest.mark.parametrize(("past", "seq", "batch"), [(127, 1, 2), (120, 8, 1), (0, 128, 1)])
def test_a_call_at_exactly_the_limit_matches_ort(builder_model, reference, past, seq, batch):
    feeds = _feeds(past, seq, batch)
    got = builder_model(**feeds)
    want = reference.run(None, feeds)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        assert float(np.abs(g - w).max()) <= EXACT_RTOL * float(np.abs(w).max())


@pytest.mark.slow
def test_the_check_survives_export_and_load(builder_model, tmp_path):
    path = builder_model.export_library(tmp_path / "builder.so")
    loaded = lutc.load(path)
    loaded(**_feeds(127, 1))
    with pytest.raises(InputError, match=LIMIT_MESSAGE):
        loaded(**_feeds(127, 2))


# --- generate ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_generate_refuses_a_prompt_past_the_limit_before_running(builder_model):
    limit = position_limit(onnx.load(str(BUILDER), load_external_data=False), None)
    prompt = np.arange(ROWS + 1, dtype=np.int64)[None] % 512
    calls = []
    model = _Limited(builder_model, limit)
    model.run_ordered = calls.append  # records any call of the model (there must be none)
    with pytest.raises(InputError, match=rf"prompt has {ROWS + 1} tokens.*position limit of {ROWS} positions"):
        lutc.generate(model, prompt, 4)
    assert not calls


@pytest.mark.slow
def test_generate_without_a_known_limit_is_stopped_by_the_compiled_check(builder_model):
    """The issue's case: a 200-token prompt on a model of 128 positions gave token 0 forever."""
    prompt = np.arange(200, dtype=np.int64)[None] % 512
    with pytest.raises(InputError, match=LIMIT_MESSAGE):
        lutc.generate(_Limited(builder_model, None), prompt, 4)


@pytest.mark.slow
def test_a_built_model_knows_its_limit_and_generate_refuses_before_running(builder_model):
    assert builder_model.position_limit.positions == ROWS
    assert "cos_cache rows of GroupQueryAttention" in builder_model.position_limit.source
    prompt = np.arange(200, dtype=np.int64)[None] % 512
    with pytest.raises(InputError, match=rf"prompt has 200 tokens.*position limit of {ROWS} positions"):
        lutc.generate(builder_model, prompt, 4)


@pytest.mark.slow
def test_generate_stops_at_the_limit_with_a_warning_and_matches_ort(builder_model):
    limit = position_limit(onnx.load(str(BUILDER), load_external_data=False), None)
    prompt = (np.arange(120, dtype=np.int64)[None] * 7) % 512
    with pytest.warns(UserWarning, match=rf"at most 9 of the 20 tokens.*position limit of {ROWS} positions"):
        made = lutc.generate(_Limited(builder_model, limit), prompt, 20)
    assert made.tokens.shape == (1, 9)  # the 9th is never fed back: the last call reads 128 positions
    assert made.stopped_at_limit == limit
    assert f"stopped at the model's position limit, {ROWS} positions (cos_cache rows" in made.describe()
    layout = cache_layout(builder_model.inputs, builder_model.outputs)
    theirs = ort_generate(onnx.load(str(BUILDER)), layout, prompt, 9, 1, 0)
    np.testing.assert_array_equal(made.tokens, theirs.tokens)


@pytest.mark.slow
def test_generate_within_the_limit_is_not_marked(builder_model):
    limit = PositionLimit(ROWS, "a test")
    prompt = np.arange(8, dtype=np.int64)[None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        made = lutc.generate(_Limited(builder_model, limit), prompt, 4)
    assert made.tokens.shape == (1, 4) and made.stopped_at_limit is None
    assert "position limit" not in made.describe()


# --- RotaryEmbedding and GQA with position_ids: the positions' values are checked ----------------


def _rope_model(cache_rows: int) -> onnx.ModelProto:
    x = np.zeros((1, 2, 64), np.float32)
    node = helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], name="rope", domain=MS, num_heads=4)
    return _model(node, {"x": x, "pos": np.zeros((1, 2), np.int64)}, _caches(cache_rows, 8), ["y"])


@pytest.mark.parametrize(
    ("positions", "rule"),
    [([[15, 16]], r"position_ids must lie in \[0, 16\)"), ([[-1, 0]], r"position_ids must lie in \[0, 16\)")],
)
def test_rotary_embedding_refuses_position_ids_outside_its_caches(positions, rule):
    model = lutc.build(_rope_model(16), target="llvm")
    x = np.random.default_rng(0).standard_normal((1, 2, 64)).astype(np.float32)
    pos = np.array(positions, np.int64)
    message = r"RotaryEmbedding node 'rope' reads a position outside \[0, 16\) but its cos_cache holds 16 positions"
    with pytest.raises(InputError, match=message + r".*" + rule):
        model(x=x, pos=pos)
    edge = np.array([[14, 15]], np.int64)
    want = ort.InferenceSession(_rope_model(16).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(model(x=x, pos=edge), want.run(None, {"x": x, "pos": edge})[0], rtol=1e-5, atol=1e-5)


def test_rotary_embedding_with_a_start_position_refuses_running_past_its_caches():
    x = np.random.default_rng(0).standard_normal((1, 3, 64)).astype(np.float32)
    node = helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], name="rope", domain=MS, num_heads=4)
    model = lutc.build(_model(node, {"x": x, "pos": np.array([0], np.int64)}, _caches(16, 8), ["y"]), target="llvm")
    model(x=x, pos=np.array([13], np.int64))  # positions 13, 14, 15
    with pytest.raises(InputError, match=r"holds 16 positions .*position_ids \+ sequence length must be at most 16"):
        model(x=x, pos=np.array([14], np.int64))


def test_group_query_attention_refuses_position_ids_outside_its_caches():
    feeds = _gqa_feeds(1, 2, 3, packed=False)
    feeds["position_ids"] = np.array([[3, 4]], np.int64)
    model = lutc.build(_model(_gqa_node(feeds, True), feeds, _caches(16, 8), ["y"]), target="llvm")
    model(**feeds)
    feeds["position_ids"] = np.array([[15, 16]], np.int64)
    with pytest.raises(InputError, match=r"GroupQueryAttention node 'gqa' .*holds 16 positions.*position_ids must"):
        model(**feeds)


def test_caches_given_as_inputs_are_checked_by_their_static_rows():
    """The caches as function parameters (what the importer makes of big initializers): only
    their static shape is read."""
    x = np.random.default_rng(0).standard_normal((1, 2, 64)).astype(np.float32)
    caches = _caches(16, 8)
    node = helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], name="rope", domain=MS, num_heads=4)
    inputs = {"x": x, "pos": np.array([[14, 15]], np.int64), **caches}
    model = lutc.build(_model(node, inputs, {}, ["y"]), target="llvm")
    want = ort.InferenceSession(_model(node, inputs, {}, ["y"]).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(model(**inputs), want.run(None, inputs)[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match=r"RotaryEmbedding node 'rope' .*cos_cache holds 16 positions"):
        model(**{**inputs, "pos": np.array([[15, 16]], np.int64)})


def test_the_smaller_cache_names_the_limit():
    """A sin_cache shorter than the cos_cache bounds the positions (and is named)."""
    x = np.zeros((1, 2, 64), np.float32)
    caches = _caches(16, 8)
    caches["sin"] = caches["sin"][:12]
    node = helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], name="rope", domain=MS, num_heads=4)
    model = lutc.build(_model(node, {"x": x, "pos": np.zeros((1, 2), np.int64)}, caches, ["y"]), target="llvm")
    with pytest.raises(InputError, match=r"its sin_cache holds 12 positions"):
        model(x=x, pos=np.array([[11, 12]], np.int64))


# --- position_limit: the model and its configuration files -------------------------------------


def _builder_proto() -> onnx.ModelProto:
    return onnx.load(str(BUILDER), load_external_data=False)


def test_the_builder_models_limit_is_its_cache_rows():
    assert position_limit(_builder_proto(), None) == PositionLimit(
        ROWS, f"cos_cache rows of GroupQueryAttention node '{GQA_NODE}'"
    )


def test_a_model_without_rotary_caches_states_no_limit(tmp_path):
    assert position_limit(onnx.load(str(CORPUS_DIR / "llama_ts_prefill_q4b32s.onnx")), tmp_path) is None


def test_the_smallest_config_limit_wins(tmp_path):
    (tmp_path / "genai_config.json").write_text(
        json.dumps({"model": {"context_length": 100}, "search": {"max_length": 64}})
    )
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 96}))
    assert position_limit(_builder_proto(), tmp_path) == PositionLimit(64, "genai_config.json search.max_length")
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 32}))
    assert position_limit(_builder_proto(), tmp_path) == PositionLimit(32, "config.json max_position_embeddings")


def test_a_config_larger_than_the_caches_leaves_the_caches_limit(tmp_path):
    (tmp_path / "genai_config.json").write_text(json.dumps({"model": {"context_length": 4096}}))
    assert position_limit(_builder_proto(), tmp_path).positions == ROWS


@pytest.mark.parametrize(
    ("text", "warning"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not an object"),
        ('{"search": {"max_length": "long"}}', "not a positive integer"),
        ('{"model": {"context_length": 0}}', "not a positive integer"),
    ],
)
def test_a_malformed_config_warns_and_is_ignored(tmp_path, text, warning):
    (tmp_path / "genai_config.json").write_text(text)
    with pytest.warns(UserWarning, match=warning):
        limit = position_limit(_builder_proto(), tmp_path)
    assert limit is not None and limit.positions == ROWS


def test_missing_or_unreadable_configs_are_ignored_quietly(tmp_path):
    (tmp_path / "config.json").mkdir()  # exists, but cannot be read as a file
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert position_limit(_builder_proto(), tmp_path).positions == ROWS
        assert position_limit(_builder_proto(), tmp_path / "absent").positions == ROWS


def _graph_model(node: onnx.NodeProto, inits: list[onnx.TensorProto], nodes=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        [*nodes, node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)])


def test_rotary_embedding_caches_and_constant_caches_count():
    caches = _caches(48, 8)
    inits = [numpy_helper.from_array(caches["cos"], "cos"), numpy_helper.from_array(caches["sin"][:40], "sin")]
    node = helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], name="rope", domain=MS)
    assert position_limit(_graph_model(node, inits), None) == PositionLimit(
        40, "sin_cache rows of RotaryEmbedding node 'rope'"
    )
    constant = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(caches["cos"][:20]))
    node = helper.make_node("RotaryEmbedding", ["x", "pos", "c", "sin"], ["y"], name="rope", domain=MS)
    assert position_limit(_graph_model(node, inits, [constant]), None).positions == 20


def test_group_query_attention_without_rotary_reads_no_cache():
    caches = _caches(8, 8)
    inits = [numpy_helper.from_array(caches["cos"], "cos"), numpy_helper.from_array(caches["sin"], "sin")]
    names = ["x", "", "", "", "", "k", "t", "cos", "sin"]
    for rotary, expected in ((0, None), (1, 8)):
        node = helper.make_node("GroupQueryAttention", names, ["y"], name="gqa", domain=MS, do_rotary=rotary)
        limit = position_limit(_graph_model(node, inits), None)
        assert (limit.positions if limit else None) == expected


def test_a_position_limit_is_positive():
    with pytest.raises(ValueError, match="positive"):
        PositionLimit(0, "nothing")
