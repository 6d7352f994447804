#!/usr/bin/env bash
# The CUDA checks on a machine with an NVIDIA GPU, CUDA, cmake, ninja and a Python with numpy
# (and torch for the N:M pruning import), offline. KIT comes from scripts/gpu_kit.py.
#
#   bash scripts/gpu-check.sh KIT WORK OUT [STAGE ...]
#
# Stages (default all, in this order; each skips what WORK already holds):
#   build  CUDA build of llama-bench and test-backend-ops from KIT/llama.cpp (one architecture,
#          $CUDA_ARCH, default 90; FlashAttention kernels off to halve the build)
#   ops    test-backend-ops: every sparse op on the GPU against the CPU; then perf mode
#   files  synthetic Llama-2-7B shapes (8 layers; random weights: label every figure synthetic)
#          in F16, Q8_0, Q4_0, Q4_K; CHESS thresholds grafted from KIT/*.npz; 2:4 magnitude
#   bench  ggufsparse bench dense vs sparse (alternated, medians of $REPS), all layers on the GPU, with
#          CUDA's sparse ops (--kernels sparse), and two files with the default stock-op path
# Logs and JSON go to OUT. Stop early with DEADLINE=<epoch seconds>: a bench that would start
# after it is skipped (rerun the stage to finish).
set -uo pipefail
KIT=$(realpath "$1"); WORK=$(realpath -m "$2"); OUT=$(realpath -m "$3"); shift 3
STAGES=${*:-build ops files bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CUDA_ARCH=${CUDA_ARCH:-90}
REPS=${REPS:-5}
SHAPE=${SHAPE:-llama2-7b}
LAYERS=${LAYERS:-8}
DEADLINE=${DEADLINE:-0}
mkdir -p "$WORK" "$OUT"
export PYTHONPATH="$ROOT/python:$KIT/llama.cpp/gguf-py${PYTHONPATH:+:$PYTHONPATH}"
export GGUFSPARSE_CACHE="$WORK/cache"
BIN="$WORK/build/bin"
FILES="$WORK/files"
log() { echo "[gpu-check $(date +%T)] $*"; }
gs() { python3 -m ggufsparse "$@"; }

register_runtime() {
  # the tools and libggml-base (for quantizing) that the ggufsparse commands below use
  mkdir -p "$GGUFSPARSE_CACHE"
  cat > "$GGUFSPARSE_CACHE/active.json" <<EOF
{"key": "gpu-check", "patch_hash": "", "version": "", "flags": {"backend": "cuda", "cuda_archs": "$CUDA_ARCH",
 "native": false, "stock": false}, "work": "$WORK", "bin_dir": "$BIN",
 "tools": {"llama-bench": "$BIN/llama-bench", "test-backend-ops": "$BIN/test-backend-ops"}}
EOF
}

build_base() {
  if [ -f "$BIN/libggml-base.so" ]; then return 0; fi
  log "configure"
  cmake -S "$KIT/llama.cpp" -B "$WORK/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" -DGGML_CUDA_FA=OFF -DGGML_CUDA_NCCL=OFF \
    -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=ON -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF > "$OUT/configure.log" 2>&1 \
    || { tail -30 "$OUT/configure.log"; return 1; }
  log "build ggml-base"
  cmake --build "$WORK/build" --target ggml-base -j "$(nproc)" > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; return 1; }
}

build_rest() {
  if [ -x "$BIN/llama-bench" ] && [ -x "$BIN/test-backend-ops" ]; then return 0; fi
  log "build llama-bench test-backend-ops"
  cmake --build "$WORK/build" --target llama-bench test-backend-ops -j "$(nproc)" >> "$OUT/build.log" 2>&1 \
    || { grep -E "error|Error" "$OUT/build.log" | head -30; return 1; }
  log "built"
}

stage_ops() {  # [tag]: a suffix for the logs' names
  local ops=SPARSE_ACT,MUL_MAT_ROWS,AXPY_SPARSE,MUL_MAT_NM tag=${1:-}
  log "test-backend-ops$tag -o $ops (GPU against CPU)"
  "$BIN/test-backend-ops" test -b CUDA0 -o "$ops" > "$OUT/ops-test$tag.log" 2>&1
  local rc=$?
  grep -cE "OK$|OK\x1b" "$OUT/ops-test$tag.log" | sed 's/^/cases passed: /'
  grep -E "FAIL|not supported" "$OUT/ops-test$tag.log" | head -40
  tail -3 "$OUT/ops-test$tag.log"
  log "test-backend-ops$tag perf (decode shapes of Llama-2-7B)"
  "$BIN/test-backend-ops" perf -b CUDA0 -o "$ops,MUL_MAT" \
    -p 'm=(4096|11008),n=1,k=(4096|11008),bs=\[1,1\]|k=(4096|11008),n=(4096|11008),m=1|n=4096,k=(4096|11008),m=1|rows=(4096|11008)|n=11008,m=1' \
    > "$OUT/ops-perf$tag.log" 2>&1
  grep -E "us/run" "$OUT/ops-perf$tag.log" | sed -e 's/\x1b\[[0-9;]*m//g' | head -60
  return $rc
}

