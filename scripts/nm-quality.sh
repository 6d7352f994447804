#!/usr/bin/env bash
# Quality of N:M pruning on one model: magnitude, Wanda and E-Sparse (no shuffle, global shuffle,
# global + local shuffle) at each pattern, each evaluated against the dense model with
# `ggufsparse eval` (WikiText-2 perplexity, KL and top-1; the bundled tasks, first LIMIT examples).
# Writes OUT/<variant>-<N>x<M>.gguf, .json per variant and OUT/table.md. Reruns skip finished
# evaluations. Usage: scripts/nm-quality.sh MODEL OUT [PATTERNS] [LIMIT] [CHUNKS]
set -euo pipefail
MODEL=$1 OUT=$2 PATTERNS=${3:-2:4,4:8} LIMIT=${4:-300} CHUNKS=${5:-16}
# masked: the pruning itself, kept values exactly the dequantized originals (masked+packed
# requantises the kept values of types the N:M product has no fast path for)
NM_STORAGE=${NM_STORAGE:-masked}
mkdir -p "$OUT"
VARIANTS=("magnitude:--method magnitude" "wanda:--method wanda"
          "esparse-noshuffle:--method esparse --nm-shuffle none"
          "esparse-global:--method esparse --nm-shuffle global" "esparse:--method esparse")
EVAL=(--ref "$MODEL" --chunks "$CHUNKS" --tasks piqa,arc_easy,boolq,winogrande --limit "$LIMIT" -t 2 -q)
[ -f "$OUT/dense.json" ] || ggufsparse eval "$MODEL" "${EVAL[@]}" --json "$OUT/dense.json" >/dev/null
for pattern in ${PATTERNS//,/ }; do
    for v in "${VARIANTS[@]}"; do
        name=${v%%:*} args=${v#*:} tag="${name}-${pattern/:/x}"
        [ -f "$OUT/$tag.json" ] && continue
        # shellcheck disable=SC2086
        ggufsparse convert "$MODEL" $args --nm "$pattern" --nm-storage "$NM_STORAGE" -o "$OUT/$tag.gguf" --force -q --json > "$OUT/$tag.convert.json"
        ggufsparse eval "$OUT/$tag.gguf" "${EVAL[@]}" --json "$OUT/$tag.json" >/dev/null
        echo "$tag done"
    done
done
python "$(dirname "$0")/nm_table.py" "$OUT" > "$OUT/table.md"
cat "$OUT/table.md"
