"""Text in, text out: sampling (:mod:`lutc.sampling`), tokenizers and chat templates
(:mod:`lutc.tokenizer`, :mod:`lutc.chat`), incremental detokenization, :class:`lutc.Generator`
and ``lutc generate --prompt``.

The model is the llama32 family model (onnxruntime-genai's builder, random weights, vocabulary
512, bos 1 and eos 2 in its genai_config.json) in a folder with a word-level tokenizer
(``t0`` ... ``t511``) written here, as ``make_builder_corpus.py`` makes it (its folders keep no
tokenizer files). Exact mode (float tables): the prompt build and the one-token step build give
the same greedy tokens (``test_decode``), so the text of ``--prompt`` and ``--prompt-ids`` agree.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from corpus.feeds import CORPUS_DIR

import lutc
from lutc.chat import messages, render_chat
from lutc.cli import main as cli_main
from lutc.errors import InputError, LutcError
from lutc.generator import split_stop
from lutc.sampling import Sampler, Sampling, penalize, probabilities, top_k_mask, top_p_mask
from lutc.tokenizer import REPLACEMENT, load_tokenizer

FAMILY = CORPUS_DIR / "families" / "llama32"
VOCAB = 512
TEMPLATE = (
    "{{ bos_token }} {% for m in messages %}{% if m['role'] == 'system' %}t3 {% else %}t4 {% endif %}"
    "{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}t5{% endif %}"
)
"""A chat template in the word-level vocabulary: t3 before a system turn, t4 before a user turn, t5 to answer."""
PROMPT, PROMPT_IDS = "t9 t17 t33 t8", [1, 9, 17, 33, 8]


def write_word_tokenizer(folder: Path, template: str | None = TEMPLATE) -> None:
    """``tokenizer.json``: words ``t0`` ... ``t511``, ``t0``-``t2`` special (unk, bos, eos), a BOS added
    to plain text; ``tokenizer_config.json`` with the tokens' text and ``template``."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors

    words = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    words.add_special_tokens([AddedToken(f"t{i}", special=True, single_word=True) for i in range(3)])  # not in t17
    words.post_processor = processors.TemplateProcessing(single="t1 $A", special_tokens=[("t1", 1)])
    words.save(str(folder / "tokenizer.json"))
    config = {"bos_token": "t1", "eos_token": {"content": "t2", "special": True}, "unk_token": "t0"}
    if template is not None:
        config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def byte_tokenizer(folder: Path):
    """A byte-level BPE tokenizer with no merges: one token per UTF-8 byte, so a multi-byte character
    spans several tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    bytes_ = Tokenizer(models.BPE({c: i for i, c in enumerate(alphabet)}, []))
    bytes_.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bytes_.decoder = decoders.ByteLevel()
    bytes_.save(str(folder / "tokenizer.json"))
    return load_tokenizer(folder)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The family model's folder with the word-level tokenizer."""
    folder = tmp_path_factory.mktemp("llama32")
    for name in ("model.onnx", "genai_config.json"):
        (folder / name).symlink_to(FAMILY / name)
    write_word_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def generator(folder) -> lutc.Generator:
    return lutc.Generator(folder, mode="exact")


# Sampling: each step against a hand-computed case.


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    got = penalize(np.array([2.0, -1.0, 0.5, 3.0]), np.array([0, 1, 1]), 2.0)
    np.testing.assert_array_equal(got, [1.0, -2.0, 0.5, 3.0])


def test_top_k_keeps_the_k_largest_and_their_ties():
    logits = np.array([1.0, 3.0, 2.0, 3.0])
    assert top_k_mask(logits, 2).tolist() == [False, True, False, True]
    assert top_k_mask(logits, 3).tolist() == [False, True, True, True]
    assert top_k_mask(logits, 0).all()


@pytest.mark.parametrize(("p", "kept"), [(0.5, [1, 0, 0]), (0.7, [1, 0, 1]), (0.8, [1, 0, 1]), (0.81, [1, 1, 1])])
def test_top_p_keeps_the_likeliest_until_they_reach_p(p, kept):
    assert top_p_mask(np.array([0.5, 0.2, 0.3]), p).tolist() == [bool(k) for k in kept]


