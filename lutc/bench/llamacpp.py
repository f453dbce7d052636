"""llama.cpp's ``llama-bench`` beside lutc (``bench scale`` and ``bench generate``): prompt processing
and generation of a GGUF, timed by llama.cpp itself.

``llama-bench -p PROMPT -n TOKENS -t THREADS -r ROUNDS -o json`` prints a JSON list with one
object per test: ``n_prompt`` tokens processed (the prefill test) or ``n_gen`` tokens generated
from an empty cache (the decode test), and ``avg_ts``, their mean tokens/s over the rounds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

ENGINE = "llama.cpp"
"""The engine's name in the benchmarks' tables."""


def run_llama_bench(args: argparse.Namespace, threads: int) -> dict | None:
    """``llama-bench`` (``args.llama_bench``) on ``args.gguf`` at ``threads``: prefill and decode ms
    (from its mean tokens/s) and the GGUF's bytes; ``{"error": ...}`` where it fails or prints no
    such rows; ``None`` where either path is not given."""
    if args.llama_bench is None or args.gguf is None:
        return None
    command = [str(args.llama_bench), "-m", str(args.gguf), "-p", str(args.prompt), "-n", str(args.tokens),
               "-t", str(threads), "-r", str(args.rounds), "-o", "json"]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except OSError as err:
        return {"error": f"llama-bench did not start: {err}"}
    if done.returncode:
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no message"
        return {"error": f"llama-bench exited with {done.returncode}: {last[:400]}"}
    try:
        return {**parse_llama_bench(done.stdout, args.prompt), "gguf_bytes": Path(args.gguf).stat().st_size}
    except (ValueError, KeyError, TypeError, ZeroDivisionError) as err:
        return {"error": f"llama-bench's output was not understood ({type(err).__name__}: {err})"}


def parse_llama_bench(stdout: str, prompt: int) -> dict:
    """Prefill ms of ``prompt`` tokens and decode ms per token from llama-bench's JSON rows."""
    speed = {("prefill" if row["n_prompt"] else "decode"): float(row["avg_ts"]) for row in json.loads(stdout)}
    return {"prefill_ms": prompt / speed["prefill"] * 1e3, "decode_median_ms": 1e3 / speed["decode"],
            "decode_min_ms": None}  # fmt: skip
