#!/usr/bin/env bash
# The main job end to end on the default model: install, build the patched runtime, then
# generate text through it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
ggufsparse doctor
echo
echo "== text from the default model through the patched runtime =="
ggufsparse generate default --temp 0 -n 64 -p "The three most useful things to know about llamas are"