def test_temperature_and_top_p_give_the_renormalized_distribution():
    halved = probabilities(np.log([1.0, 2.0]), Sampling(temperature=0.5))  # softmax(2 log [1, 2]) = [1, 4] / 5
    np.testing.assert_allclose(halved, [0.2, 0.8], rtol=1e-12)  # float64 throughout
    cut = probabilities(np.log([0.5, 0.3, 0.2]), Sampling(temperature=1.0, top_p=0.7))
    np.testing.assert_allclose(cut, [0.625, 0.375, 0.0], rtol=1e-12)


def test_greedy_sampling_is_argmax_after_the_penalty():
    logits = np.array([[3.0, 2.0, -1.0], [0.0, 1.0, 5.0]])
    assert Sampler(Sampling(), np.array([[1], [1]]))(logits).tolist() == [0, 2]
    penalized = Sampler(Sampling(repetition_penalty=2.0), np.array([[0], [2]]))
    assert penalized(logits).tolist() == [1, 2]  # 3 / 2 < 2; 5 / 2 > 1
    assert penalized.seen == [[0, 1], [2, 2]]


def test_a_seed_fixes_the_draws_and_they_follow_the_distribution():
    logits = np.log([[0.5, 0.3, 0.2]])
    sampler = Sampler(Sampling(temperature=1.0, top_p=0.7, seed=3), np.array([[0]]))
    draws = np.array([sampler(logits)[0] for _ in range(2000)])
    again = Sampler(Sampling(temperature=1.0, top_p=0.7, seed=3), np.array([[0]]))
    assert [again(logits)[0] for _ in range(2000)] == draws.tolist()
    other = Sampler(Sampling(temperature=1.0, top_p=0.7, seed=4), np.array([[0]]))
    assert [other(logits)[0] for _ in range(2000)] != draws.tolist()
    assert 2 not in draws  # cut by top_p
    assert abs((draws == 0).mean() - 0.625) < 0.05  # 2000 draws: binomial sd 0.011, so 4.6 sd


@pytest.mark.parametrize(
    ("options", "message"),
    [({"temperature": -1.0}, "temperature"), ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"),
     ({"top_k": -2}, "top_k"), ({"repetition_penalty": 0.0}, "repetition_penalty")],
)  # fmt: skip
def test_bad_sampling_settings_are_refused(options, message):
    with pytest.raises(InputError, match=message):
        Sampling(**options)


# Tokenizers, special tokens, chat templates.


def test_special_tokens_come_from_genai_config_first(folder, tmp_path):
    tokenizer = load_tokenizer(folder)
    assert (tokenizer.special.bos, tokenizer.special.eos, tokenizer.special.pad) == (1, (2,), 0)
    assert tokenizer.special.text == {"bos_token": "t1", "eos_token": "t2", "unk_token": "t0", "pad_token": "t0"}
    write_word_tokenizer(tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7], "bos_token_id": 1}))
    assert load_tokenizer(tmp_path).special.eos == (2, 7)  # no genai_config: generation_config's list
    (tmp_path / "generation_config.json").unlink()
    assert load_tokenizer(tmp_path).special.eos == (2,)  # the tokenizer config's eos_token


def test_a_chat_template_file_comes_before_the_config_and_named_templates_pick_default(tmp_path):
    write_word_tokenizer(tmp_path, template=[{"name": "tool_use", "template": "x"},
                                             {"name": "default", "template": "y"}])  # fmt: skip
    assert load_tokenizer(tmp_path).chat_template == "y"
    (tmp_path / "chat_template.jinja").write_text("z")
    assert load_tokenizer(tmp_path).chat_template == "z"


def test_a_folder_without_a_tokenizer_or_template_says_what_is_missing(tmp_path):
    with pytest.raises(LutcError, match=rf"{tmp_path / 'tokenizer.json'} does not exist.*--prompt-ids"):
        load_tokenizer(tmp_path)
    write_word_tokenizer(tmp_path, template=None)
    with pytest.raises(LutcError, match="no chat template"):
        load_tokenizer(tmp_path).template()


