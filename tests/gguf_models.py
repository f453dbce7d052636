"""Tiny GGUF decoders written with ``gguf``'s ``GGUFWriter`` for the GGUF tests: random weights in
the block types lutc carries over exactly (Q4_0, Q4_1, Q8_0, Q4_K) and one it requantizes (F16), a
byte-level BPE vocabulary trained here with ``tokenizers`` (the reference tokenizer), ChatML."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, CONTEXT = 64, 256, 2, 4, 2, 128
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")  # fmt: skip
TEXT = ("The quick brown fox jumps over the lazy dog. Lookup tables turn low-bit matmuls into shuffles; "
        "the tokenizer learns merges of frequent byte pairs, 12345 digits and unicode: héllo wörld ✓.")  # fmt: skip
TYPES = {  # per layer: the GGUF type of each projection (layer 1's v differs: q, k, v not packed there)
    "attn_q": (T.Q4_0, T.Q4_0), "attn_k": (T.Q4_0, T.Q4_0), "attn_v": (T.Q4_0, T.Q8_0),
    "attn_output": (T.Q4_1, T.Q4_1), "ffn_gate": (T.Q8_0, T.Q8_0), "ffn_up": (T.F16, T.Q4_0),
    "ffn_down": (T.Q4_K, T.Q4_K),
}  # fmt: skip
SHAPES = {"attn_q": (HIDDEN, HIDDEN), "attn_k": (HIDDEN // 2, HIDDEN), "attn_v": (HIDDEN // 2, HIDDEN),
          "attn_output": (HIDDEN, HIDDEN), "ffn_gate": (INTER, HIDDEN), "ffn_up": (INTER, HIDDEN),
          "ffn_down": (HIDDEN, INTER)}  # fmt: skip


def reference_tokenizer() -> Tokenizer:
    """A byte-level BPE trained on :data:`TEXT` (all 256 bytes, :data:`SPECIALS` first)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=360, special_tokens=list(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tokenizer.train_from_iterator([TEXT] * 4, trainer)
    return tokenizer


def q4_k(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Random Q4_K rows ``[n, k / 256 * 144]`` (no quantizer in ``gguf``): fp16 ``d``, ``dmin`` sized
    for weights of about ``1/sqrt(k)``, random 6-bit scales and mins, random codes."""
    blocks = rng.integers(0, 256, (n, k // 256, 144), dtype=np.uint8)
    d = (rng.uniform(0.5, 1.5, (n, k // 256, 1)) / (40 * 15 * np.sqrt(k))).astype(np.float16)
    blocks[..., 0:2] = d.view(np.uint8)
    blocks[..., 2:4] = (d * np.float16(7.5)).view(np.uint8)
    return blocks.reshape(n, -1)


def encode(rng: np.random.Generator, kind: T, n: int, k: int) -> np.ndarray:
    if kind == T.Q4_K:
        return q4_k(rng, n, k)
    values = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
    return values.astype(np.float16) if kind == T.F16 else gguf.quants.quantize(values, kind)


@dataclass
class TinyGguf:
    """What :func:`write_tiny` wrote: the path and each tensor's GGUF type."""

    path: Path
    types: dict[str, T] = field(default_factory=dict)


def write_tiny(path: Path, arch: str = "llama", *, seed: int = 0, tied: bool = True, biases: bool = False,
               tokenizer_model: str = "gpt2", pre: str = "gpt2", extra: dict | None = None) -> TinyGguf:  # fmt: skip
    """A 2-layer decoder GGUF at ``path`` (``extra``: tensors to add or replace, name -> array)."""
    rng = np.random.default_rng(seed)
    tokenizer = reference_tokenizer()
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    merges = [" ".join(pair) for pair in _merges(tokenizer)]
    writer = gguf.GGUFWriter(path, arch)
    _metadata(writer, arch)
    writer.add_tokenizer_model(tokenizer_model)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list([t for t, _ in vocab])
    writer.add_token_types([3 if t in SPECIALS else 1 for t, _ in vocab])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML)
    tiny = TinyGguf(path)
    tensors = _tensors(rng, len(vocab), tied, biases, tiny.types) | (extra or {})
    for name, (data, kind) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=kind if kind not in (T.F32, T.F16) else None)
        tiny.types[name] = kind
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tiny


def _merges(tokenizer: Tokenizer) -> list[tuple[str, str]]:
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]


def _metadata(writer: gguf.GGUFWriter, arch: str) -> None:
    writer.add_block_count(LAYERS)
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(INTER)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)


def _tensors(rng: np.random.Generator, vocab: int, tied: bool, biases: bool, types: dict) -> dict:
    """name -> (data, type): every tensor of the decoder, norms float32 near 1."""
    norm = lambda: ((1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32), T.F32)  # noqa: E731
    tensors = {"token_embd.weight": (encode(rng, T.Q8_0, vocab, HIDDEN), T.Q8_0), "output_norm.weight": norm()}
    if not tied:
        tensors["output.weight"] = (encode(rng, T.Q4_0, vocab, HIDDEN), T.Q4_0)
    for i in range(LAYERS):
        tensors[f"blk.{i}.attn_norm.weight"] = norm()
        tensors[f"blk.{i}.ffn_norm.weight"] = norm()
        for part, kinds in TYPES.items():
            tensors[f"blk.{i}.{part}.weight"] = (encode(rng, kinds[i], *SHAPES[part]), kinds[i])
        for part in ("attn_q", "attn_k", "attn_v") if biases else ():
            bias = 0.5 * rng.standard_normal(SHAPES[part][0])
            tensors[f"blk.{i}.{part}.bias"] = (bias.astype(np.float32), T.F32)
    return tensors
