"""Text in, text out: :class:`Generator` runs a compiled decoder on a prompt (text, a chat turn or
token ids) and gives the answer's text, streamed as tokens come or whole (:class:`Completion`)."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .chat import messages, render_chat
from .decode import DECODER_FILES, Tokens, build_decoder, decode_stream, load_decoder
from .errors import InputError, LutcError
from .gguf.convert import converted
from .sampling import GREEDY, Sampling, chooser
from .tokenizer import TOKENIZER_FILE, Tokenizer, load_tokenizer

MODEL_FILE = "model.onnx"
Finish = Literal["eos", "stop", "length", "limit"]
"""Why a generation ended: an end-of-sequence token, a stop string, ``max_new_tokens``, or the
model's position limit."""


def model_path(path: str | Path) -> Path:
    """What a model argument names: an ``.onnx`` file, a library, or a folder written by
    ``lutc compile --decoder -o``, as is; a model folder (onnxruntime-genai's): its ``model.onnx``
    (``genai_config.json``'s ``model.decoder.filename``); a ``.gguf`` file: the ``model.onnx`` of its
    conversion (:func:`lutc.gguf.convert.converted`, cached), its tokenizer beside it."""
    path = Path(path)
    if path.suffix.lower() == ".gguf":
        path = converted(path)
    if not path.is_dir() or (path / DECODER_FILES[0]).is_file():
        return path
    name = _decoder_file(path / "genai_config.json")
    if not (path / name).is_file():
        raise LutcError(f"{path} holds neither {name} nor a decoder written by 'lutc compile --decoder -o'")
    return path / name


def _decoder_file(config: Path) -> str:
    try:
        found = json.loads(config.read_text())["model"]["decoder"]["filename"]
    except (OSError, ValueError, KeyError, TypeError):
        return MODEL_FILE
    return found if isinstance(found, str) else MODEL_FILE


@dataclass(frozen=True)
class Token:
    """One generated token: its id, the text it adds (held back while a character or a possible stop
    string is incomplete; the rest comes with the last token), the seconds its step took, and on the
    last token why the generation ended."""

    id: int
    text: str
    seconds: float
    finish: Finish | None = None


@dataclass(frozen=True)
class Completion:
    """A whole generation: the answer's ``text`` (up to a stop string, special tokens left out), its
    token ``ids`` (an end-of-sequence token included), the prompt's ids, and the times."""

    text: str
    ids: tuple[int, ...]
    prompt_ids: tuple[int, ...]
    prefill_seconds: float
    decode_seconds: float
    finish: Finish

    @classmethod
    def of(cls, prompt_ids: Sequence[int], tokens: Sequence[Token]) -> Completion:
        """The completion of a generation streamed as ``tokens`` (:meth:`Generator.stream`)."""
        return cls("".join(t.text for t in tokens), tuple(t.id for t in tokens), tuple(prompt_ids), tokens[0].seconds,
                   sum(t.seconds for t in tokens[1:]), tokens[-1].finish or "length")  # fmt: skip

    @property
    def prefill_tokens_per_second(self) -> float:
        return len(self.prompt_ids) / self.prefill_seconds

    @property
    def decode_tokens_per_second(self) -> float:
        """Tokens after the first (which the prompt's call made) per second of their steps."""
        return (len(self.ids) - 1) / self.decode_seconds if self.decode_seconds else float("nan")

    def describe(self) -> str:
        prefill = f"prefill {len(self.prompt_ids)} tokens in {self.prefill_seconds * 1e3:.1f} ms "
        decode = f"decode {len(self.ids) - 1} tokens in {self.decode_seconds * 1e3:.1f} ms "
        return (f"{prefill}({self.prefill_tokens_per_second:.1f} tokens/s); {decode}"
                f"({self.decode_tokens_per_second:.1f} tokens/s); ended by {self.finish}")  # fmt: skip


def split_stop(text: str, stops: Sequence[str]) -> tuple[str, str, bool]:
    """``(emit, hold, stopped)``: ``text`` up to the first stop string in it (``stopped``), else
    split before its longest end that begins a stop string (held back until the next text says)."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    if found:
        return text[: min(found)], "", True
    hold = max((n for s in stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
    return text[: len(text) - hold], text[len(text) - hold :], False


def encode_prompt(tokenizer: Tokenizer | None, prompt: str | Sequence[int], chat: bool = False,
                  system: str | None = None) -> list[int]:  # fmt: skip
    """A prompt's token ids: ids as given; text as ``tokenizer`` encodes it; with ``chat`` (or a
    ``system`` message), the chat template's rendering of a user turn holding the text."""
    if not isinstance(prompt, str):
        if chat or system is not None:
            raise InputError("a chat turn is text: give the prompt as a string")
        ids = [int(i) for i in np.asarray(prompt, np.int64).reshape(-1)]
        if not ids:
            raise InputError("the prompt has no tokens")
        return ids
    if tokenizer is None:
        raise LutcError("a text prompt needs a tokenizer")
    if not (chat or system is not None):
        return tokenizer.encode(prompt)
    text = render_chat(tokenizer.template(), messages(prompt, system), special=tokenizer.special.text)
    return tokenizer.encode(text, add_special_tokens=False)


