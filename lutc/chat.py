"""Chat templates: a model's Jinja template rendered in a sandboxed environment set up as
transformers sets it up (``apply_chat_template``). ``jinja2`` is imported on first use."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime

from .errors import LutcError


def messages(prompt: str, system: str | None = None) -> list[dict[str, str]]:
    """A one-turn conversation: the ``system`` message (if any), then the user's ``prompt``."""
    turns = [{"role": "system", "content": system}] if system is not None else []
    return [*turns, {"role": "user", "content": prompt}]


def render_chat(template: str, conversation: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True,
                special: Mapping[str, str] | None = None) -> str:  # fmt: skip
    """``template`` rendered for ``conversation`` with ``add_generation_prompt`` and the special
    tokens' text (``bos_token``, ``eos_token``, ...); a :class:`LutcError` where it fails or raises."""
    import jinja2

    try:
        compiled = _environment().from_string(template)
        return compiled.render(messages=list(conversation), add_generation_prompt=add_generation_prompt,
                               **(special or {}))  # fmt: skip
    except jinja2.TemplateError as err:
        raise LutcError(f"the chat template failed: {err}") from None


def _raise_exception(message: str):
    import jinja2

    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    """transformers' ``tojson``: ``json.dumps`` (no HTML escaping, unlike Jinja's own)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@functools.cache
def _environment():
    """An immutable sandbox (templates cannot reach Python internals or change their inputs) with
    transformers' options, filter and globals."""
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env