synth() {  # type
  [ -f "$FILES/$1.gguf" ] || gs synth --shape "$SHAPE" --layers "$LAYERS" --type "$1" --tokenizer-from "$KIT/vocab.gguf" \
    -o "$FILES/$1.gguf" -q > /dev/null
}

graft() {  # type thresholds
  [ -f "$FILES/$1-$2.gguf" ] || python3 "$ROOT/scripts/graft_thresholds.py" apply "$FILES/$1.gguf" "$KIT/$2.npz" \
    "$FILES/$1-$2.gguf"
}

stage_files() {
  mkdir -p "$FILES"
  log "synthetic files"
  local rc=0 pids=() t
  for t in f16 q4_0 q8_0 q4_k; do synth "$t" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  pids=()
  ( graft f16 chess55; graft f16 ffn85 ) & pids+=($!)
  ( [ -f "$FILES/f16-nm24.gguf" ] || gs convert "$FILES/f16.gguf" --method magnitude --nm 2:4 \
      -o "$FILES/f16-nm24.gguf" -q > /dev/null ) & pids+=($!)
  ( graft q4_0 chess55; graft q4_0 zero; graft q4_0 ffn85 ) & pids+=($!)
  ( graft q8_0 chess55; graft q4_k chess55; graft f16 zero ) & pids+=($!)
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  ls -la "$FILES" | awk '{print $5, $9}'
  log "files done (rc $rc)"
  return $rc
}

bench_pair() {  # name dense sparse [kernels: sparse (CUDA's sparse ops, the default here) or auto (the stock-op path)]
  local now; now=$(date +%s)
  local kernels=${4:-sparse}
  if [ -s "$OUT/bench-$1.json" ]; then return 0; fi
  if [ "$DEADLINE" -gt 0 ] && [ $((now + 45)) -gt "$DEADLINE" ]; then log "skip $1 (deadline)"; return 0; fi
  if [ ! -f "$FILES/$3" ]; then log "skip $1 (no $3)"; return 0; fi
  log "bench $1"
  gs bench "$FILES/$2" "$FILES/$3" -r "$REPS" --tg 128 --pp 512 -t 8 --kernels "$kernels" --json -q > "$OUT/bench-$1.json" 2> "$OUT/bench-$1.err" \
    || { tail -3 "$OUT/bench-$1.err"; rm -f "$OUT/bench-$1.json"; return 1; }
  python3 - "$OUT/bench-$1.json" "$1" <<'EOF'
import json, sys
rep = json.load(open(sys.argv[1]))
print(sys.argv[2], " ".join(f"{t}: {r['dense_tps']:.1f} -> {r['sparse_tps']:.1f} t/s = {r['ratio']:.3f}x"
                            for t, r in rep["tests"].items()))
EOF
}

stage_bench() {
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
  bench_pair f16-chess55 f16.gguf f16-chess55.gguf
  bench_pair f16-nm24 f16.gguf f16-nm24.gguf
  bench_pair f16-ffn85 f16.gguf f16-ffn85.gguf
  bench_pair q4_0-chess55 q4_0.gguf q4_0-chess55.gguf
  bench_pair q4_0-zero q4_0.gguf q4_0-zero.gguf
  bench_pair f16-zero f16.gguf f16-zero.gguf
  bench_pair q4_0-ffn85 q4_0.gguf q4_0-ffn85.gguf
  bench_pair q8_0-chess55 q8_0.gguf q8_0-chess55.gguf
  bench_pair q4_k-chess55 q4_k.gguf q4_k-chess55.gguf
  # what a user gets by default on CUDA: the stock-op path (thresholds with stock ops, dense products)
  bench_pair q4_0-chess55-stock q4_0.gguf q4_0-chess55.gguf auto
  bench_pair q4_k-chess55-stock q4_k.gguf q4_k-chess55.gguf auto
}

has() { [[ " $STAGES " == *" $1 "* ]]; }
register_runtime
rc=0
if has build; then build_base || exit 1; fi
files_pid=
# the synthetic files need only libggml-base: make them while the CUDA code compiles
if has files; then stage_files > "$OUT/files.log" 2>&1 & files_pid=$!; fi
if has build; then build_rest || exit 1; fi
if has ops; then
  stage_ops || rc=1
fi
if [ -n "$files_pid" ]; then wait "$files_pid" || rc=1; cat "$OUT/files.log"; fi
if has bench; then stage_bench || rc=1; fi
exit $rc
