"""A model folder's text side: its ``tokenizer.json`` (read with Hugging Face ``tokenizers``), its
special tokens and chat template (:func:`load_tokenizer`), and incremental detokenization
(:class:`TextStream`). ``tokenizers`` is imported only when a tokenizer is loaded."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LutcError

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
TEMPLATE_FILE = "chat_template.jinja"
SPECIAL = ("bos", "eos", "pad", "unk")
ID_SOURCES = (("genai_config.json", ("model",)), ("generation_config.json", ()))
"""Where the special token ids are read, first to last (then ``tokenizer_config.json``'s tokens)."""
REPLACEMENT = "\ufffd"
"""What decoding gives for the bytes of an incomplete UTF-8 character."""


@dataclass(frozen=True)
class SpecialTokens:
    """The ids of the special tokens (``eos``: every id that ends a generation) and their text
    (``bos_token``, ``eos_token``, ... for chat templates)."""

    bos: int | None = None
    eos: tuple[int, ...] = ()
    pad: int | None = None
    text: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Tokenizer:
    """A model folder's tokenizer: ``backend`` (a ``tokenizers.Tokenizer``), its special tokens and
    its chat template (``None`` where the folder has none)."""

    backend: Any
    special: SpecialTokens
    chat_template: str | None
    folder: Path

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``; ``add_special_tokens``: as ``tokenizer.json``'s post-processor adds
        them (a BOS), which a rendered chat template holds already."""
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``, special tokens left out."""
        return self.backend.decode(list(ids), skip_special_tokens=True)

    def template(self) -> str:
        """The chat template; a :class:`LutcError` where the folder has none."""
        if self.chat_template is None:
            raise LutcError(f"{self.folder} has no chat template (neither {TEMPLATE_FILE} nor 'chat_template' in "
                            f"{TOKENIZER_CONFIG}): give the prompt as plain text, without --chat")  # fmt: skip
        return self.chat_template

    def stream(self) -> TextStream:
        return TextStream(self)


class TextStream:
    """Incremental detokenization: :meth:`push` each new token and get the text it adds. Decodes a
    window from one token before the last text emitted (so a tokenizer that joins or strips words
    sees their context) and holds the text back while it ends in an incomplete UTF-8 character."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # the window's first token
        self.read = 0  # the tokens whose text was emitted

    def push(self, token: int) -> str:
        """The text ``token`` completes ("" while a character is incomplete)."""
        self.ids.append(token)
        before = self.tokenizer.decode(self.ids[self.prefix : self.read])
        text = self.tokenizer.decode(self.ids[self.prefix :])
        if len(text) <= len(before) or text.endswith(REPLACEMENT):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(before) :]

    def flush(self) -> str:
        """The text held back at the end (an incomplete character's replacement characters)."""
        before = self.tokenizer.decode(self.ids[self.prefix : self.read])
        text = self.tokenizer.decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return text[len(before) :]


def load_tokenizer(folder: str | Path) -> Tokenizer:
    """The tokenizer of a model folder (``tokenizer.json``, ``tokenizer_config.json``, the chat
    template, the special token ids of ``genai_config.json``, ``generation_config.json`` or the
    tokenizer config, first found); a :class:`LutcError` naming the file where it has none."""
    folder = Path(folder)
    path = folder / TOKENIZER_FILE
    if not path.is_file():
        raise LutcError(f"no tokenizer: {path} does not exist; give the prompt as token ids (--prompt-ids) or "
                        "name a folder with the model's tokenizer.json (--tokenizer)")  # fmt: skip
    from tokenizers import Tokenizer as Backend

    try:
        backend = Backend.from_file(str(path))
    except Exception as err:  # tokenizers raises its own Exception
        raise LutcError(f"cannot read {path}: {err}") from None
    config = _json(folder / TOKENIZER_CONFIG)
    return Tokenizer(backend, _special_tokens(folder, backend, config), _chat_template(folder, config), folder)


def _json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise LutcError(f"cannot read {path}: {err}") from None
    return data if isinstance(data, dict) else {}


def _chat_template(folder: Path, config: dict) -> str | None:
    """``chat_template.jinja``, else ``tokenizer_config.json``'s ``chat_template`` (a string, or a list
    of named templates: the one named ``default``, else the first)."""
    if (folder / TEMPLATE_FILE).is_file():
        return (folder / TEMPLATE_FILE).read_text()
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default", next(iter(named.values()), None))
    return template if isinstance(template, str) else None


def _token_text(value) -> str | None:
    """A token of ``tokenizer_config.json``: a string, or an added token ``{"content": ...}``."""
    return value.get("content") if isinstance(value, dict) else value if isinstance(value, str) else None


def _special_tokens(folder: Path, backend, config: dict) -> SpecialTokens:
    """Ids from :data:`ID_SOURCES` (the first that has one), else from the tokenizer config's text."""
    text = {k: t for k in SPECIAL if (t := _token_text(config.get(f"{k}_token"))) is not None}
    ids = {k: i for k, t in text.items() if (i := backend.token_to_id(t)) is not None}
    for name, keys in reversed(ID_SOURCES):  # the first source overrides the later ones
        found = _json(folder / name)
        for key in keys:
            found = found.get(key) if isinstance(found.get(key), dict) else {}
        ids |= {k: found[f"{k}_token_id"] for k in SPECIAL if found.get(f"{k}_token_id") is not None}
    for k, value in ids.items():  # the text of a token known by id only
        if k not in text and isinstance(value, int) and (token := backend.id_to_token(value)) is not None:
            text[k] = token
    eos = ids.get("eos")
    eos = tuple(eos) if isinstance(eos, list) else () if eos is None else (eos,)
    return SpecialTokens(ids.get("bos"), eos, ids.get("pad"), {f"{k}_token": t for k, t in text.items()})
