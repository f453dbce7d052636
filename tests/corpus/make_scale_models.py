"""Make the real-size decoders ``python -m lutc.bench scale`` measures (0.7-2 GB of external data,
so they are not committed): random-init ``transformers`` checkpoints at the shapes of
Llama-3.2-1B and Llama-3.2-3B, through onnxruntime-genai's model builder (``-p int4 -e cpu``).

- ``llama1b``: hidden 2048, 16 layers, GQA 32/8, intermediate 8192, vocabulary 49152, tied
  embeddings (1.07 B parameters);
- ``llama3b``: hidden 3072, 28 layers, GQA 24/8, intermediate 8192, vocabulary 128256, tied
  embeddings (3.2 B parameters; the checkpoint is saved in bfloat16 to halve its RAM and disk).

and a windowed pair at SmolLM2-135M's scale, two builds of one random-init Gemma-2 checkpoint (Gemma-2
is the builder family whose graph keeps the window: Phi-3's and Mistral's configs have no
``layer_types``, and their graphs get ``local_window_size=-1``): 30 layers, hidden 576, GQA 9/3 with
head size 64, intermediate 1536, vocabulary 49152, tied embeddings, ``sliding_window`` 128 on every
other layer (``layer_types`` sliding/full), Gemma-2's softcaps (attention 50, final 30) and
``query_pre_attn_scalar`` = head size, 2048 positions, weights drawn as the family corpus draws them
(``make_builder_corpus.save_family``):

- ``gemma2s_window``: ``-p int4 -e cpu``; the local layers get a window-sized ring-buffer cache
  (``local_window_size=128``, ``sliding_window_cache=1``);
- ``gemma2s_full_cache``: the same with ``--extra_options windowed_kv_cache=false``: full-length
  concatenated caches, ``local_window_size=128`` alone.

and ``llama1b_w2``, the 2-bit counterpart of ``llama1b`` (``llama1b`` and its checkpoint are made
first where ``OUT`` lacks them): a copy of the ``llama1b`` folder in which every ``MatMulNBits`` (the
81 projections: packed q/k/v, o, gate, up, down, and the LM head) is requantized by ``lutc.quant``
to ``bits=2``, block 32, asymmetric (a uint8 zero point per block, packed 2-bit as ORT reads them:
``IntFormat(2, 32, symmetric=False)``, round-to-nearest min/max) **from the float checkpoint**
``OUT/llama1b-hf``, not from the int4 weights: the builder's packed ``qkv_proj`` is the checkpoint's
q, k and v stacked along N, and ``lm_head`` is ``embed_tokens`` (tied). Each mapping is checked
against the builder's int4 weight (relative distance <= :data:`MAPPING_TOLERANCE`). The new weights
get new initializer names (``<B>_Q2``, ``_Q2_scales``, ``_Q2_zp``); node names, ``accuracy_level``
(4) and every other node and initializer stay as the builder wrote them, so the embedding
(``GatherBlockQuantized``, reading the int4 LM-head tensor through a ``Reshape``) stays 4-bit. One
``model.onnx.data``; ``genai_config.json`` and the tokenizer files are copied. With ``--llama-cpp``,
also ``OUT/llama1b-q2_k.gguf`` and ``OUT/llama1b-tq2_0.gguf`` (:data:`W2_GGUF`): ``llama-quantize``
``Q2_K`` and ``TQ2_0`` of an f16 GGUF converted again from the checkpoint (as for Q4_0, then removed).

The builder models land in ``OUT/<name>/`` as the builder writes them (``model.onnx``, ``model.onnx.data``,
``genai_config.json``, tokenizer files), with the checkpoint in ``OUT/<name>-hf/``. With
``--llama-cpp DIR`` (the folder ``../shared/tools/build_llamacpp.sh`` prints), also
``OUT/<name>-q4_0.gguf``: llama.cpp's ``convert_hf_to_gguf.py`` (f16) then ``llama-quantize Q4_0``;
the checkpoint's word-level test tokenizer is unknown to llama.cpp, so its BPE pre-tokenizer check
is answered "gpt-2" and one merge is added (the vocabulary does not change a timing). Same
environment as ``make_builder_corpus.py``, plus ``pip install DIR/gguf-py sentencepiece``. Run::

    python tests/corpus/make_scale_models.py OUT_DIR [--only llama1b] [--llama-cpp DIR]
    python -m lutc.bench scale OUT_DIR/llama1b --gguf OUT_DIR/llama1b-q4_0.gguf --llama-bench DIR/build/bin/llama-bench
    python tests/corpus/make_scale_models.py OUT_DIR --only gemma2s_window --only gemma2s_full_cache
    python tests/corpus/make_scale_models.py OUT_DIR --only llama1b_w2 [--llama-cpp DIR]
    python -m lutc.bench generate OUT_DIR/gemma2s_window/model.onnx --genai-dir OUT_DIR/gemma2s_window \\
        --prompt 200 --tokens 64 --threads 1
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_builder_corpus import builder_command, run_builder, save_checkpoint, save_family

from lutc.quant import IntFormat, dequantize, quantize
from lutc.quant.onnx_convert import matmul_nbits_from_node, to_matmul_nbits

LLAMA_1B = {
    "vocab_size": 49152, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
    "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True, "rope_theta": 500000.0,
}  # fmt: skip
LLAMA_3B = {
    **LLAMA_1B, "vocab_size": 128256, "hidden_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 24,
    "dtype": "bfloat16",
}  # fmt: skip
MODELS = {"llama1b": LLAMA_1B, "llama3b": LLAMA_3B}

GEMMA2_SMOL = {
    "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
    "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "tie_word_embeddings": True,
    "sliding_window": 128, "layer_types": ["sliding_attention", "full_attention"] * 15,
    "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "query_pre_attn_scalar": 64,
}  # fmt: skip
"""Gemma-2 layers at SmolLM2-135M's scale (134.5 M parameters, 28.3 M of them the tied embedding)."""
WINDOWED = {"gemma2s_window": (), "gemma2s_full_cache": ("windowed_kv_cache=false",)}
"""The windowed pair: builder ``--extra_options`` per name, one checkpoint (``OUT/gemma2s-hf``)."""

