#!/usr/bin/env bash
# Served throughput and ggml-rpc speed of a sparse file against its original, for docs/serving.md.
# For each model: CHESS 0.5/0.5 conversion (reused if present), `ggufsparse bench --parallel`
# (dense and sparse alternated, medians) twice: with the skipping kernels forced at every batch size
# (where their advantage ends) and as the runtime chooses by default (docs/never-slower.md: the
# batch sizes it times at load); then decode tokens/s of the sparse file run locally and
# over two ggml-rpc-server workers on loopback (llama-bench's own -rpc, alternated; network time is
# not what it measures). Run with nothing else on the cores.
# Usage: scripts/serve-bench.sh OUT [MODELS] [REPS]
set -euo pipefail
OUT=$1 MODELS=${2:-smollm2-135m-instruct-q4_1,qwen2.5-coder-1.5b-q4_k_m} REPS=${3:-3}
mkdir -p "$OUT"
ggufsparse doctor > /dev/null || { echo "serve-bench: the runtime is not ready; see ggufsparse doctor" >&2; exit 1; }
BIN=$(ggufsparse doctor --json | python -c "import json,sys; print(json.load(sys.stdin)['runtime']['bin_dir'])")
for name in ${MODELS//,/ }; do
    model=$(ggufsparse models --json | python -c "import json,sys; print(next(m['path'] for m in json.load(sys.stdin) if m['name'] == '$name'))")
    sparse="$OUT/$name-chess55.gguf"
    [ -f "$sparse" ] || ggufsparse convert "$model" --method chess --sparsity 0.5 --attn-sparsity 0.5 -o "$sparse" -q
    for mode in forced auto; do
        if [ "$mode" = forced ]; then
            echo "== $name: served throughput, skipping kernels at every batch size (llama-batched-bench, $REPS alternated repetitions)"
            GGUFSPARSE_MAX_SPARSE_TOKENS=8 ggufsparse bench "$model" "$sparse" --parallel 1,2,4,8 --pp 64 \
                -r "$REPS" -q --json --kernels sparse > "$OUT/$name-parallel-$mode.json"
        else
            echo "== $name: served throughput, kernels as the runtime chooses them (llama-batched-bench, $REPS alternated repetitions)"
            ggufsparse bench "$model" "$sparse" --parallel 1,2,4,8 --pp 64 -r "$REPS" -q --json --kernels auto \
                > "$OUT/$name-parallel-$mode.json"
        fi
        python -c "import json,sys; from ggufsparse.eval import bench; print(bench.parallel_table(json.load(open(sys.argv[1]))))" \
            "$OUT/$name-parallel-$mode.json"
    done

    echo "== $name: decode over ggml-rpc (2 workers on loopback) and locally, sparse file"
    ports=()
    pids=()
    for p in 50152 50153; do
        "$BIN/ggml-rpc-server" -H 127.0.0.1 -p "$p" -t 2 > "$OUT/worker-$p.log" 2>&1 &
        pids+=($!)
        ports+=("127.0.0.1:$p")
    done
    sleep 2
    rpc=$(IFS=,; echo "${ports[*]}")
    for rep in $(seq "$REPS"); do
        # the skipping kernels on both sides (the workers run them; the local timing would choose)
        GGUFSPARSE_KERNELS=sparse "$BIN/llama-bench" -m "$sparse" -p 0 -n 32 -t 2 -r 1 -o json > "$OUT/$name-local-$rep.json"
        GGUFSPARSE_KERNELS=sparse "$BIN/llama-bench" -m "$sparse" -p 0 -n 32 -t 2 -r 1 -ngl 99 -rpc "$rpc" -o json > "$OUT/$name-rpc-$rep.json"
    done
    kill "${pids[@]}"
    python - "$OUT" "$name" "$REPS" <<'EOF'
import json, statistics, sys
out, name, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
ts = {side: [json.load(open(f"{out}/{name}-{side}-{r}.json"))[0]["avg_ts"] for r in range(1, reps + 1)]
      for side in ("local", "rpc")}
local, rpc = statistics.median(ts["local"]), statistics.median(ts["rpc"])
print(f"tg32 sparse file: local {local:.2f} t/s, over 2 loopback workers {rpc:.2f} t/s ({rpc / local:.3f}x), "
      f"medians of {reps}")
EOF
done | tee "$OUT/summary.txt"
