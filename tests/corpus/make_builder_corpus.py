"""Add onnxruntime-genai model-builder graphs to the ONNX corpus under ``tests/corpus``.

Saves small random-init ``transformers`` Llama and Qwen2 checkpoints (the corpus config, GQA 4/2,
Qwen2's q/k/v biases drawn nonzero as in a trained model) with a 256-word tokenizer, and runs
``python -m onnxruntime_genai.models.builder -p int4 -e cpu`` on them: opset 22 graphs with
``MatMulNBits`` (packed QKV, ``accuracy_level=4``), ``GroupQueryAttention`` (``do_rotary=1``),
``SkipSimplifiedLayerNormalization`` and ``SimplifiedLayerNormalization``. A third graph is the
builder's float graph (``-p fp32``) quantized to 2 bits by ``MatMulNBitsQuantizer``. Manifest entries
are merged into ``manifest.json``.

``--families``: one random-init checkpoint per model family (:data:`FAMILIES`: Llama-3.2, Qwen2.5, Qwen3,
Phi-3-mini, Phi-4-mini, Mistral, Gemma-2, Gemma-3, Granite, OLMo-2, SmolLM3, gpt-oss) at 2 layers and
hidden 128 with the family's attention and rotary options, built ``-p int4 -e cpu`` and in a few variants
(:data:`FAMILY_BUILDS`) into ``families/<stem>/``, with ``families/manifest.json``: per build its graph
features (attention attributes and wired inputs, MoE ops, If nodes, weight bits), input recipes, or the
builder's error where it fails (``tests/test_families.py``, README.md's family table).

Needs torch, transformers, onnxruntime-genai, onnx, onnxruntime (README.md, "Corpus"). Run::

    python tests/corpus/make_builder_corpus.py [--out tests/corpus]
    python tests/corpus/make_builder_corpus.py --families [--only STEM ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
import safetensors.torch
import torch
import transformers
from onnxruntime.quantization import QuantFormat
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
from tokenizers import Tokenizer, models, pre_tokenizers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_corpus import HIDDEN, INTER, LAYERS, MAX_POS, SEED, count_matmuls, ort_check

VOCAB = 512
"""Not the corpus's 256: the builder takes every Linear whose width is the vocabulary's for the LM
head (``has_lm_head``), so with vocab = hidden it wired o_proj's layer into the logits."""

HEADS, KV_HEADS, HEAD_SIZE = 4, 2, HIDDEN // 4
BUILDS = [  # (file stem, family, builder precision, 2-bit requantization block or None)
    ("llama_genai_int4", "llama", "int4", None),
    ("qwen2_genai_int4", "qwen2", "int4", None),
    ("llama_genai_fp32_q2b32s", "llama", "fp32", 32),
]
# (batch, seq, past): a decode step, and a batch-2 prompt with empty past tensors.
PRIMARY, ALT = (1, 1, 8), (2, 7, 0)


CORPUS_CONFIG = {
    "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": INTER, "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "max_position_embeddings": MAX_POS,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
}  # fmt: skip


def save_checkpoint(family: str, out: Path, settings: dict | None = None) -> transformers.PretrainedConfig:
    """A random-init checkpoint (``settings``: ``transformers`` config fields, the corpus's by
    default) and a word-level tokenizer the builder can read."""
    torch.manual_seed(SEED)
    settings = settings or CORPUS_CONFIG
    config = transformers.LlamaConfig(**settings) if family == "llama" else transformers.Qwen2Config(**settings)
    model_class = transformers.LlamaForCausalLM if family == "llama" else transformers.Qwen2ForCausalLM
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, settings.get("dtype", "float32")))  # a 3 B checkpoint in bfloat16
    try:
        model = model_class(config).eval()
    finally:
        torch.set_default_dtype(previous)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0, 0.5)
    model.save_pretrained(out)
    vocab = settings["vocab_size"]
    words = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=words, unk_token="t0", bos_token="t1", eos_token="t2")
    fast.save_pretrained(out)
    return config