CONVERT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    import gguf
    import conversion.base as base
    import convert_hf_to_gguf

    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
    loaded = gguf.SpecialVocab.__init__

    def with_a_merge(self, *args, **kwargs):
        loaded(self, *args, **kwargs)
        self.merges = self.merges or ["t 0"]

    gguf.SpecialVocab.__init__ = with_a_merge
    sys.argv = ["convert_hf_to_gguf.py", *sys.argv[2:]]
    convert_hf_to_gguf.main()
    """
)
"""llama.cpp's converter, told what it needs to take a word-level test tokenizer."""

W2_FORMAT = IntFormat(2, 32, symmetric=False)
"""The 2-bit requantization: block 32, a uint8 zero point per block (packed 2-bit, as ORT reads them)."""
W2_MODELS = {"llama1b_w2": "llama1b"}
"""2-bit builds: name -> the builder folder (``OUT/<base>``, checkpoint ``OUT/<base>-hf``) they come from."""
W2_GGUF = {"q2_k": "Q2_K", "tq2_0": "TQ2_0"}
"""The 2-bit GGUFs made beside a 2-bit build: ``OUT/<base>-<suffix>.gguf`` -> ``llama-quantize`` type."""
MAPPING_TOLERANCE = 0.25
"""Largest relative Frobenius distance between a checkpoint weight and the builder's int4 weight it maps
to (4-bit block-32 rounding gives about 0.1; a wrong mapping about 1.4)."""
_PROJECTION = re.compile(r"/model/layers\.(\d+)/(attn|mlp)/(\w+)_proj/MatMul_Q4")


