"""Make the real-size decoders ``python -m lutc.bench scale`` measures (0.7-2 GB of external data,
so they are not committed): random-init ``transformers`` checkpoints at the shapes of
Llama-3.2-1B and Llama-3.2-3B, through onnxruntime-genai's model builder (``-p int4 -e cpu``).

- ``llama1b``: hidden 2048, 16 layers, GQA 32/8, intermediate 8192, vocabulary 49152, tied
  embeddings (1.07 B parameters);
- ``llama3b``: hidden 3072, 28 layers, GQA 24/8, intermediate 8192, vocabulary 128256, tied
  embeddings (3.2 B parameters; the checkpoint is saved in bfloat16 to halve its RAM and disk).

Each lands in ``OUT/<name>/`` as the builder writes it (``model.onnx``, ``model.onnx.data``,
``genai_config.json``, tokenizer files), with the checkpoint in ``OUT/<name>-hf/`` kept for
llama.cpp's ``convert_hf_to_gguf.py``. Same environment as ``make_builder_corpus.py``. Run::

    python tests/corpus/make_scale_models.py OUT_DIR [--only llama1b]
    python -m lutc.bench scale OUT_DIR/llama1b
"""

from __future__ import annotations

import argparse
import logging
import sys
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--only", choices=sorted(MODELS), action="append", help="make only this model (repeatable)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.getLogger().setLevel(logging.ERROR)
    for name in args.only or sorted(MODELS):
        checkpoint = args.out / f"{name}-hf"
        if not (checkpoint / "config.json").exists():
            save_checkpoint("llama", checkpoint, MODELS[name])
        run_builder(checkpoint, args.out / name, "int4", args.out / f"{name}-cache", load=False)
        print(f"wrote {args.out / name}", flush=True)


if __name__ == "__main__":
    main()
