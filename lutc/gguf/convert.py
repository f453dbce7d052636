"""``lutc convert MODEL.gguf -o DIR``: a GGUF decoder as a model folder that ONNX Runtime,
onnxruntime-genai and lutc all read (``model.onnx`` + ``model.onnx.data``, ``genai_config.json``,
``tokenizer.json``, ``tokenizer_config.json``); :func:`converted` keeps one per GGUF in a cache."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import LutcError
from .graph import write_model
from .read import GgufFile, open_gguf
from .tokenizer import rebuilt, specials, tokenizer_config, tokenizer_json

MODEL_FILE = "model.onnx"
CACHE_ENV = "LUTC_CACHE"
"""Environment variable naming lutc's cache folder (default ``~/.cache/lutc``)."""
CONVERTER_VERSION = 1
"""Bumped when the converter's output changes, so that cached conversions are made again."""


@dataclass(frozen=True)
class Conversion:
    """What :func:`convert` wrote: the folder, the GGUF tensors requantized (name and type), whether a
    tokenizer was written, and the seconds it took."""

    folder: Path
    requantized: tuple[str, ...]
    tokenizer: bool
    seconds: float

    @property
    def model(self) -> Path:
        return self.folder / MODEL_FILE

    def describe(self) -> str:
        kept = "all matmul weights carried over exactly" if not self.requantized else (
            f"{len(self.requantized)} tensors requantized by lutc's RTN: {', '.join(self.requantized)}")  # fmt: skip
        tokenizer = "with" if self.tokenizer else "without"
        return f"wrote {self.model} {tokenizer} a tokenizer in {self.seconds:.1f} s; {kept}"


def cache_dir() -> Path:
    """lutc's cache folder: ``$LUTC_CACHE``, else ``~/.cache/lutc``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lutc")


def convert(path: str | Path, out: str | Path, *, tokenizer: bool | None = True) -> Conversion:
    """Convert the GGUF decoder ``path`` into the folder ``out`` (created; files there are replaced).
    ``tokenizer``: also write its tokenizer files (True: a :class:`ModelError` for a vocabulary lutc
    does not rebuild; None: where lutc rebuilds it). Tensors that ``MatMulNBits`` cannot hold exactly
    are requantized, with a warning naming them."""
    start = time.perf_counter()
    model = open_gguf(path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer is None:
        tokenizer = rebuilt(model)
    if tokenizer:
        _write_json(out / "tokenizer.json", tokenizer_json(model))
        _write_json(out / "tokenizer_config.json", tokenizer_config(model))
    requantized = tuple(write_model(model, out / MODEL_FILE))
    _write_json(out / "genai_config.json", genai_config(model))
    if requantized:
        warnings.warn(f"{model.path.name}: {len(requantized)} tensors have GGUF types MatMulNBits cannot hold; "
                      f"requantized by lutc's RTN: {', '.join(requantized)}", stacklevel=2)  # fmt: skip
    return Conversion(out, requantized, tokenizer, time.perf_counter() - start)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def genai_config(model: GgufFile) -> dict:
    """onnxruntime-genai's ``genai_config.json`` for the converted decoder (the builder's fields)."""
    hyper, special = model.hyper, specials(model)
    decoder = {"session_options": {"log_id": "onnxruntime-genai", "provider_options": []}, "filename": MODEL_FILE,
               "head_size": hyper.head_dim, "hidden_size": hyper.hidden,
               "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                          "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
               "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                           "present_value_names": "present.%d.value"},
               "num_attention_heads": hyper.heads, "num_hidden_layers": hyper.layers,
               "num_key_value_heads": hyper.kv_heads}  # fmt: skip
    eos = list(special.eos) if len(special.eos) > 1 else special.eos[0] if special.eos else None
    config = {"bos_token_id": special.bos, "context_length": hyper.context, "decoder": decoder, "eos_token_id": eos,
              "pad_token_id": special.pad if special.pad is not None else special.eos[0] if special.eos else None,
              "type": "llama" if hyper.arch == "mistral" else hyper.arch,
              "vocab_size": int(model.tensor("token_embd.weight").shape[1])}  # fmt: skip
    search = {"diversity_penalty": 0.0, "do_sample": False, "early_stopping": True, "length_penalty": 1.0,
              "max_length": hyper.context, "min_length": 0, "no_repeat_ngram_size": 0, "num_beams": 1,
              "num_return_sequences": 1, "past_present_share_buffer": True, "repetition_penalty": 1.0,
              "temperature": 1.0, "top_k": 1, "top_p": 1.0}  # fmt: skip
    return {"model": {k: v for k, v in config.items() if v is not None}, "search": search}


def converted(path: str | Path) -> Path:
    """The model folder of the GGUF ``path`` in :func:`cache_dir` (``gguf/<stem>-<key>``), converted
    on first use (its tokenizer where lutc rebuilds it); the key follows the file's path, size and
    modification time and :data:`CONVERTER_VERSION`."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as err:
        raise LutcError(f"{path}: cannot read the GGUF model: {err.strerror}") from None
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{CONVERTER_VERSION}".encode()).hexdigest()
    folder = cache_dir() / "gguf" / f"{path.stem}-{key[:12]}"
    if (folder / "genai_config.json").is_file():
        return folder
    partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
    try:
        convert(path, partial, tokenizer=None)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if folder.exists():  # another process converted it meanwhile
        shutil.rmtree(partial, ignore_errors=True)
    else:
        partial.rename(folder)
    return folder
