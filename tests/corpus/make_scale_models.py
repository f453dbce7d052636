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

Each lands in ``OUT/<name>/`` as the builder writes it (``model.onnx``, ``model.onnx.data``,
``genai_config.json``, tokenizer files), with the checkpoint in ``OUT/<name>-hf/``. With
``--llama-cpp DIR`` (the folder ``../shared/tools/build_llamacpp.sh`` prints), also
``OUT/<name>-q4_0.gguf``: llama.cpp's ``convert_hf_to_gguf.py`` (f16) then ``llama-quantize Q4_0``;
the checkpoint's word-level test tokenizer is unknown to llama.cpp, so its BPE pre-tokenizer check
is answered "gpt-2" and one merge is added (the vocabulary does not change a timing). Same
environment as ``make_builder_corpus.py``, plus ``pip install DIR/gguf-py sentencepiece``. Run::

    python tests/corpus/make_scale_models.py OUT_DIR [--only llama1b] [--llama-cpp DIR]
    python -m lutc.bench scale OUT_DIR/llama1b --gguf OUT_DIR/llama1b-q4_0.gguf --llama-bench DIR/build/bin/llama-bench
    python tests/corpus/make_scale_models.py OUT_DIR --only gemma2s_window --only gemma2s_full_cache
    python -m lutc.bench generate OUT_DIR/gemma2s_window/model.onnx --genai-dir OUT_DIR/gemma2s_window \\
        --prompt 200 --tokens 64 --threads 1
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_builder_corpus import builder_command, run_builder, save_checkpoint, save_family

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


def make_gguf(llama_cpp: Path, checkpoint: Path, out: Path) -> None:
    """A Q4_0 GGUF of ``checkpoint`` at ``out`` (through an f16 one, removed after)."""
    f16 = out.with_name(out.stem + "-f16.gguf")
    subprocess.run([sys.executable, "-c", CONVERT, str(llama_cpp), str(checkpoint), "--outfile", str(f16),
                    "--outtype", "f16"], check=True, capture_output=True)  # fmt: skip
    quantize = llama_cpp / "build" / "bin" / "llama-quantize"
    subprocess.run([str(quantize), str(f16), str(out), "Q4_0"], check=True, capture_output=True)
    f16.unlink()


def make_windowed(name: str, out: Path) -> None:
    """Build ``name`` of :data:`WINDOWED` into ``out/name`` from the shared Gemma-2 checkpoint (made once)."""
    checkpoint = out / "gemma2s-hf"
    if not (checkpoint / "config.json").exists():
        save_family("gemma2", checkpoint, GEMMA2_SMOL)
    command = builder_command(checkpoint, out / name, "int4", "cpu", WINDOWED[name], out / "gemma2s-cache")
    subprocess.run(command, check=True, capture_output=True)
    print(f"wrote {out / name}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--only", choices=sorted([*MODELS, *WINDOWED]), action="append",
                        help="make only this model (repeatable)")  # fmt: skip
    parser.add_argument("--llama-cpp", type=Path, default=None, help="built llama.cpp source: also a Q4_0 GGUF")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.getLogger().setLevel(logging.ERROR)
    for name in args.only or sorted([*MODELS, *WINDOWED]):
        if name in WINDOWED:
            make_windowed(name, args.out)
            continue
        checkpoint = args.out / f"{name}-hf"
        if not (checkpoint / "config.json").exists():
            save_checkpoint("llama", checkpoint, MODELS[name])
        run_builder(checkpoint, args.out / name, "int4", args.out / f"{name}-cache", load=False)
        print(f"wrote {args.out / name}", flush=True)
        if args.llama_cpp is not None:
            make_gguf(args.llama_cpp, checkpoint, args.out / f"{name}-q4_0.gguf")
            print(f"wrote {args.out / name}-q4_0.gguf", flush=True)


if __name__ == "__main__":
    main()
