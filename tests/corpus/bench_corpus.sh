#!/usr/bin/env bash
# Every corpus model through `python -m lutc.bench model` on 1 thread (dynamic and --static builds),
# lutc against ONNX Runtime's fastest options. Results: bench_results/corpus/<model>/model.{json,md}.
# Usage: bash tests/corpus/bench_corpus.sh [PYTHON]   (about 10 minutes on 2 cores)
set -uo pipefail
cd "$(dirname "$0")/../.."
py=${1:-.venv/bin/python}
status=0
for model in tests/corpus/*.onnx; do
    name=$(basename "$model" .onnx)
    args=(--threads 1 --static --repeat 30 --out "bench_results/corpus/$name")
    case "$name" in
        *_decode_*) args+=(--shapes decode=1x1 --dims past=15 s53=past+seq) ;;
        *dynamo*) args+=(--dims s72=batch s43=batch s53=seq) ;;
        *_static_*) args+=(--shapes prefill=1x8) ;;
    esac
    "$py" -m lutc.bench model "$model" "${args[@]}" || status=1
done
exit $status
