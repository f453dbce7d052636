"""Greedy decoding (:func:`lutc.generate`) over the corpus decoders, against the same loop on ONNX
Runtime; :meth:`CompiledModel.run` with tensors in and out.

Exact mode (float tables) computes what ORT at ``accuracy_level=0`` computes up to float32
summation order (logits agree to ~1e-6 relative, ``test_corpus``), so greedy tokens must be
identical; a tie within 1e-6 would be needed to flip one, which these 32-step runs do not meet.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
from corpus.feeds import CORPUS_DIR, load_manifest, make_feeds

import lutc
from lutc.bench.generate import ort_generate
from lutc.cli import main as cli_main
from lutc.decode import build_decoder, cache_layout, step_feeds
from lutc.errors import InputError, ModelError
from lutc.frontend.model_info import TensorInfo

DECODERS = ["llama_genai_int4", "qwen2_genai_int4", "llama_genai_fp32_q2b32s", "llama_ts_decode_q4b128a"]
PROMPT = np.array([[1, 5, 17, 33, 2, 8, 100, 77]], np.int64)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=DECODERS)
def decoder(request):
    path = CORPUS_DIR / f"{request.param}.onnx"
    return path, lutc.build(path, target="x86", mode="exact")


def test_greedy_tokens_match_ort_over_32_steps(decoder):
    path, model = decoder
    ours = lutc.generate(model, PROMPT, 32)
    theirs = ort_generate(onnx.load(str(path)), cache_layout(model.inputs, model.outputs), PROMPT, 32, 1, 0)
    assert ours.tokens.shape == (1, 32)
    np.testing.assert_array_equal(ours.tokens, theirs.tokens)
    assert len(ours.step_seconds) == 31 and ours.decode_tokens_per_second > 0


def test_a_batch_of_two_prompts_decodes_like_each_alone(decoder):
    _, model = decoder
    prompts = np.concatenate([PROMPT, PROMPT[:, ::-1]])
    together = lutc.generate(model, prompts, 8).tokens
    alone = [lutc.generate(model, p[None], 8).tokens[0] for p in prompts]
    np.testing.assert_array_equal(together, np.stack(alone))


def test_outputs_of_run_are_tensors_later_calls_leave_alone():
    model = lutc.build(CORPUS_DIR / "llama_genai_int4.onnx", target="x86")
    entry = next(e for e in load_manifest() if e["file"] == "llama_genai_int4.onnx")
    feeds = make_feeds(entry)
    first = model.run(**feeds)
    assert all(isinstance(t, tvm.runtime.Tensor) for t in first)
    kept = [np.from_dlpack(t).copy() for t in first]
    feeds["input_ids"] = (feeds["input_ids"] + 1) % 512
    second = model.run(**{k: (tvm.runtime.tensor(v) if k.startswith("past") else v) for k, v in feeds.items()})
    assert not np.array_equal(np.from_dlpack(second[0]), kept[0])
    for tensor, copy in zip(first, kept, strict=True):
        np.testing.assert_array_equal(np.from_dlpack(tensor), copy)


class _DLPackOnly:
    """An array that speaks only DLPack (as a torch tensor does to lutc)."""

    def __init__(self, array: np.ndarray):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_run_takes_dlpack_arrays_and_checks_them():
    model = lutc.build(CORPUS_DIR / "llama_genai_int4.onnx", target="x86")
    entry = next(e for e in load_manifest() if e["file"] == "llama_genai_int4.onnx")
    feeds = make_feeds(entry)
    want = model(**feeds)[0]
    got = model.run(**{k: _DLPackOnly(v) for k, v in feeds.items()})[0]
    np.testing.assert_array_equal(np.from_dlpack(got), want)
    feeds["past_key_values.0.key"] = _DLPackOnly(feeds["past_key_values.0.key"].astype(np.float64))
    with pytest.raises(InputError, match=r"past_key_values\.0\.key.*dtype float64"):
        model.run(**feeds)


def test_generate_refuses_a_model_without_a_kv_cache():
    model = lutc.build(CORPUS_DIR / "llama_ts_prefill_q4b32s.onnx", target="x86")
    with pytest.raises(ModelError, match="past/present KV pairs"):
        lutc.generate(model, PROMPT, 4)


def test_generate_refuses_bad_prompts():
    model = lutc.build(CORPUS_DIR / "llama_genai_int4.onnx", target="x86")
    with pytest.raises(InputError, match="int64"):
        lutc.generate(model, PROMPT.astype(np.int32), 4)
    with pytest.raises(InputError, match="max_new_tokens"):
        lutc.generate(model, PROMPT, 0)


def test_cli_generate_compares_with_ort(capsys):
    path = str(CORPUS_DIR / "qwen2_genai_int4.onnx")
    assert cli_main(["generate", path, "--mode", "exact", "--max-new-tokens", "6", "--compare-ort"]) == 0
    out = capsys.readouterr().out
    assert "greedy tokens identical to ORT's" in out and "tokens/s" in out


def test_cli_compiles_a_decoder_folder_and_generates_from_it(tmp_path, capsys):
    path, folder = str(CORPUS_DIR / "qwen2_genai_int4.onnx"), tmp_path / "decoder"
    assert cli_main(["generate", path, "--mode", "exact", "--max-new-tokens", "6"]) == 0
    built = capsys.readouterr().out.splitlines()[0]
    assert cli_main(["compile", path, "--decoder", "--mode", "exact", "-o", str(folder)]) == 0
    assert (folder / "decoder.weights").is_file() and (folder / "step.so").is_file()
    capsys.readouterr()
    assert cli_main(["generate", str(folder), "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == built  # the same tokens


@pytest.mark.parametrize("name", ["qwen2_genai_int4", "llama_ts_decode_q4b128a"])
def test_a_decode_step_model_gives_the_same_tokens(name):
    """The prompt on the dynamic build, every later token on the one built for ``input_ids [1, 1]``
    (the TorchScript graph's mask is ``[batch, past+seq]``: it becomes ``[1, past+1]``)."""
    model, step = build_decoder(CORPUS_DIR / f"{name}.onnx", mode="exact")
    assert [i.shape for i in step.inputs if i.name == "input_ids"] == [(1, 1)]
    both = lutc.generate(model, PROMPT, 16, step_model=step).tokens
    np.testing.assert_array_equal(both, lutc.generate(model, PROMPT, 16).tokens)


def test_a_step_model_of_another_decoder_is_refused():
    model = lutc.build(CORPUS_DIR / "qwen2_genai_int4.onnx", target="x86")
    other = lutc.build(CORPUS_DIR / "llama_ts_decode_q4b128a.onnx", target="x86")
    with pytest.raises(ModelError, match="same decoder"):
        lutc.generate(model, PROMPT, 4, step_model=other)


def test_a_cache_of_the_wrong_head_size_is_refused_without_the_cache_rule():
    """The VM's own shape check names the dim; the concatenated-cache rule is added only to the
    failures of its own checks."""
    model = lutc.build(CORPUS_DIR / "llama_genai_int4.onnx", target="x86")
    entry = next(e for e in load_manifest() if e["file"] == "llama_genai_int4.onnx")
    feeds = make_feeds(entry)
    feeds = {k: (v[..., :32].copy() if k.startswith("past") else v) for k, v in feeds.items()}
    with pytest.raises(InputError, match=r"32 vs\. 64") as refused:
        model(**feeds)
    assert "concatenated" not in str(refused.value)


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def test_decode_memory_grows_by_the_kv_cache_only():
    """400 tokens: RSS grows by at most the KV cache plus 48 MB. TVM's pooled allocator kept a block
    per cache length (a new size every 4 tokens here): +165 MB at 400 tokens, +2.2 GB at 1,500."""
    prompt, step = build_decoder(CORPUS_DIR / "llama_ts_decode_q4b128a.onnx")
    lutc.generate(prompt, PROMPT, 40, step_model=step)  # first touches of the code and the heap
    before = _rss()
    out = lutc.generate(prompt, PROMPT, 400, step_model=step)
    growth = _rss() - before
    layout = cache_layout(prompt.inputs, prompt.outputs)
    positions = PROMPT.shape[1] + out.tokens.shape[1]
    kv_bytes = sum(heads * size * 4 * positions for heads, size in layout.head_shapes.values())
    assert out.tokens.shape == (1, 400)
    assert growth <= kv_bytes + 48e6, f"RSS grew {growth / 1e6:.1f} MB; the KV cache holds {kv_bytes / 1e6:.1f} MB"


def test_staging_keeps_a_few_shapes_per_input():
    model = lutc.build(CORPUS_DIR / "llama_ts_decode_q4b128a.onnx", target="x86")
    layout = cache_layout(model.inputs, model.outputs)
    for length in range(1, 12):
        model(**step_feeds(layout, np.ones((1, length), np.int64), layout.empty_past(1), length))
    assert max(len(shapes) for shapes in model._staging.values()) == lutc.compiled.STAGED_SHAPES


def test_an_exported_decoder_shares_one_weight_file_and_loads_once(tmp_path):
    prompt, step = build_decoder(CORPUS_DIR / "llama_genai_int4.onnx", mode="exact")
    assert prompt.weight_set is step.weight_set and prompt.weights.keys() == step.weights.keys()
    folder = lutc.export_decoder(prompt, step, tmp_path / "decoder")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["prompt.so", "prompt.so.lutc.json", "step.so", "step.so.lutc.json", "decoder.weights"])  # fmt: skip
    loaded, loaded_step = lutc.load_decoder(folder)
    assert loaded.weight_set is loaded_step.weight_set and loaded.position_limit == prompt.position_limit
    np.testing.assert_array_equal(
        lutc.generate(loaded, PROMPT, 8, step_model=loaded_step).tokens,
        lutc.generate(prompt, PROMPT, 8, step_model=step).tokens,
    )


