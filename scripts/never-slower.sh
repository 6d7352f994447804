#!/usr/bin/env bash
# The choice of kernels by timing (docs/never-slower.md) on a synthetic Llama-2-7B-shaped Q4_0 file
# (8 layers) and its CHESS 0.5/0.5 conversion: `ggufsparse bench` with the runtime choosing (auto),
# then with the skipping kernels handicapped (GGML_SPARSE_SCALAR=1: their plain-C paths) choosing
# again, and handicapped but forced (what a slow CPU would run without the choice). Run with nothing
# else on the cores.
# Usage: scripts/never-slower.sh OUT [REPS]
set -euo pipefail
OUT=$1 REPS=${2:-5}
mkdir -p "$OUT"
ggufsparse doctor > /dev/null || { echo "never-slower: the runtime is not ready; see ggufsparse doctor" >&2; exit 1; }
dense="$OUT/s7b-q4_0.gguf" sparse="$OUT/s7b-chess55.gguf"
[ -f "$dense" ] || ggufsparse synth --shape llama2-7b --layers 8 --type q4_0 -o "$dense" -q
[ -f "$sparse" ] || ggufsparse convert "$dense" --sparsity 0.5 --attn-sparsity 0.5 --calib-tokens 512 -o "$sparse" -q
run() {  # name, then the environment of its runs (VAR=value ...)
    local name=$1; shift
    local vars=("$@")
    echo "== $name: ${vars[*]}"
    env "${vars[@]}" ggufsparse bench "$dense" "$sparse" -r "$REPS" --tg 32 --pp 64 -q --json > "$OUT/$name.json"
    python -c "import json,sys; from ggufsparse.eval import bench; print(bench.table(json.load(open(sys.argv[1]))))" "$OUT/$name.json"
    for t in 1 2; do
        echo "-- doctor --model, $t thread(s):"
        env "${vars[@]}" ggufsparse doctor --model "$sparse" -t "$t" | tail -1
    done
}
{
    run auto GGUFSPARSE_KERNELS=auto
    run handicapped-auto GGUFSPARSE_KERNELS=auto GGML_SPARSE_SCALAR=1
    run handicapped-forced-sparse GGUFSPARSE_KERNELS=sparse GGML_SPARSE_SCALAR=1
} | tee "$OUT/summary.txt"