def run_builder(
    checkpoint: Path, out: Path, precision: str, cache: Path, *, load: bool = True
) -> onnx.ModelProto | None:
    """Run the builder; return its model with the weights read in (``load=False``: leave it on disk)."""
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(checkpoint), "-o", str(out),
               "-p", precision, "-e", "cpu", "-c", str(cache)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    return onnx.load(str(out / "model.onnx")) if load else None  # the weights come in from model.onnx.data


def requantize(model: onnx.ModelProto, block: int, bits: int = 2) -> onnx.ModelProto:
    quantizer = MatMulNBitsQuantizer(
        model, bits=bits, block_size=block, is_symmetric=True, quant_format=QuantFormat.QOperator
    )
    quantizer.process()
    return quantizer.model.model


def feeds(batch: int, seq: int, past: int) -> dict[str, dict[str, Any]]:
    recipes: dict[str, dict[str, Any]] = {
        "input_ids": {"dtype": "int64", "kind": "ids", "high": VOCAB, "shape": [batch, seq]},
        "attention_mask": {"dtype": "int64", "kind": "ones", "shape": [batch, past + seq]},
    }
    for layer in range(LAYERS):
        for kind in ("key", "value"):
            shape = [batch, KV_HEADS, past, HEAD_SIZE]
            recipes[f"past_key_values.{layer}.{kind}"] = {"dtype": "float32", "kind": "normal", "shape": shape}
    return recipes


def entry_for(stem: str, family: str, precision: str, block: int | None, model: onnx.ModelProto) -> dict[str, Any]:
    genai = __import__("onnxruntime_genai")
    quantizer = f"builder -p {precision} -e cpu"
    quantizer += f", MatMulNBitsQuantizer bits=2 block={block} symmetric" if block else ""
    dtype = {1: "float32", 7: "int64"}
    return {
        "file": f"{stem}.onnx", "family": family, "exporter": f"onnxruntime-genai {genai.__version__} model builder",
        "dims": "named", "phase": "decode",
        "notes": "One graph for prompt and decode: the primary recipe is a decode step (past 8), the alt a batch-2 "
        "prompt with empty past tensors. The builder's MatMulNBits carry accuracy_level=4.",
        "quantizer": quantizer, "bits": 2 if block else 4, "block_size": block or 32, "symmetric": bool(block),
        "onnxruntime": ort.__version__, "transformers": transformers.__version__,
        "config": {"layers": LAYERS, "hidden": HIDDEN, "intermediate": INTER, "heads": HEADS, "kv_heads": KV_HEADS,
                   "vocab": VOCAB, "max_positions": MAX_POS, "seed": SEED},
        "inputs": {i.name: {"shape": [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim],
                            "dtype": dtype[i.type.tensor_type.elem_type]} for i in model.graph.input},
        "outputs": [o.name for o in model.graph.output],
        "feeds": feeds(*PRIMARY), "feeds_alt": feeds(*ALT),
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import}, "ir_version": model.ir_version,
        **count_matmuls(model),
        "contrib_ops": sorted({n.op_type for n in model.graph.node if n.domain == "com.microsoft"}),
        "op_types": dict(sorted(Counter(n.op_type for n in model.graph.node).items())),
    }  # fmt: skip


def make_one(stem: str, family: str, precision: str, block: int | None, out_dir: Path, tmp: Path) -> dict[str, Any]:
    checkpoint = tmp / f"{family}-hf"
    if not checkpoint.exists():
        save_checkpoint(family, checkpoint)
    model = run_builder(checkpoint, tmp / stem, precision, tmp / "cache")
    if block:
        model = requantize(model, block)
    path = out_dir / f"{stem}.onnx"
    onnx.save(model, str(path), save_as_external_data=False)
    entry = entry_for(stem, family, precision, block, model)
    entry["size_bytes"] = path.stat().st_size
    entry["ort_check"] = ort_check(str(path), entry)
    return entry


# ---- --families: one small checkpoint per model family, with the family's own attention and rotary options ----

