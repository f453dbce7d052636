"""Make the real-size decoders ``python -m lutc.bench scale`` measures (0.7-2 GB of external data,
so they are not committed): random-init ``transformers`` checkpoints at the shapes of
Llama-3.2-1B and Llama-3.2-3B, through onnxruntime-genai's model builder (``-p int4 -e cpu``).

- ``llama1b``: hidden 2048, 16 layers, GQA 32/8, intermediate 8192, vocabulary 49152, tied
  embeddings (1.07 B parameters);
- ``llama3b``: hidden 3072, 28 layers, GQA 24/8, intermediate 8192, vocabulary 128256, tied
  embeddings (3.2 B parameters; the checkpoint is saved in bfloat16 to halve its RAM and disk).

Each lands in ``OUT/<name>/`` as the builder writes it (``model.onnx``, ``model.onnx.data``,
``genai_config.json``, tokenizer files), with the checkpoint in ``OUT/<name>-hf/``. With
``--llama-cpp DIR`` (the folder ``../shared/tools/build_llamacpp.sh`` prints), also
``OUT/<name>-q4_0.gguf``: llama.cpp's ``convert_hf_to_gguf.py`` (f16) then ``llama-quantize Q4_0``;
the checkpoint's word-level test tokenizer is unknown to llama.cpp, so its BPE pre-tokenizer check
is answered "gpt-2" and one merge is added (the vocabulary does not change a timing). Same
environment as ``make_builder_corpus.py``, plus ``pip install DIR/gguf-py sentencepiece``. Run::

    python tests/corpus/make_scale_models.py OUT_DIR [--only llama1b] [--llama-cpp DIR]
    python -m lutc.bench scale OUT_DIR/llama1b --gguf OUT_DIR/llama1b-q4_0.gguf --llama-bench DIR/build/bin/llama-bench
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_builder_corpus import run_builder, save_checkpoint

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--only", choices=sorted(MODELS), action="append", help="make only this model (repeatable)")
    parser.add_argument("--llama-cpp", type=Path, default=None, help="built llama.cpp source: also a Q4_0 GGUF")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.getLogger().setLevel(logging.ERROR)
    for name in args.only or sorted(MODELS):
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
