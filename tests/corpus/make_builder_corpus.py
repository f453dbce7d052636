"""Add onnxruntime-genai model-builder graphs to the ONNX corpus under ``tests/corpus``.

Saves small random-init ``transformers`` Llama and Qwen2 checkpoints (the corpus config, GQA 4/2,
Qwen2's q/k/v biases drawn nonzero as in a trained model) with a 256-word tokenizer, and runs
``python -m onnxruntime_genai.models.builder -p int4 -e cpu`` on them: opset 22 graphs with
``MatMulNBits`` (packed QKV, ``accuracy_level=4``), ``GroupQueryAttention`` (``do_rotary=1``),
``SkipSimplifiedLayerNormalization`` and ``SimplifiedLayerNormalization``. A third graph is the
builder's float graph (``-p fp32``) quantized to 2 bits by ``MatMulNBitsQuantizer``. Manifest entries
are merged into ``manifest.json``.

Needs torch, transformers, onnxruntime-genai, onnx, onnxruntime (README.md, "Corpus"). Run::

    python tests/corpus/make_builder_corpus.py [--out tests/corpus]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    out_dir = Path(args.out)
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