FAMILY_DIR = "families"
"""Family builds go to ``<out>/families/<stem>/`` (``model.onnx`` with its weights inside, and the builder's
``genai_config.json``), listed in ``<out>/families/manifest.json``: a manifest of their own, so that
``test_corpus.py`` (every entry of ``manifest.json``, three builds each) does not take them in."""

FAMILY_BASE = {
    "vocab_size": VOCAB, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "max_position_embeddings": 128,
    "rms_norm_eps": 1e-6, "initializer_range": 0.1, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
}  # fmt: skip
"""Shared by every family: 2 layers, hidden 128, GQA 4/2 with head size 32, vocabulary 512 (no Linear but
the LM head is 512 wide), 128 positions. Weights drawn at std 0.1 (transformers' default is 0.02), so
attention logits reach a few units and softcaps and windows change the outputs measurably."""

WINDOW = 16
"""Sliding window of the windowed families: a 24-token prompt crosses it."""

# family -> (transformers model_type, what the checkpoint keeps of the real model, config fields over FAMILY_BASE)
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "llama32": ("llama", "Llama-3.2-1B: llama3 rotary scaling (factor 32, theta 5e5), tied embeddings", {
        "tie_word_embeddings": True,
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}),
    "qwen25": ("qwen2", "Qwen2.5-0.5B: q/k/v biases, theta 1e6, tied embeddings, use_sliding_window false", {
        "tie_word_embeddings": True, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
        "use_sliding_window": False}),
    "qwen3": ("qwen3", "Qwen3-0.6B: q/k RMSNorm per head, theta 1e6, tied embeddings", {
        "tie_word_embeddings": True, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}}),
    "phi3mini": ("phi3", f"Phi-3-mini-4k: MHA (4/4), fused qkv/gate_up, sliding_window {WINDOW} (2047 in the "
                 "real model), original = max positions (no LongRoPE); intermediate 384: a 512-wide gate_up would be "
                 "taken for the LM head", {
        "num_key_value_heads": 4, "intermediate_size": 384, "sliding_window": WINDOW,
        "original_max_position_embeddings": 128,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}}),
    "phi4mini": ("phi3", "Phi-4-mini: GQA 3/1 (24/8 in the real model) with head size 64 (hidden 192; Phi3Config "
                 "takes hidden / heads), partial_rotary_factor 0.75 (48 rotary dims: ORT's GQA wants half of them a "
                 "multiple of 8), LongRoPE (original 32 of 128 positions: the greedy test's 24 + 32 tokens cross "
                 "it; the hub config's legacy `type` key kept beside `rope_type`: the builder reads it), "
                 "sliding_window 262144 as in the real config, tied embeddings", {
        "hidden_size": 192, "intermediate_size": 384, "num_attention_heads": 3, "num_key_value_heads": 1,
        "head_dim": 64, "tie_word_embeddings": True, "sliding_window": 262144,
        "original_max_position_embeddings": 32, "partial_rotary_factor": 0.75,
        "rope_parameters": {"rope_type": "longrope", "type": "longrope", "rope_theta": 10000.0,
                            "partial_rotary_factor": 0.75, "original_max_position_embeddings": 32,
                            "short_factor": [round(1 + 0.1 * i, 2) for i in range(24)],
                            "long_factor": [round(1.15**i, 3) for i in range(24)]}}),
    "mistral": ("mistral", f"Mistral-7B-v0.1: sliding_window {WINDOW} (4096 in the real model)", {
        "sliding_window": WINDOW}),
    "gemma2": ("gemma2", f"Gemma-2: attn_logit_softcapping 50, final_logit_softcapping 30, query_pre_attn_scalar "
               f"24 (not head_dim: as Gemma-2-27B's), sliding_window {WINDOW} on layer 0, global layer 1, tied "
               "embeddings, gelu_pytorch_tanh", {
        "tie_word_embeddings": True, "sliding_window": WINDOW, "attn_logit_softcapping": 50.0,
        "final_logit_softcapping": 30.0, "query_pre_attn_scalar": 24,
        "layer_types": ["sliding_attention", "full_attention"]}),
    "gemma3": ("gemma3_text", f"Gemma-3: q/k norms, sliding_window {WINDOW} on layer 0 (rotary theta 1e4), "
               "global layer 1 (theta 1e6, linear factor 8), query_pre_attn_scalar 24, tied embeddings", {
        "tie_word_embeddings": True, "sliding_window": WINDOW, "query_pre_attn_scalar": 24,
        "layer_types": ["sliding_attention", "full_attention"],
        "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0}}}),
    "granite": ("granite", "Granite-3.0-2B: embedding_multiplier 12, attention_multiplier 1/64, residual_multiplier "
                "0.22, logits_scaling 8, tied embeddings", {
        "tie_word_embeddings": True, "embedding_multiplier": 12.0, "attention_multiplier": 0.015625,
        "residual_multiplier": 0.22, "logits_scaling": 8.0}),
    "olmo2": ("olmo2", "OLMo-2-1B: q/k RMSNorm over all heads, post-norms", {"num_key_value_heads": 4}),
    "smollm3": ("smollm3", "SmolLM3-3B: no rotary on layer 1 (no_rope_layers [1, 0]; every 4th layer in the real "
                "model), theta 2e6, tied embeddings", {
        "tie_word_embeddings": True, "no_rope_layers": [1, 0], "use_sliding_window": False,
        "rope_parameters": {"rope_type": "default", "rope_theta": 2000000.0}}),
    "gptoss": ("gpt_oss", f"gpt-oss-20b: MoE 4 experts top-2 (32 top-4 in the real model) stored as MXFP4 blocks "
               f"as on the hub, attention sinks, q/k/v/o biases, sliding_window {WINDOW} on layer 0 (128 in the real "
               "model), YaRN factor 32 over 4096 original positions (the builder's NTK ramp needs more than 201)", {
        "intermediate_size": 128, "num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": WINDOW,
        "attention_bias": True, "layer_types": ["sliding_attention", "full_attention"],
        "rope_parameters": {"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0, "beta_fast": 32.0,
                            "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 4096}}),
}  # fmt: skip

# (stem, family, builder -p, builder -e, --extra_options)
FAMILY_BUILDS: list[tuple[str, str, str, str, tuple[str, ...]]] = [
    *((family, family, "int4", "cpu", ()) for family in FAMILIES),
    ("llama32_cuda_fp16", "llama32", "fp16", "cuda", ()),
    ("llama32_cuda_int4", "llama32", "int4", "cuda", ()),
    ("qwen25_k_quant_mixed", "qwen25", "int4", "cpu", ("algo_config=k_quant_mixed",)),
    ("qwen25_int8_mixed", "qwen25", "int4", "cpu", ("matmul_mixed_precision=last_matmul:int8,mixed_layers:int8",)),
    ("gemma2_full_cache", "gemma2", "int4", "cpu", ("windowed_kv_cache=false",)),
    ("gptoss_full_cache", "gptoss", "int4", "cpu", ("windowed_kv_cache=false",)),
]
"""Every family at ``-p int4 -e cpu``; one CUDA fp16 build; two with 8-bit layers (the LM head and the
builder's "mixed" layers at 8 bits: k_quant, and the default RTN, whose graph ORT cannot load for a
tied-embedding model); and the two families whose local layers get a ring-buffer cache
(``sliding_window_cache=1``) again with ``windowed_kv_cache=false``: full-length concatenated caches,
``local_window_size`` alone."""

PROMPT_LENGTH, STEP_PAST = 24, 20
"""The prompt recipe (24 tokens, empty past) and the decode-step recipe (one token after 20 cached):
both longer than :data:`WINDOW`."""


def save_family(family: str, out: Path, settings: dict[str, Any] | None = None) -> None:
    """A random-init checkpoint of ``family`` (:data:`FAMILIES`) with a word-level tokenizer; ``settings``:
    the config's fields (default: :data:`FAMILY_BASE` with the family's own)."""
    model_type, _, family_settings = FAMILIES[family]
    torch.manual_seed(SEED)
    config = transformers.AutoConfig.for_model(model_type, **(settings or {**FAMILY_BASE, **family_settings}))
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    # Where the model scales its embeddings up (Gemma by sqrt(hidden), Granite's embedding_multiplier) or its
    # residual branches down (residual_multiplier), the random weights are drawn the other way, as training
    # leaves them: else the tied LM head reads the input embedding back and greedy decoding repeats one token.
    embedding_scale = getattr(config, "embedding_multiplier", None) or (
        config.hidden_size**0.5 if model_type.startswith("gemma") else 1.0
    )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or name.endswith("sinks"):
                parameter.normal_(0, 0.5)
            elif "norm" in name:  # norm weights 1 (or 0 where the model adds 1) would hide a dropped scale
                parameter.add_(torch.empty_like(parameter).uniform_(-0.3, 0.3))
            elif name.endswith("embed_tokens.weight"):
                parameter.div_(embedding_scale)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                parameter.div_(getattr(config, "residual_multiplier", 1.0))
        experts = mxfp4_experts(model) if model_type == "gpt_oss" else {}
    model.save_pretrained(out)
    if experts:  # the builder reads gpt-oss experts from the checkpoint's MXFP4 tensors only
        weights = out / "model.safetensors"
        safetensors.torch.save_file({**safetensors.torch.load_file(weights), **experts}, weights, {"format": "pt"})
    words = Tokenizer(models.WordLevel({f"t{i}": i for i in range(config.vocab_size)}, unk_token="t0"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=words, unk_token="t0", bos_token="t1", eos_token="t2")
    fast.save_pretrained(out)


FP4_VALUES = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def mxfp4_experts(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Random MXFP4 expert weights as gpt-oss's hub checkpoint stores them (``*_blocks`` ``[E, N, K/32, 16]``
    two e2m1 codes a byte, ``*_scales`` ``[E, N, K/32]`` e8m0 exponents); the model's float experts are set
    to the same values (``[E, K, N]``)."""
    generator = torch.Generator().manual_seed(SEED)
    tensors = {}
    for name, parameter in model.named_parameters():
        if not name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            continue
        experts, k, n = parameter.shape
        codes = torch.randint(0, 16, (experts, n, k // 32, 32), generator=generator, dtype=torch.uint8)
        scales = torch.randint(121, 124, (experts, n, k // 32), generator=generator, dtype=torch.uint8)
        values = FP4_VALUES[codes.long()] * torch.pow(2.0, scales.float() - 127.0).unsqueeze(-1)
        parameter.copy_(values.reshape(experts, n, k).transpose(1, 2))
        tensors[f"{name}_blocks"] = codes[..., 0::2] | (codes[..., 1::2] << 4)
        tensors[f"{name}_scales"] = scales
    return tensors


def builder_command(checkpoint: Path, out: Path, precision: str, ep: str, extra: tuple[str, ...], cache: Path):
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(checkpoint), "-o", str(out),
               "-p", precision, "-e", ep, "-c", str(cache)]  # fmt: skip
    return command + (["--extra_options", *extra] if extra else [])


def builder_error(stderr: str, checkpoint: Path) -> str:
    """The last line of the builder's traceback (the exception), the checkpoint's path left out."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1].strip().replace(str(checkpoint), "<checkpoint>") if lines else "(no output)"


def attribute_value(attribute: onnx.AttributeProto) -> Any:
    value = onnx.helper.get_attribute_value(attribute)
    return value.decode() if isinstance(value, bytes) else value


GQA_INPUTS = ["query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length", "cos_cache",
              "sin_cache", "position_ids", "attention_bias", "head_sink", "k_scale", "v_scale", "q_norm_weight",
              "k_norm_weight"]  # fmt: skip
"""GroupQueryAttention's inputs in order (ORT 1.32 contrib op schema)."""


def graph_features(model: onnx.ModelProto) -> dict[str, Any]:
    """What the family test and the README table need to know of the graph: per attention node its
    attributes and the optional inputs it is wired to, the MoE ops, the If nodes, the weight bits."""
    attention = []
    for node in model.graph.node:
        if node.op_type in ("GroupQueryAttention", "MultiHeadAttention", "PagedAttention"):
            wired = [GQA_INPUTS[i] for i, name in enumerate(node.input) if name and i >= 7]
            attention.append({"node": node.name, "op": node.op_type, "inputs": wired,
                              "attributes": {a.name: attribute_value(a) for a in node.attribute}})  # fmt: skip
    nbits = [n for n in model.graph.node if n.op_type in ("MatMulNBits", "GatherBlockQuantized")]
    bits = Counter(next((a.i for a in n.attribute if a.name == "bits"), 4) for n in nbits)
    return {
        "attention": attention,
        "moe_ops": sorted({n.op_type for n in model.graph.node if n.op_type in ("MoE", "QMoE")}),
        "if_nodes": [n.name for n in model.graph.node if n.op_type == "If"],
        "weight_bits": {str(b): count for b, count in sorted(bits.items())},
        "io_dtype": onnx.helper.tensor_dtype_to_np_dtype(
            next(o for o in model.graph.output if o.name == "logits").type.tensor_type.elem_type).name,
    }  # fmt: skip


def family_feeds(
    model: onnx.ModelProto, batch: int, seq: int, past: int, window: int | None, head_size: int
) -> dict[str, Any]:
    """A recipe for every input of a builder graph. A cache whose length the graph names ``..sliding..``
    (``sliding_window_cache=1``: a ring buffer) is ``window`` long at every step, the empty prompt's too
    (ORT: "KV cache capacity (0) must be at least local_window_size")."""
    dtypes = {1: "float32", 7: "int64", 10: "float16"}
    recipes: dict[str, dict[str, Any]] = {}
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        dtype = dtypes[value.type.tensor_type.elem_type]
        if value.name == "input_ids":
            recipes[value.name] = {"dtype": dtype, "kind": "ids", "high": VOCAB, "shape": [batch, seq]}
        elif value.name == "attention_mask":
            recipes[value.name] = {"dtype": dtype, "kind": "ones", "shape": [batch, past + seq]}
        elif value.name == "position_ids":
            recipes[value.name] = {"dtype": dtype, "kind": "positions", "start": past, "shape": [batch, seq]}
        elif value.name.startswith("past_key_values."):
            length = window if "sliding" in (dims[2].dim_param or "") and window else past
            shape = [batch, dims[1].dim_value, length, head_size]  # the graph names it kv_cache_dim
            recipes[value.name] = {"dtype": dtype, "kind": "normal", "shape": shape}
        else:
            raise ValueError(f"no recipe for the input {value.name!r}")
    return recipes


def family_entry(stem: str, family: str, precision: str, ep: str, extra: tuple[str, ...], command: list[str]):
    genai = __import__("onnxruntime_genai")
    model_type, keeps, settings = FAMILIES[family]
    cache = command.index("-c")
    flags = " ".join(command[command.index("-p") : cache] + command[cache + 2 :])
    return {
        "stem": stem, "family": family, "model_type": model_type, "keeps": keeps,
        "builder": f"onnxruntime-genai {genai.__version__} builder {flags}", "precision": precision, "ep": ep,
        "extra_options": list(extra), "transformers": transformers.__version__, "onnxruntime": ort.__version__,
        "config": {**FAMILY_BASE, **settings}, "seed": SEED,
    }  # fmt: skip


def make_family(stem: str, family: str, precision: str, ep: str, extra: tuple[str, ...], out_dir: Path,
                tmp: Path) -> dict[str, Any]:  # fmt: skip
    """Build one family graph into ``out_dir/<stem>/``; a build the builder refuses is an entry with its error."""
    checkpoint = tmp / f"{family}-hf"
    if not checkpoint.exists():
        save_family(family, checkpoint)
    command = builder_command(checkpoint, tmp / stem, precision, ep, extra, tmp / "cache")
    entry = family_entry(stem, family, precision, ep, extra, command)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        entry["build_error"] = builder_error(done.stderr, checkpoint)
        return entry
    model = onnx.load(str(tmp / stem / "model.onnx"))
    # The builder appends the `git rev-parse HEAD` of a repository holding its package (a venv inside this
    # checkout: this repository's HEAD): left out, so that the graphs do not change with every commit.
    model.producer_version = model.producer_version.split("+")[0]
    head = next(n for n in model.graph.node if n.name.startswith("/lm_head/MatMul"))
    if "final_norm" not in head.input[0]:  # the builder takes a Linear as wide as the vocabulary for the head
        raise ValueError(f"{stem}: the builder's LM head reads {head.input[0]}, not the final norm")
    folder = out_dir / stem
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save(model, str(path), save_as_external_data=False)
    genai_config = json.loads((tmp / stem / "genai_config.json").read_text())
    (folder / "genai_config.json").write_text(json.dumps(genai_config, indent=1) + "\n")
    decoder = genai_config["model"]["decoder"]
    window = decoder.get("sliding_window", {}).get("window_size")
    entry.update({
        "file": f"{stem}/model.onnx", "size_bytes": path.stat().st_size,
        "sliding_window": decoder.get("sliding_window"), "context_length": genai_config["model"]["context_length"],
        "inputs": {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
                   for i in model.graph.input},
        "outputs": [o.name for o in model.graph.output],
        "feeds": family_feeds(model, 1, PROMPT_LENGTH, 0, window, decoder["head_size"]),
        "feeds_alt": family_feeds(model, 1, 1, STEP_PAST, window, decoder["head_size"]),
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        **graph_features(model), **count_matmuls(model),
        "contrib_ops": sorted({n.op_type for n in model.graph.node if n.domain == "com.microsoft"}),
        "op_types": dict(sorted(Counter(n.op_type for n in model.graph.node).items())),
    })  # fmt: skip
    try:
        entry["ort_check"] = ort_check(str(path), entry)
    except Exception as error:  # a graph ORT's CPU EP cannot load or run: recorded, not kept
        message = str(error).strip().splitlines()[0].replace(str(folder), "<folder>")
        entry["ort_error"] = f"{type(error).__name__}: {message}"
        for kept in ("file", "size_bytes", "feeds", "feeds_alt"):
            del entry[kept]
        shutil.rmtree(folder)
    return entry


def make_families(out_dir: Path, only: list[str] | None) -> None:
    folder = out_dir / FAMILY_DIR
    manifest = folder / "manifest.json"
    entries = {e["stem"]: e for e in json.loads(manifest.read_text())} if manifest.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for build in FAMILY_BUILDS:
            if only and build[0] not in only:
                continue
            entry = make_family(*build, folder, Path(tmp))
            entries[entry["stem"]] = entry
            status = entry.get("build_error") or entry.get("ort_error") or f"{entry['size_bytes'] / 1e6:.2f} MB"
            print(f"{entry['stem']}: {status}", flush=True)
    order = [b[0] for b in FAMILY_BUILDS]
    manifest.write_text(json.dumps(sorted(entries.values(), key=lambda e: order.index(e["stem"])), indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    parser.add_argument("--families", action="store_true", help="build the family graphs (families/) instead")
    parser.add_argument("--only", nargs="+", help="with --families: these stems only (FAMILY_BUILDS)")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    out_dir = Path(args.out)
    if args.families:
        make_families(out_dir, args.only)
        return
    manifest = out_dir / "manifest.json"
    entries = {e["file"]: e for e in json.loads(manifest.read_text())} if manifest.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for build in BUILDS:
            entry = make_one(*build, out_dir, Path(tmp))
            entries[entry["file"]] = entry
            print(f"{entry['file']}: {entry['size_bytes'] / 1e6:.2f} MB lut={entry['lut_matmuls']} "
                  f"contrib={entry['contrib_ops']}", flush=True)  # fmt: skip
    manifest.write_text(json.dumps(list(entries.values()), indent=1) + "\n")


if __name__ == "__main__":
    main()