def make_gguf(llama_cpp: Path, checkpoint: Path, outs: dict[Path, str]) -> None:
    """GGUFs of ``checkpoint``, one per path -> ``llama-quantize`` type (through an f16 one, removed after)."""
    first = next(iter(outs))
    f16 = first.with_name(first.stem + "-f16.gguf")
    convert = [sys.executable, "-c", CONVERT, str(llama_cpp), str(checkpoint), "--outfile", str(f16)]
    run_tool([*convert, "--outtype", "f16"])
    quantize_bin = llama_cpp / "build" / "bin" / "llama-quantize"
    try:
        for out, kind in outs.items():
            run_tool([str(quantize_bin), str(f16), str(out), kind])
    finally:
        f16.unlink()


def run_tool(command: list[str]) -> None:
    """Run ``command``; a ``RuntimeError`` with the end of its output where it fails."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{Path(command[0]).name} exited {done.returncode}:\n{tail}")


def checkpoint_names(node_name: str) -> list[str]:
    """The checkpoint tensors whose rows, concatenated, are the weight of the builder's ``MatMulNBits``
    node ``node_name`` (packed QKV: q, k, v; the LM head is tied to the embedding)."""
    if node_name == "/lm_head/MatMul_Q4":
        return ["model.embed_tokens.weight"]
    match = _PROJECTION.fullmatch(node_name)
    if match is None:
        raise ValueError(f"no checkpoint weight known for MatMulNBits node {node_name!r}")
    layer, block, projection = match.groups()
    prefix = f"model.layers.{layer}.{'self_attn' if block == 'attn' else 'mlp'}"
    return [f"{prefix}.{p}_proj.weight" for p in (["q", "k", "v"] if projection == "qkv" else [projection])]


def check_mapping(node: onnx.NodeProto, weight: np.ndarray, tensors: dict[str, onnx.TensorProto]) -> float:
    """The relative distance of ``weight`` from the node's int4 weight; a ``ValueError`` past
    :data:`MAPPING_TOLERANCE` (the checkpoint tensor is not this node's)."""
    arrays = {name: numpy_helper.to_array(tensors[name]) for name in node.input[1:] if name}
    int4, _ = matmul_nbits_from_node(node, arrays)
    distance = float(np.linalg.norm(weight - dequantize(int4)) / np.linalg.norm(weight))
    if distance > MAPPING_TOLERANCE:
        raise ValueError(f"{node.name}: checkpoint weight is {distance:.2f} away from the int4 weight")
    return distance


def requantize_node(node: onnx.NodeProto, weight: np.ndarray) -> list[onnx.TensorProto]:
    """Point ``MatMulNBits`` ``node`` at new initializers holding ``weight`` in :data:`W2_FORMAT`
    (``<B>_Q2``, ``_Q2_scales``, ``_Q2_zp``: new names, since the embedding may share the old ones)
    and set ``bits``; return those initializers."""
    nbits = to_matmul_nbits(quantize(weight, W2_FORMAT))
    base = node.input[1].removesuffix("_Q4") + "_Q2"
    names = [base, base + "_scales", base + "_zp"]
    del node.input[1:]
    node.input.extend(names)
    for attribute in node.attribute:
        if attribute.name == "bits":
            attribute.i = W2_FORMAT.bits
    arrays = (nbits["b"], nbits["scales"], nbits["zero_points"])
    return [numpy_helper.from_array(array, name) for array, name in zip(arrays, names, strict=True)]


def requantize_graph(model: onnx.ModelProto, checkpoint: Path) -> float:
    """Requantize every ``MatMulNBits`` of ``model`` from the float ``checkpoint`` in place; drop the
    initializers no node reads any more. Returns the largest :func:`check_mapping` distance."""
    graph = model.graph
    tensors = {t.name: t for t in graph.initializer}
    new, worst = [], 0.0
    with safe_open(str(checkpoint / "model.safetensors"), "np") as weights:
        for node in graph.node:
            if node.op_type == "MatMulNBits":
                weight = np.concatenate([weights.get_tensor(n) for n in checkpoint_names(node.name)])
                worst = max(worst, check_mapping(node, weight.astype(np.float32), tensors))
                new += requantize_node(node, weight.astype(np.float32))
    read = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept + new)
    return worst


