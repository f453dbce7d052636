"""Greedy generation with lutc next to ONNX Runtime on the same decoder, tokens checked to agree.

1. compiles the decoder (default: the onnxruntime-genai builder's int4 Llama in ``tests/corpus``;
   any decoder with ``past_key_values.N.*`` inputs and ``present.N.*`` outputs works) in exact
   mode (float tables) and fast mode (int8 tables);
2. generates ``--tokens`` tokens greedily with :func:`lutc.generate` (the KV cache stays in TVM
   tensors between steps);
3. runs the same loop on ONNX Runtime with ``MatMulNBits`` at ``accuracy_level`` 0 (float, the
   reference) and 4 (int8 activations, its fast path), and on onnxruntime-genai's generator
   where it is installed and ``--genai-dir`` names the builder's output folder;
4. prints tokens/s side by side and exits with status 1 unless lutc's exact-mode tokens equal
   ORT's accuracy_level-0 tokens.

    python examples/generate.py --tokens 32 --threads 1
    python examples/generate.py --model out/model.onnx --genai-dir out
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx

import lutc
from lutc.bench.generate import genai_generate, ort_generate
from lutc.decode import cache_layout

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "llama_genai_int4.onnx"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="decoder .onnx (default: corpus Llama)")
    parser.add_argument("--tokens", type=int, default=32, help="tokens to generate (default 32)")
    parser.add_argument("--prompt", default="1,5,17,33,2,8,100,77", help="comma-separated prompt token ids")
    parser.add_argument("--threads", type=int, default=1, help="threads for lutc and ORT (default 1)")
    parser.add_argument("--genai-dir", type=Path, default=None, help="the builder's folder, for onnxruntime-genai")
    args = parser.parse_args()
    ids = np.array([[int(t) for t in args.prompt.split(",")]], np.int64)
    runs = {}
    for mode in ("exact", "fast"):
        model = lutc.build(args.model, target="x86", mode=mode, threads=args.threads)
        runs[f"lutc {mode}"] = lutc.generate(model, ids, args.tokens)
    layout = cache_layout(model.inputs, model.outputs)
    graph = onnx.load(str(args.model))
    for level in (0, 4):
        runs[f"ORT accuracy_level {level}"] = ort_generate(graph, layout, ids, args.tokens, args.threads, level)
    if args.genai_dir is not None:
        try:
            runs["onnxruntime-genai"] = genai_generate(args.genai_dir, ids, args.tokens)
        except ImportError:
            print("onnxruntime-genai is not installed: its generator is left out")
    for name, run in runs.items():
        print(f"{name:24s} {run.describe()}")
        print(f"{'':24s} tokens {','.join(map(str, run.tokens[0]))}")
    same = np.array_equal(runs["lutc exact"].tokens, runs["ORT accuracy_level 0"].tokens)
    print("lutc exact and ORT accuracy_level 0 chose", "the same tokens" if same else "DIFFERENT tokens")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