def _cache(name: str, head_size: int = 64, dtype: str = "float32") -> TensorInfo:
    return TensorInfo(name, ("batch", 2, "past", head_size), dtype)


IDS = TensorInfo("input_ids", ("batch", "seq"), "int64")
LOGITS = TensorInfo("logits", ("batch", "seq", 512), "float32")
TORCH_PAST = [_cache(f"past_{kind}.{layer}") for layer in (0, 1) for kind in ("key", "value")]
PRESENT = [_cache(f"present.{layer}.{kind}") for layer in (0, 1) for kind in ("key", "value")]


def test_cache_pairs_follow_the_names_where_they_say_layer_and_half():
    """torch's ``past_key.N`` inputs, ``present.N.key`` outputs; the builder's inputs list every key
    first while its outputs interleave, which pairing by position alone would get wrong."""
    layout = cache_layout((IDS, *TORCH_PAST), (LOGITS, *PRESENT))
    assert layout.pairs == (("past_key.0", "present.0.key"), ("past_value.0", "present.0.value"),
                            ("past_key.1", "present.1.key"), ("past_value.1", "present.1.value"))  # fmt: skip
    builder = [_cache(f"past_key_values.{layer}.{kind}") for kind in ("key", "value") for layer in (0, 1)]
    layout = cache_layout((IDS, *builder), (LOGITS, *PRESENT))
    assert dict(layout.pairs)["past_key_values.1.key"] == "present.1.key"