def make_w2(base: Path, checkpoint: Path, out: Path) -> None:
    """``out``: the builder folder ``base`` with its ``MatMulNBits`` weights requantized to 2 bits from
    ``checkpoint`` (:func:`requantize_graph`); its other files copied."""
    model = onnx.load(str(base / "model.onnx"))
    worst = requantize_graph(model, checkpoint)
    shutil.rmtree(out, ignore_errors=True)  # onnx appends to an existing data file
    out.mkdir(parents=True)
    for source in base.iterdir():
        if source.name not in ("model.onnx", "model.onnx.data"):
            shutil.copy2(source, out / source.name)
    onnx.save_model(model, str(out / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data")  # fmt: skip
    print(f"wrote {out} (checkpoint weights within {worst:.3f} of the int4 ones)", flush=True)


def make_windowed(name: str, out: Path) -> None:
    """Build ``name`` of :data:`WINDOWED` into ``out/name`` from the shared Gemma-2 checkpoint (made once)."""
    checkpoint = out / "gemma2s-hf"
    if not (checkpoint / "config.json").exists():
        save_family("gemma2", checkpoint, GEMMA2_SMOL)
    command = builder_command(checkpoint, out / name, "int4", "cpu", WINDOWED[name], out / "gemma2s-cache")
    subprocess.run(command, check=True, capture_output=True)
    print(f"wrote {out / name}", flush=True)


def make_llama(name: str, out: Path, llama_cpp: Path | None) -> None:
    """Build ``name`` of :data:`MODELS` into ``out/name`` (its checkpoint made once), with a Q4_0 GGUF
    where ``llama_cpp`` is given."""
    checkpoint = out / f"{name}-hf"
    if not (checkpoint / "config.json").exists():
        save_checkpoint("llama", checkpoint, MODELS[name])
    run_builder(checkpoint, out / name, "int4", out / f"{name}-cache", load=False)
    print(f"wrote {out / name}", flush=True)
    if llama_cpp is not None:
        make_gguf(llama_cpp, checkpoint, {out / f"{name}-q4_0.gguf": "Q4_0"})
        print(f"wrote {out / name}-q4_0.gguf", flush=True)


def make_w2_family(name: str, out: Path, llama_cpp: Path | None) -> None:
    """``out/name`` (:func:`make_w2`, its base built first where missing) and, where ``llama_cpp`` is
    given, the :data:`W2_GGUF` files of the base's checkpoint."""
    base = W2_MODELS[name]
    if not (out / base / "model.onnx").exists():
        make_llama(base, out, None)
    make_w2(out / base, out / f"{base}-hf", out / name)
    if llama_cpp is not None:
        ggufs = {out / f"{base}-{suffix}.gguf": kind for suffix, kind in W2_GGUF.items()}
        make_gguf(llama_cpp, out / f"{base}-hf", ggufs)
        print("wrote", *map(str, ggufs), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--only", choices=sorted([*MODELS, *WINDOWED, *W2_MODELS]), action="append",
                        help="make only this model (repeatable)")  # fmt: skip
    parser.add_argument("--llama-cpp", type=Path, default=None, help="built llama.cpp source: also GGUFs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.getLogger().setLevel(logging.ERROR)
    for name in args.only or sorted([*MODELS, *WINDOWED, *W2_MODELS]):
        if name in WINDOWED:
            make_windowed(name, args.out)
        elif name in W2_MODELS:
            make_w2_family(name, args.out, args.llama_cpp)
        else:
            make_llama(name, args.out, args.llama_cpp)


if __name__ == "__main__":
    main()
