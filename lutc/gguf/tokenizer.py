"""A GGUF's vocabulary as Hugging Face ``tokenizers`` files: ``tokenizer.json`` (byte-level BPE from
``tokenizer.ggml.tokens`` and ``.merges``, the pre-tokenizer that ``tokenizer.ggml.pre`` names) and
``tokenizer_config.json`` (special tokens, ``tokenizer.chat_template``). Sentencepiece vocabularies
(``tokenizer.ggml.model == "llama"``) are refused by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ModelError
from .read import GgufFile

_WORDS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
_REST = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
SPLITS = {"llama-bpe": _WORDS + r"\p{N}{1,3}" + _REST, "qwen2": _WORDS + r"\p{N}" + _REST}
"""``tokenizer.ggml.pre`` -> the split regex before the byte-level mapping (llama.cpp's llama-vocab.cpp)."""
GPT2_STYLE = ("gpt2", "smollm", "default")
"""Pre-tokenizers that are GPT-2's own regex (``smollm``: with each digit split off first)."""
CLASSES = {"qwen2": "Qwen2Tokenizer", "llama-bpe": "PreTrainedTokenizerFast"}
CONTROL, USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values
SPECIAL = ("bos", "eos", "unknown", "padding")


@dataclass(frozen=True)
class Specials:
    """The special token ids the GGUF names (``eos`` with ``eot`` where that differs) and whether a BOS
    is prepended."""

    bos: int | None
    eos: tuple[int, ...]
    pad: int | None
    unk: int | None
    add_bos: bool


def specials(model: GgufFile) -> Specials:
    get = lambda name: model.value(f"tokenizer.ggml.{name}_token_id")  # noqa: E731
    eos = tuple(dict.fromkeys(i for i in (get("eos"), get("eot")) if i is not None))
    return Specials(get("bos"), eos, get("padding"), get("unknown"), bool(model.value("tokenizer.ggml.add_bos_token")))


def _pre(model: GgufFile) -> tuple[str, dict]:
    """``(pre, pre_tokenizer JSON)``; a :class:`ModelError` for a vocabulary lutc does not rebuild."""
    kind = model.value("tokenizer.ggml.model")
    pre = model.value("tokenizer.ggml.pre", "default")
    if kind != "gpt2":
        raise ModelError(f"{model.path}: GGUF tokenizer model {kind!r} is not supported (only byte-level BPE, "
                         "'gpt2', as SmolLM2, Llama 3 and Qwen2 use); convert with --no-tokenizer and give "
                         "a tokenizer folder")  # fmt: skip
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": pre in GPT2_STYLE}
    if pre in GPT2_STYLE:
        digits = [{"type": "Digits", "individual_digits": True}] if pre == "smollm" else []
        return pre, {"type": "Sequence", "pretokenizers": [*digits, byte_level]}
    if pre in SPLITS:
        split = {"type": "Split", "pattern": {"Regex": SPLITS[pre]}, "behavior": "Isolated", "invert": False}
        return pre, {"type": "Sequence", "pretokenizers": [split, byte_level]}
    raise ModelError(f"{model.path}: GGUF pre-tokenizer {pre!r} is not supported; lutc rebuilds "
                     f"{(*GPT2_STYLE, *SPLITS)}")  # fmt: skip


def rebuilt(model: GgufFile) -> bool:
    """Whether lutc rebuilds the GGUF's tokenizer (:func:`tokenizer_json` does not refuse it)."""
    try:
        _pre(model)
    except ModelError:
        return False
    return True


def tokenizer_json(model: GgufFile) -> dict[str, Any]:
    """``tokenizer.json`` (Hugging Face ``tokenizers``) of the GGUF's byte-level BPE vocabulary."""
    pre, pre_tokenizer = _pre(model)
    tokens = model.value("tokenizer.ggml.tokens")
    kinds = model.value("tokenizer.ggml.token_type") or [1] * len(tokens)
    special = specials(model)
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": k == CONTROL} for i, (t, k) in enumerate(zip(tokens, kinds, strict=True))
             if k in (CONTROL, USER_DEFINED)]  # fmt: skip
    merges = list(model.value("tokenizer.ggml.merges", []))
    bpe = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
           "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": pre == "llama-bpe",
           "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges}  # fmt: skip
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": {"type": "NFC"} if pre == "qwen2" else None, "pre_tokenizer": pre_tokenizer,
            "post_processor": _post_processor(special, tokens),
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": bpe}  # fmt: skip


def _post_processor(special: Specials, tokens: list[str]) -> dict:
    if not special.add_bos or special.bos is None:
        return {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    bos = tokens[special.bos]
    return {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [special.bos], "tokens": [bos]}}}  # fmt: skip


def tokenizer_config(model: GgufFile) -> dict[str, Any]:
    """``tokenizer_config.json``: the special tokens' text, the chat template, the tokenizer class."""
    tokens = model.value("tokenizer.ggml.tokens")
    special = specials(model)
    pre, _ = _pre(model)
    text = lambda i: tokens[i] if i is not None and 0 <= i < len(tokens) else None  # noqa: E731
    config = {"tokenizer_class": CLASSES.get(pre, "GPT2Tokenizer"), "add_bos_token": special.add_bos,
              "add_eos_token": False, "clean_up_tokenization_spaces": False,
              "model_max_length": model.hyper.context, "bos_token": text(special.bos),
              "eos_token": text(special.eos[0] if special.eos else None), "pad_token": text(special.pad),
              "unk_token": text(special.unk)}  # fmt: skip
    template = model.value("tokenizer.chat_template")
    if template:
        config["chat_template"] = template
    return {k: v for k, v in config.items() if v is not None}
