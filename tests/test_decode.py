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
