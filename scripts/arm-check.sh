#!/usr/bin/env bash
# The sparse ops on 64-bit ARM, from an x86-64 machine: cross-compile the patched tree's ggml and
# test-sparse-ops for aarch64 twice, with dot-product instructions (armv8.2-a+dotprod, the portable
# ARM build's target) and without (plain armv8-a), and run the op tests of each under qemu's user
# mode emulation: the dotprod build on a CPU with dotprod (-cpu max), the other on a Cortex-A53
# (no dotprod: an instruction it lacks would stop the run). Exit status 0 only if both ran every
# case with 0 failures. test-sparse-ops runs its case set (every kernel against the dense product,
# every weight type, odd shapes, sparsity 0, 0.5 and 1) at 2 and 3 threads, each also computed on
# 1 thread and compared bit for bit: every path, in about 60% of the time of 1-4 threads (1-3
# minutes a build under emulation; pass --threads 1,2,3,4 for the whole set).
#
#   bash scripts/arm-check.sh [test-sparse-ops arguments]   (default: --threads 2,3)
#
# Needs g++-aarch64-linux-gnu and qemu-user-static (scripts/setup.sh installs them) and the
# project's .venv (the patched source comes from ggufsparse's own build code). The builds live in
# $GGUFSPARSE_CACHE/arm-<hash of the sdist, compiler and flags>/ (default ~/.cache/ggufsparse),
# made from scratch when absent and incremental afterwards; ccache is shared with build-runtime.
# Set JOBS to change the parallel compile jobs (default: the number of cores); BUILD_ONLY=1 builds
# and prints each build's binary without running it (scripts/arm-insns.sh uses that).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
JOBS=${JOBS:-$(nproc)}
ARGS=("$@")
[ ${#ARGS[@]} -gt 0 ] || ARGS=(--threads 2,3)
CXX=aarch64-linux-gnu-g++
CC=aarch64-linux-gnu-gcc
QEMU=$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)
SYSROOT=/usr/aarch64-linux-gnu
# name, -march, the CPU qemu emulates
VARIANTS=("dotprod armv8.2-a+dotprod max" "armv8 armv8-a cortex-a53")

log() { echo "[arm-check $(date +%T)] $*" >&2; }
command -v "$CXX" >/dev/null || { log "no $CXX: install g++-aarch64-linux-gnu (scripts/setup.sh does)"; exit 2; }
[ -n "$QEMU" ] || { log "no qemu-aarch64-static: install qemu-user-static (scripts/setup.sh does)"; exit 2; }
[ -d "$SYSROOT/lib" ] || { log "no $SYSROOT: the aarch64 C library of g++-aarch64-linux-gnu is missing"; exit 2; }

start=$(date +%s)
cache=$("$PY" -c 'from ggufsparse.paths import cache_dir; print(cache_dir())')
sdist_sha=$("$PY" -c 'from ggufsparse.runtime import sdist; print(sdist.SHA256)')
key=$(printf '%s\n' "$sdist_sha" "$("$CXX" --version | head -1)" "${VARIANTS[@]}" | sha256sum | cut -c1-12)
work="$cache/arm-$key"
mkdir -p "$work"
log "work folder $work"

# the patched llama.cpp tree (sdist + patches/ + ggml-sparse/), rewriting only what changed
# (the same steps as `ggufsparse build-runtime`: runtime/build.py's _prepare_source)
llama=$("$PY" -c 'import sys
from pathlib import Path
from ggufsparse.paths import PATCHES_DIR, SPARSE_OPS_DIR, cache_dir
from ggufsparse.runtime import build, sdist, source
work = Path(sys.argv[1])
build._prepare_source(work, sdist.fetch(cache_dir()), build.BuildFlags(), source.patch_hash(PATCHES_DIR, SPARSE_OPS_DIR))
print(work / "src" / source.LLAMA_DIR)' "$work" 2> "$work/source.log") \
  || { cat "$work/source.log" >&2; exit 1; }

# ggml (static, CPU only) and test-sparse-ops in one CMake project; no llama.cpp beyond ggml
mkdir -p "$work/project"
cat > "$work/project/CMakeLists.txt.new" <<EOF
cmake_minimum_required(VERSION 3.14)
project(ggufsparse_arm_check C CXX)
add_subdirectory("$llama/ggml" ggml)
add_executable(test-sparse-ops "$llama/tests/ggml-sparse/test-sparse-ops.cpp")
target_compile_features(test-sparse-ops PRIVATE cxx_std_17)
target_link_libraries(test-sparse-ops PRIVATE ggml)
EOF
if cmp -s "$work/project/CMakeLists.txt.new" "$work/project/CMakeLists.txt"; then
  rm "$work/project/CMakeLists.txt.new"
else
  mv "$work/project/CMakeLists.txt.new" "$work/project/CMakeLists.txt"
fi

export CCACHE_DIR=${CCACHE_DIR:-$cache/ccache} CCACHE_BASEDIR=$work CCACHE_NOHASHDIR=1 CCACHE_SLOPPINESS=time_macros
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi

failed=0
for v in "${VARIANTS[@]}"; do
  read -r name march cpu <<< "$v"
  build="$work/build-$name"
  if [ ! -f "$build/CMakeCache.txt" ]; then
    log "$name: configuring (-march=$march)"
    cmake -S "$work/project" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
      -DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_FIND_ROOT_PATH="$SYSROOT" \
      -DCMAKE_FIND_ROOT_PATH_MODE_PROGRAM=NEVER -DCMAKE_FIND_ROOT_PATH_MODE_LIBRARY=ONLY \
      -DCMAKE_FIND_ROOT_PATH_MODE_INCLUDE=ONLY -DBUILD_SHARED_LIBS=OFF \
      -DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH="$march" -DGGML_BLAS=OFF -DGGML_OPENMP=ON \
      -DGGML_BACKEND_DL=OFF -DGGML_CCACHE=OFF "${launcher[@]}" > "$work/configure-$name.log" 2>&1 \
      || { tail -30 "$work/configure-$name.log" >&2; rm -f "$build/CMakeCache.txt"; exit 1; }
  fi
  log "$name: building test-sparse-ops ($JOBS jobs)"
  cmake --build "$build" --target test-sparse-ops -j "$JOBS" > "$work/build-$name.log" 2>&1 \
    || { grep -E "error|Error" "$work/build-$name.log" | head -30 >&2; exit 1; }
  bin="$build/test-sparse-ops"
  if [ "${BUILD_ONLY:-0}" = 1 ]; then
    echo "$name: march=$march cpu=$cpu binary=$bin"
    continue
  fi
  log "$name: QEMU_LD_PREFIX=$SYSROOT $(basename "$QEMU") -cpu $cpu $bin ${ARGS[*]}"
  t0=$(date +%s)
  set +e
  QEMU_LD_PREFIX=$SYSROOT "$QEMU" -cpu "$cpu" "$bin" "${ARGS[@]}" > "$work/run-$name.log" 2>&1
  rc=$?
  set -e
  { grep -m 20 "^FAIL" "$work/run-$name.log"; grep -E "^(kernels:|threads:|[0-9]+ cases)" "$work/run-$name.log"; } | sed "s/^/$name: /" || true
  if [ $rc -ne 0 ]; then
    tail -n 5 "$work/run-$name.log" >&2
    failed=1
  fi
  echo "$name: march=$march cpu=$cpu exit=$rc run=$(( $(date +%s) - t0 ))s binary=$bin"
done
echo "arm-check: $(( $(date +%s) - start ))s in all, $([ $failed -eq 0 ] && echo ok || echo FAILED)"
exit $failed
