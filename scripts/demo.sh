#!/usr/bin/env bash
# The main job end to end on the default model: install, build the patched runtime, convert
# the model with CHESS, generate text with the sparse file, and measure its sparsity and quality
# against the dense model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
ggufsparse doctor
echo
echo "== text from the default model through the patched runtime =="
ggufsparse generate default --temp 0 -n 64 -p "The three most useful things to know about llamas are"

OUT=${GGUFSPARSE_DEMO_DIR:-demo-out}
mkdir -p "$OUT"
echo
echo "== convert the default model with CHESS (FFN 0.5, attention 0.5) =="
ggufsparse convert --recipe smollm2-135m-chess -o "$OUT/smollm2-chess.gguf" --force
# the per-layer rows are left out here; `ggufsparse inspect FILE` shows them
ggufsparse inspect "$OUT/smollm2-chess.gguf" | grep -v -E '^ +[0-9]+  [0-9]\.[0-9]'
echo
echo "== text from the sparse file =="
ggufsparse generate "$OUT/smollm2-chess.gguf" --temp 0 -n 64 -p "The three most useful things to know about llamas are"
echo
echo "== sparsity and quality against the dense model (PyTorch reference, WikiText-2 test) =="
ggufsparse reference "$OUT/smollm2-chess.gguf" --chunks 8 -q
echo
echo "== quality and sparsity through the runtime (WikiText-2 test, 8 windows of 512; piqa, 200 examples) =="
ggufsparse eval "$OUT/smollm2-chess.gguf" --ref default --chunks 8 --tasks piqa --limit 200 -t 2 -q \
    --json "$OUT/eval.json"
echo
echo "== speed against dense (llama-bench, alternated, medians of 3) =="
ggufsparse bench default "$OUT/smollm2-chess.gguf" -r 3 --tg 64 --pp 128 -q