class Generator:
    """Text generation over a compiled decoder.

    ``model``: a model folder (onnxruntime-genai's: ``model.onnx``, ``genai_config.json`` and the
    tokenizer files), an ``.onnx`` decoder (both built here for ``target`` with ``options``, as
    :func:`lutc.build_decoder`), a folder written by ``lutc compile --decoder -o``, a compiled
    model, or ``(model, step_model)``. ``tokenizer``: the folder of ``tokenizer.json`` (default:
    the model's folder); needed for text, not for token ids. ``cache_names``: as in
    :func:`lutc.generate`.

    >>> generator = lutc.Generator("qwen2.5-0.5b-int4/")
    >>> generator.generate("The capital of France is", 16).text
    >>> for token in generator.stream("Tell a story", 200, Sampling(temperature=0.7, seed=1), chat=True):
    ...     print(token.text, end="", flush=True)
    """

    def __init__(self, model, *, tokenizer: str | Path | Tokenizer | None = None, target="x86",
                 cache_names: Mapping[str, str] | None = None, **options):  # fmt: skip
        self.model, self.step_model, folder = _models(model, target, options)
        self.cache_names = cache_names
        self._tokenizer_source = tokenizer if tokenizer is not None else folder

    @functools.cached_property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer (read on first use); a :class:`LutcError` where there is none."""
        source = self._tokenizer_source
        if isinstance(source, Tokenizer):
            return source
        if source is None:
            raise LutcError("no tokenizer: give Generator(..., tokenizer=FOLDER) for text, or give token ids")
        return load_tokenizer(source)

    @property
    def has_tokenizer(self) -> bool:
        source = self._tokenizer_source
        return isinstance(source, Tokenizer) or (source is not None and (Path(source) / TOKENIZER_FILE).is_file())

    def encode(self, prompt: str | Sequence[int], *, chat: bool = False, system: str | None = None) -> list[int]:
        """The prompt's token ids (:func:`encode_prompt`)."""
        return encode_prompt(None if not isinstance(prompt, str) else self.tokenizer, prompt, chat, system)

    def stream(self, prompt: str | Sequence[int], max_new_tokens: int = 128, sampling: Sampling = GREEDY, *,
               chat: bool = False, system: str | None = None, stop: Sequence[str] = (),
               eos_token_ids: Sequence[int] | None = None) -> Iterator[Token]:  # fmt: skip
        """Each new :class:`Token` as it comes, until an end-of-sequence token (``eos_token_ids``, by
        default the tokenizer's), a ``stop`` string (left out of the text), ``max_new_tokens`` or the
        model's position limit. Texts are empty for an ids prompt where there is no tokenizer."""
        ids = self.encode(prompt, chat=chat, system=system)
        return self._stream(ids, max_new_tokens, sampling, stop, eos_token_ids, isinstance(prompt, str))

    def generate(self, prompt: str | Sequence[int], max_new_tokens: int = 128, sampling: Sampling = GREEDY, *,
                 chat: bool = False, system: str | None = None, stop: Sequence[str] = (),
                 eos_token_ids: Sequence[int] | None = None) -> Completion:  # fmt: skip
        """The whole :class:`Completion` of :meth:`stream` (same arguments)."""
        ids = self.encode(prompt, chat=chat, system=system)
        tokens = self._stream(ids, max_new_tokens, sampling, stop, eos_token_ids, isinstance(prompt, str))
        return Completion.of(ids, list(tokens))

    def _stream(self, ids: list[int], max_new_tokens: int, sampling: Sampling, stop: Sequence[str],
                eos_token_ids: Sequence[int] | None, text: bool) -> Iterator[Token]:  # fmt: skip
        tokenizer = self.tokenizer if text or stop or self.has_tokenizer else None
        if eos_token_ids is None:
            eos_token_ids = tokenizer.special.eos if tokenizer is not None else ()
        tokens, room = decode_stream(self.model, np.array([ids], np.int64), max_new_tokens, step_model=self.step_model,
                                     cache_names=self.cache_names, choose=chooser(sampling, ids))  # fmt: skip
        return _texts(tokens, room, max_new_tokens, tokenizer, set(eos_token_ids), tuple(stop))


def _models(model, target, options: dict) -> tuple:
    """``(model, step_model, folder)`` for :class:`Generator`: built, loaded or as given; ``folder``
    is where the tokenizer is looked for (``None`` for models given)."""
    if isinstance(model, tuple):
        return (*model, None)
    if not isinstance(model, str | Path):
        return model, None, None
    path = model_path(model)
    folder = path if path.is_dir() else path.parent
    if path.is_dir():
        return (*load_decoder(path), folder)
    if path.suffix == ".onnx":
        return (*build_decoder(path, target, **options), folder)
    from .compiled import load

    return load(path), None, folder


def _texts(tokens: Tokens, room: int, wanted: int, tokenizer: Tokenizer | None, eos: set[int],
           stops: tuple[str, ...]) -> Iterator[Token]:  # fmt: skip
    """:class:`Token` of each of ``tokens`` (``[1]`` each) with its text, the stop strings held back."""
    stream, held = (tokenizer.stream() if tokenizer is not None else None), ""
    for made, (token, seconds) in enumerate(tokens, 1):
        id_ = int(token[0])
        finish = "eos" if id_ in eos else "length" if made == wanted else "limit" if made == room else None
        text = held + (stream.push(id_) if stream is not None else "")
        if finish is not None and stream is not None:
            text += stream.flush()
        text, held, stopped = split_stop(text, stops)
        if stopped:
            finish = "stop"
        elif finish is not None:
            text, held = text + held, ""
        yield Token(id_, text, seconds, finish)
        if finish is not None:
            return
