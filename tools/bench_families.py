#!/usr/bin/env python3
"""``python -m lutc.bench generate`` on every builder family of the corpus and on the SmolLM2-scale
windowed pair, then one markdown table of them all (issue 26).

    python tools/bench_families.py OUT [--models /work/models] [--rounds 3] [--threads 1]

Each model runs in its own process (``OUT/<stem>/generate.{json,md}``, its output in
``OUT/<stem>/log.txt``), with ``--genai-dir`` its folder: the families (``tests/corpus/families``)
with a prompt of 24 and 32 tokens, ``gemma2s_window`` and ``gemma2s_full_cache`` (built by
``tests/corpus/make_scale_models.py MODELS --only gemma2s_window --only gemma2s_full_cache``) with a
prompt of 200 and 64 tokens: the cache grows from 200 to 264 rows past their window of 128, the same
lengths in both, so their step times compare the ring-buffer cache with the concatenated one. A model
lutc refuses (gpt-oss's QMoE) is a row with its error. Writes ``OUT/families.md`` and prints it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ROOT / "tests" / "corpus" / "families"
SCALE = ("gemma2s_window", "gemma2s_full_cache")
"""The windowed pair: same checkpoint, ring-buffer and concatenated caches on the local layers."""


@dataclass(frozen=True)
class Case:
    stem: str
    folder: Path
    prompt: int
    tokens: int


def cases(models: Path, family_prompt: int, family_tokens: int, scale_prompt: int, scale_tokens: int) -> list[Case]:
    """Every family folder of the corpus manifest (in its order), then the scale pair where built."""
    stems = [e["stem"] for e in json.loads((FAMILIES / "manifest.json").read_text()) if "file" in e]
    found = [Case(s, FAMILIES / s, family_prompt, family_tokens) for s in stems]
    return found + [Case(s, models / s, scale_prompt, scale_tokens) for s in SCALE if (models / s).is_dir()]


def run(case: Case, out: Path, rounds: int, threads: int) -> int:
    """One ``bench generate`` process; its exit status (0 agree, 1 tokens differ, 2 refused)."""
    folder = out / case.stem
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "lutc.bench", "generate", str(case.folder / "model.onnx"), "--genai-dir",
               str(case.folder), "--prompt", str(case.prompt), "--tokens", str(case.tokens), "--rounds", str(rounds),
               "--threads", str(threads), "--out", str(folder)]  # fmt: skip
    with (folder / "log.txt").open("w") as log:
        return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT).returncode


HEADER = ["model", "prompt + tokens", "lutc fast ms", "lutc exact ms", "ORT best ms", "GenAI ms",
          "exact = ORT acc0", "GenAI = ORT acc4"]  # fmt: skip
"""Times: the median decode step of the best round, 1 thread unless told."""


def row(case: Case, out: Path) -> str:
    """The table row of one case: its times and token checks, or the error line it ended with."""
    report = out / case.stem / "generate.json"
    if not report.exists():
        lines = (out / case.stem / "log.txt").read_text().strip().splitlines() or ["(no output)"]
        return f"| {case.stem} | {case.prompt} + {case.tokens} | {lines[-1]} |" + " |" * (len(HEADER) - 3)
    data = json.loads(report.read_text())
    rows = {r["engine"]: r for r in data["rows"]}
    ms = {name: r["decode_median_ms"] for name, r in rows.items()}
    best = min(("ORT acc0", "ORT acc4"), key=ms.__getitem__)
    tokens = {name: r["tokens"] for name, r in rows.items()}
    same = lambda a, b: "-" if b not in tokens else ("yes" if tokens[a] == tokens[b] else "no")  # noqa: E731
    genai = f"{ms['onnxruntime-genai']:.2f}" if "onnxruntime-genai" in ms else "-"
    if "onnxruntime-genai" in data.get("failed", {}):
        genai = "failed (see generate.md)"
    cells = [case.stem, f"{case.prompt} + {case.tokens}", f"{ms['lutc fast']:.2f}", f"{ms['lutc exact']:.2f}",
             f"{ms[best]:.2f} ({best[4:]})", genai, same("lutc exact", "ORT acc0"),
             same("ORT acc4", "onnxruntime-genai")]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def table(found: list[Case], out: Path) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(lines + [row(case, out) for case in found]) + "\n" + window_line(out)


def window_line(out: Path) -> str:
    """The windowed step time over the concatenated one's, per lutc mode (below 1: the window is faster)."""
    reports = [out / stem / "generate.json" for stem in SCALE]
    if not all(r.exists() for r in reports):
        return ""
    window, full = ({r["engine"]: r["decode_median_ms"] for r in json.loads(p.read_text())["rows"]} for p in reports)
    ratios = ", ".join(f"{engine} {window[engine] / full[engine]:.2f}" for engine in window if engine in full)
    return f"\n{SCALE[0]} / {SCALE[1]} median decode step (same cache lengths): {ratios}\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--models", type=Path, default=Path("/work/models"), help="where the scale pair was built")
    parser.add_argument("--only", nargs="+", default=None, metavar="STEM", help="these models only")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per engine (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="threads (default 1)")
    parser.add_argument("--prompt", type=int, default=24, help="family prompt tokens (default 24)")
    parser.add_argument("--tokens", type=int, default=32, help="family tokens generated (default 32)")
    parser.add_argument("--scale-prompt", type=int, default=200, help="scale pair prompt tokens (default 200)")
    parser.add_argument("--scale-tokens", type=int, default=64, help="scale pair tokens generated (default 64)")
    args = parser.parse_args()
    found = cases(args.models, args.prompt, args.tokens, args.scale_prompt, args.scale_tokens)
    found = [c for c in found if args.only is None or c.stem in args.only]
    for case in found:
        print(f"{case.stem}: exit {run(case, args.out, args.rounds, args.threads)}", file=sys.stderr, flush=True)
    text = f"`{' '.join(sys.argv)}`, {args.threads} thread(s), {args.rounds} rounds\n\n" + table(found, args.out)
    (args.out / "families.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