def test_a_chat_template_renders_as_transformers_renders_it():
    template = "{% for m in messages %}{{ m.content | tojson }}{% if loop.last %}{% break %}{% endif %}{% endfor %}"
    assert render_chat(template, messages("é\n<b>")) == '"é\\n<b>"'  # transformers' tojson: no ASCII or HTML escapes
    assert render_chat(TEMPLATE, messages("t9", "t7"), special={"bos_token": "t1"}) == "t1 t3 t7 t4 t9 t5"
    with pytest.raises(LutcError, match="no system turns"):
        render_chat("{{ raise_exception('no system turns') }}", messages("t9"))


@pytest.mark.parametrize("attack", ["{{ ''.__class__.__mro__[1].__subclasses__() }}", "{{ messages.append(1) }}"])
def test_a_chat_template_runs_in_an_immutable_sandbox(attack):
    with pytest.raises(LutcError, match="chat template failed"):
        render_chat(attack, messages("t9"))


# Incremental detokenization and stop strings.


def test_streamed_text_waits_for_a_whole_multi_byte_character(tmp_path):
    tokenizer = byte_tokenizer(tmp_path)
    text = "a€é z"
    ids = tokenizer.encode(text)
    assert len(ids) == len(text.encode())  # one token per byte: € is 3, é is 2
    stream = tokenizer.stream()
    pieces = [stream.push(i) for i in ids]
    assert pieces == ["a", "", "", "€", "", "é", " ", "z"]
    assert "".join(pieces) + stream.flush() == text
    cut = tokenizer.stream()
    assert [cut.push(i) for i in tokenizer.encode("aé")[:2]] == ["a", ""]
    assert cut.flush() == REPLACEMENT  # the end of a generation mid-character


def test_streamed_words_keep_their_spaces(folder):
    stream = load_tokenizer(folder).stream()
    assert [stream.push(i) for i in (5, 6, 2, 7)] == ["t5", " t6", "", " t7"]  # t2: eos, special, no text


@pytest.mark.parametrize(
    ("text", "want"),
    [("abc STOP d", ("abc ", "", True)), ("abc ST", ("abc ", "ST", False)), ("abc", ("abc", "", False)),
     ("x\n\nUser", ("x", "\n\nUser", False)), ("x\n\nUsers", ("x\n\nUsers", "", False))],
)  # fmt: skip
def test_text_that_may_begin_a_stop_string_is_held_back(text, want):
    assert split_stop(text, ["STOP", "\n\nUser:"]) == want


# lutc.Generator on the family model.


def test_greedy_text_is_the_text_of_the_greedy_ids(generator):
    done = generator.generate(PROMPT, 12)
    assert list(done.prompt_ids) == PROMPT_IDS
    want = lutc.generate(generator.model, np.array([PROMPT_IDS]), 12, step_model=generator.step_model,
                         eos_token_id=2).tokens[0]  # fmt: skip
    assert done.ids == tuple(want.tolist())
    assert done.text == generator.tokenizer.decode(done.ids) and done.text
    assert done.prefill_tokens_per_second > 0 and done.finish in ("eos", "length")
    streamed = list(generator.stream(PROMPT_IDS, 12))
    assert "".join(t.text for t in streamed) == done.text and streamed[-1].finish == done.finish


def test_a_stop_string_or_an_eos_token_ends_the_answer(generator):
    full = generator.generate(PROMPT, 12)
    words = full.text.split()
    assert len(words) >= 4, full.text
    stopped = generator.generate(PROMPT, 12, stop=[f" {words[3]}"])
    assert stopped.text == full.text[: full.text.index(f" {words[3]}")] and stopped.finish == "stop"
    ended = generator.generate(PROMPT, 12, eos_token_ids=[full.ids[2]])
    assert ended.ids == full.ids[: full.ids.index(full.ids[2]) + 1] and ended.finish == "eos"


