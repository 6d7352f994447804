#!/usr/bin/env bash
# The backend-aware graph on a real non-CPU backend: llama.cpp's Vulkan backend on Mesa's software
# Vulkan device (lavapipe), from a machine without a GPU (docs/backends.md).
#
# A layer whose weights sit on a device whose backend lacks the sparse ops takes the stock-op path:
# its thresholds applied with ggml_abs/sub/step/mul, the dense products on the thresholded inputs.
# For a model fully offloaded (-ngl 99) and partly (-ngl 16, without op offload), the original file and its CHESS
# 0.5/0.5 conversion are run with llama-perplexity over WikiText-2 (windows of 512: the prompt path)
# by the Vulkan build and by the CPU build, and the script prints:
#   - the graph splits of each run (prompt / decode graphs), sparse against dense;
#   - the agreement of the Vulkan logits with the CPU logits of the same file (llama-perplexity's
#     KL-divergence mode: mean and max KLD, same top token), for the original file (Vulkan's own
#     rounding), the CHESS file, and the CHESS file with its thresholds replaced by a fixed mask
#     (0 or the largest float, a tenth of the FFN channels dropped: no value near a threshold, so
#     rounding cannot flip a channel; half of them dropped would leave a broken model, PPL in the
#     thousands, whose near-uniform logits no top-token count can compare);
#   - decode speed on the device, sparse / dense, alternated (lavapipe is a correctness device; the
#     ratio says the stock-op path adds no splits or copies, not what a GPU would do).
#
#   bash scripts/backend-check.sh OUT [MODEL] [CHUNKS]     (defaults: the default model, 4 windows)
#
# Installs mesa-vulkan-drivers libvulkan-dev glslc spirv-headers with apt-get when run as root;
# builds `ggufsparse build-runtime --vulkan` (a cold build compiles Vulkan's shaders: about half an
# hour on 2 cores), and makes the CPU runtime the active one again when it ends.
set -euo pipefail
OUT=${1:?usage: backend-check.sh OUT [MODEL] [CHUNKS]} MODEL=${2:-default} CHUNKS=${3:-4}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { echo "[backend-check $(date +%T)] $*" >&2; }

pkgs=()
command -v glslc >/dev/null || pkgs+=(glslc)
[ -f /usr/include/vulkan/vulkan.hpp ] || pkgs+=(libvulkan-dev)
[ -d /usr/include/spirv ] || pkgs+=(spirv-headers)
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || pkgs+=(mesa-vulkan-drivers)
if [ ${#pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing ${pkgs[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
    else
        log "please install: ${pkgs[*]}"; exit 2
    fi
fi
export VK_ICD_FILENAMES=${VK_ICD_FILENAMES:-$(ls /usr/share/vulkan/icd.d/lvp_icd*.json | head -1)}
export GGML_VK_VISIBLE_DEVICES=${GGML_VK_VISIBLE_DEVICES:-0}   # ggml-vulkan skips CPU-type devices otherwise

bin_of() { python -c 'import json,sys; print(json.load(sys.stdin)["bin_dir"])'; }
log "building the Vulkan runtime (log: ggufsparse's build folder)"
vk=$(ggufsparse build-runtime --vulkan --json | bin_of)
trap 'ggufsparse build-runtime > /dev/null 2>&1 || true' EXIT   # the CPU runtime active again
cpu=$(ggufsparse build-runtime --json | bin_of)

dense=$(python -c 'import sys
from ggufsparse.errors import UserError
from ggufsparse.models.known import resolve
try:
    print(resolve(sys.argv[1]))
except UserError as e:
    sys.exit(f"backend-check: {e}")' "$MODEL")
sparse="$OUT/chess55.gguf" masked="$OUT/chess55-masked.gguf"
[ -f "$sparse" ] || ggufsparse convert "$dense" --method chess --sparsity 0.5 --attn-sparsity 0.5 -o "$sparse" -q
if [ ! -f "$masked" ]; then
    cp "$sparse" "$masked.tmp"
    python - "$masked.tmp" <<'EOF'
import sys
import gguf
import numpy as np
rng = np.random.default_rng(0)
for t in gguf.GGUFReader(sys.argv[1], "r+").tensors:
    if t.name.endswith("_thr"):   # per channel: a tenth never active; a whole input (q, o): always active
        t.data[:] = np.where(rng.random(t.data.shape) < 0.1, np.finfo(np.float32).max, 0.0) if t.data.size > 1 else 0.0
EOF
    mv "$masked.tmp" "$masked"
fi
text=$(python -c 'from ggufsparse.paths import shared_data_dir; print(shared_data_dir() / "wikitext2" / "wiki.test.raw")')
ppl=(-f "$text" -c 512 --chunks "$CHUNKS" -t 2)

splits() { sed -n 's/.*graph.*splits = \([0-9 /]*\), input.*/\1/p' "$1" | tail -1; }
kld() { awk '/^.*Mean    KLD:/ {m=$(NF-2)} /Maximum KLD:/ {x=$NF} /Same top p:/ {s=$(NF-3)} END {printf "%s %s %s", m, x, s}' "$1"; }

row() { printf '%-8s %-5s %-26s %-10s %-10s %-10s\n' "$@"; }
{
row file ngl "splits (prompt / decode)" "mean KLD" "max KLD" "same top %"
for name in dense sparse masked; do
    f=${!name}
    "$cpu/llama-perplexity" -m "$f" "${ppl[@]}" -ngl 0 --kl-divergence-base "$OUT/$name.kld" > "$OUT/$name.cpu.log" 2>&1
    for ngl in 99 16; do
        lg="$OUT/$name.vk$ngl.log"
        # partly offloaded: no op offload (the CPU layers' products copied to the device for large
        # batches), pointless on a software device and the same for both files
        off=(); [ "$ngl" = 99 ] || off=(--no-op-offload)
        "$vk/llama-perplexity" -m "$f" "${ppl[@]}" -ngl "$ngl" "${off[@]}" -lv 4 --kl-divergence-base "$OUT/$name.kld" --kl-divergence > "$lg" 2>&1 \
            || { tail -20 "$lg" >&2; exit 1; }
        read -r m x s <<< "$(kld "$lg")"
        row "$name" "$ngl" "$(splits "$lg")" "$m" "$x" "$s"
    done
done
} | tee "$OUT/summary.txt"

log "decode on the device, -ngl 99, alternated (llama-bench -n 16 -p 0, 3 rounds)"
for r in 1 2 3; do
    for name in dense sparse; do
        "$vk/llama-bench" -m "${!name}" -ngl 99 -n 16 -p 0 -r 1 -t 2 -o json 2>/dev/null |
            python -c 'import json,sys; print(sys.argv[1], json.load(sys.stdin)[0]["avg_ts"])' "$name"
    done
done | python -c 'import statistics,sys
ts = {}
for line in sys.stdin:
    k, v = line.split(); ts.setdefault(k, []).append(float(v))
d, s, n = statistics.median(ts["dense"]), statistics.median(ts["sparse"]), len(ts["dense"])
print(f"decode tg16 on the device: dense {d:.2f} t/s, sparse {s:.2f} t/s (medians of {n}), sparse/dense {s / d:.3f}x")' \
    | tee -a "$OUT/summary.txt"