def test_cache_pairs_fall_back_to_position_and_shape():
    past = [_cache("cache_in_a", 64), _cache("cache_in_b", 32)]
    present = [_cache("cache_out_a", 64), _cache("cache_out_b", 32)]
    assert cache_layout((IDS, *past), (LOGITS, *present)).pairs == (("cache_in_a", "cache_out_a"),
                                                                    ("cache_in_b", "cache_out_b"))  # fmt: skip
    with pytest.raises(ModelError, match=r"cannot pair.*Past inputs: cache_in_a: float32\[batch, 2, past, 64\].*"
                       r"outputs: cache_out_b: float32\[batch, 2, past, 32\], cache_out_a"):  # fmt: skip
        cache_layout((IDS, *past), (LOGITS, *present[::-1]))  # head sizes differ: not by position either


def test_cache_names_override_the_pairing_and_are_checked():
    names = {p.name: q.name for p, q in zip(TORCH_PAST, PRESENT[::-1], strict=True)}
    assert dict(cache_layout((IDS, *TORCH_PAST), (LOGITS, *PRESENT), names).pairs) == names
    with pytest.raises(ModelError, match=r"names no past input or output: \['present.9.key'\]"):
        cache_layout((IDS, *TORCH_PAST), (LOGITS, *PRESENT), {**names, "past_key.0": "present.9.key"})
    with pytest.raises(ModelError, match=r"leaves out the past inputs \['past_value.1'\]"):
        cache_layout((IDS, *TORCH_PAST), (LOGITS, *PRESENT), {k: v for k, v in names.items() if k != "past_value.1"})
    half = (IDS, *TORCH_PAST[:2], _cache("past_key.1", dtype="float16"), TORCH_PAST[3])
    with pytest.raises(ModelError, match="different dtype"):
        cache_layout(half, (LOGITS, *PRESENT), {p.name: q.name for p, q in zip(half[1:], PRESENT, strict=True)})


def _torch_cache_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its past inputs named as torch's exporter names a ``DynamicCache``'s:
    ``past_key_values.N.key`` -> ``past_key.N``."""
    renamed = {f"past_key_values.{n}.{kind}": f"past_{kind}.{n}" for n in (0, 1) for kind in ("key", "value")}
    for value in model.graph.input:
        value.name = renamed.get(value.name, value.name)
    for node in model.graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
    return model


def test_a_decoder_with_torch_cache_names_generates_as_onnxruntime_does():
    renamed = _torch_cache_names(onnx.load(str(CORPUS_DIR / "llama_ts_decode_q4b128a.onnx")))
    model = lutc.build(renamed, target="x86", mode="exact")
    layout = cache_layout(model.inputs, model.outputs)
    assert ("past_value.1", "present.1.value") in layout.pairs
    theirs = ort_generate(renamed, layout, PROMPT, 16, 1, 0)
    np.testing.assert_array_equal(lutc.generate(model, PROMPT, 16).tokens, theirs.tokens)