def test_the_position_limit_ends_the_answer(generator):
    """128 positions (the rotary cache): a prompt of 125 leaves room for 4 tokens (the last is never fed back)."""
    prompt = [1, *range(3, 127)]
    with pytest.warns(UserWarning, match="at most 4 of the 10 tokens"):
        done = generator.generate(prompt, 10, eos_token_ids=[])
    assert len(done.ids) == 4 and done.finish == "limit"


def test_a_seed_fixes_a_sampled_answer(generator):
    sampled = [generator.generate(PROMPT, 8, Sampling(temperature=1.0, top_k=50, seed=s)).ids for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] != sampled[2]


def test_a_chat_turn_is_rendered_by_the_template(generator):
    assert generator.encode("t9 t10", system="t11") == [1, 3, 11, 4, 9, 10, 5]
    assert generator.encode("t9 t10", chat=True) == [1, 4, 9, 10, 5]
    with pytest.raises(InputError, match="chat turn is text"):
        generator.encode([9, 10], chat=True)


# lutc generate --prompt.


def test_cli_text_equals_the_text_of_the_ids(generator, folder, tmp_path, capsys):
    """On a decoder folder exported from the generator's builds (with the tokenizer files copied in),
    then on the model folder itself (one build, --one-model)."""
    decoder = lutc.export_decoder(generator.model, generator.step_model, tmp_path / "decoder")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(folder / name, decoder / name)
    ids = ",".join(map(str, PROMPT_IDS))
    assert cli_main(["generate", str(decoder), "--prompt-ids", ids, "--max-new-tokens", "12", "--eos-token-id=2"]) == 0
    tokens = [int(t) for t in capsys.readouterr().out.splitlines()[0].removeprefix("tokens: ").split(",")]
    assert cli_main(["generate", str(decoder), "--prompt", PROMPT, "--max-new-tokens", "12"]) == 0
    out, err = capsys.readouterr()
    assert out == generator.tokenizer.decode(tokens) + "\n"
    assert f"prefill {len(PROMPT_IDS)} tokens" in err and err.count("tokens/s") == 2
    args = ["generate", str(folder), "--prompt", PROMPT, "--max-new-tokens", "12", "--one-model", "--mode", "exact"]
    assert cli_main(args) == 0
    assert capsys.readouterr().out == out


def _one_line(text: str) -> str:
    """A message rich wrapped for the terminal, on one line again."""
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--prompt", "t5"], "tokenizer.json does not exist.*--prompt-ids"),
     (["--prompt-ids", "1,2", "--chat"], "--chat need a text prompt"),
     (["--prompt-ids", "1", "--compare-ort", "--temperature", "0.5"], "compare-ort compares greedy")],
)  # fmt: skip
def test_cli_text_errors_come_before_compiling(argv, message, capsys):
    assert cli_main(["generate", str(FAMILY), *argv]) == 2
    assert re.search(message, _one_line(capsys.readouterr().err))


def test_cli_chat_without_a_template_or_a_gguf_model_is_an_error(tmp_path, capsys):
    (tmp_path / "model.onnx").symlink_to(FAMILY / "model.onnx")
    write_word_tokenizer(tmp_path, template=None)
    assert cli_main(["generate", str(tmp_path), "--prompt", "t5", "--chat"]) == 2
    assert "no chat template" in _one_line(capsys.readouterr().err)
    assert cli_main(["generate", str(tmp_path / "model.gguf"), "--prompt", "t5"]) == 2
    assert "model.gguf: cannot read the GGUF model: No such file" in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--top-p", "1.5", "must be in (0, 1]"), ("--temperature", "-1", "must be >= 0"),
     ("--top-k", "-1", "must be >= 0"), ("--cache-name", "past_key.0", "must be PAST=PRESENT")],
)  # fmt: skip
def test_cli_bad_sampling_flags_are_argparse_errors(flag, value, message, capsys):
    with pytest.raises(SystemExit) as exited:
        cli_main(["generate", str(FAMILY), "--prompt", "t5", flag, value])
    assert exited.value.code == 2 and message in capsys.readouterr().err
