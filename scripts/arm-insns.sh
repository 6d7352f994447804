#!/usr/bin/env bash
# Executed instructions of the sparse kernels against the dense product, on aarch64 (under qemu)
# and on x86-64: a proxy for speed on hardware this machine does not have, not a speed measurement
# (an instruction count ignores memory traffic, which decides the speed of a memory-bound decode).
#
#   bash scripts/arm-insns.sh                    # the table of docs/arm.md
#   bash scripts/arm-insns.sh "bench-nm q8_0 4096 11008" ...   # chosen rows only
#
# Each kernel is one test-sparse-ops bench run (one token, one layer of the shape, 1 thread) with
# BENCH_ONLY=dense or sparse. aarch64: the builds of scripts/arm-check.sh under qemu-aarch64
# (package qemu-user: the dynamically linked emulator, which loads TCG plugins) with a small plugin
# built here that counts every executed guest instruction; the count of the product is the
# difference between 3 and 1 repetitions, halved (the set-up, identical in both, cancels).
# x86-64: the runtime's own test-sparse-ops (`ggufsparse build-runtime`, portable AVX2 build; or
# X86_BIN) under valgrind's callgrind, counting inside ggml_graph_compute only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
QEMU=$(command -v qemu-aarch64 || true)
[ -n "$QEMU" ] || { echo "arm-insns: no qemu-aarch64: install qemu-user (its plugins are needed)" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "arm-insns: no valgrind: install valgrind" >&2; exit 2; }
SYSROOT=/usr/aarch64-linux-gnu
# mode type K N [sparsity]: Llama-2-7B's shapes (n_embd 4096, n_ff 11008), sparsity 0.5
KERNELS=(
  "bench-packed q4_0 11008 4096 0.5"
  "bench-packed q8_0 11008 4096 0.5"
  "bench-packed q4_K 11008 4096 0.5"
  "bench-packed q6_K 11008 4096 0.5"
  "bench-packed q4_0 4096 4096 0.5"
  "bench-rows q4_0 4096 11008 0.5"
  "bench-nm q8_0 4096 11008"
)
[ $# -eq 0 ] || KERNELS=("$@")

cache=$("$PY" -c 'from ggufsparse.paths import cache_dir; print(cache_dir())')
out="$cache/arm-insns"
mkdir -p "$out"
declare -A ARM
while read -r name _ _ bin; do
  ARM[${name%:}]=${bin#binary=}
done < <(BUILD_ONLY=1 bash "$ROOT/scripts/arm-check.sh")
X86=${X86_BIN:-$("$PY" -c 'from ggufsparse.runtime import locate; print(locate.tool("test-sparse-ops"))')}

# a TCG plugin counting executed instructions (QEMU's plugin API version 1, as in QEMU 7.2)
cat > "$out/count.c" <<'EOF'
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, void (*cb)(qemu_plugin_id_t, struct qemu_plugin_tb *));
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb * tb, enum qemu_plugin_op op, void * ptr, uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb * tb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, void (*cb)(qemu_plugin_id_t, void *), void * userdata);
__attribute__((visibility("default"))) int qemu_plugin_version = 1;
static uint64_t insns;
static void on_trans(qemu_plugin_id_t id, struct qemu_plugin_tb * tb) {
    (void) id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &insns, qemu_plugin_tb_n_insns(tb));
}
static void on_exit(qemu_plugin_id_t id, void * p) {
    (void) id; (void) p;
    fprintf(stderr, "guest instructions: %" PRIu64 "\n", insns);
}
__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t * info, int argc, char ** argv) {
    (void) info; (void) argc; (void) argv;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_trans);
    qemu_plugin_register_atexit_cb(id, on_exit, NULL);
    return 0;
}
EOF
cc -O2 -shared -fPIC -o "$out/libcount.so" "$out/count.c"

# bench arguments for REPS repetitions: one layer, 1 thread, 1 token
bench_args() {
  local reps=$1 mode=$2 type=$3 k=$4 n=$5 s=${6:-}
  if [ "$mode" = bench-nm ]; then echo "$mode $type $k $n $reps 1"; else echo "$mode $type $k $n $s $reps 1 1"; fi
}

arm_count() {  # binary side kernel...
  local bin=$1 side=$2; shift 2
  local c1 c3
  # shellcheck disable=SC2046
  c1=$(BENCH_LAYERS=1 BENCH_ONLY=$side QEMU_LD_PREFIX=$SYSROOT "$QEMU" -cpu max -plugin "$out/libcount.so" \
       "$bin" $(bench_args 1 "$@") 2>&1 >/dev/null | sed -n 's/^guest instructions: //p')
  # shellcheck disable=SC2046
  c3=$(BENCH_LAYERS=1 BENCH_ONLY=$side QEMU_LD_PREFIX=$SYSROOT "$QEMU" -cpu max -plugin "$out/libcount.so" \
       "$bin" $(bench_args 3 "$@") 2>&1 >/dev/null | sed -n 's/^guest instructions: //p')
  echo $(( (c3 - c1) / 2 ))
}

x86_count() {  # side kernel...
  local side=$1; shift
  # shellcheck disable=SC2046
  BENCH_LAYERS=1 BENCH_ONLY=$side valgrind --tool=callgrind --toggle-collect=ggml_graph_compute \
    --callgrind-out-file="$out/callgrind.out" "$X86" $(bench_args 1 "$@") >/dev/null 2>&1
  sed -n 's/^totals: //p' "$out/callgrind.out" | awk '{print $1}'
}

ratio() { awk -v d="$1" -v s="$2" 'BEGIN { printf "%.2f", d / s }'; }
mega() { awk -v x="$1" 'BEGIN { printf "%.1f", x / 1e6 }'; }

echo "| kernel (Llama-2-7B shape, sparsity 0.5) | x86-64 AVX2 dense / sparse (M) | ratio | aarch64 dotprod dense / sparse (M) | ratio | aarch64 armv8-a dense / sparse (M) | ratio |"
echo "|---|---|---|---|---|---|---|"
for kern in "${KERNELS[@]}"; do
  read -r -a kv <<< "$kern"
  row="| \`${kern}\` |"
  xd=$(x86_count dense "${kv[@]}"); xs=$(x86_count sparse "${kv[@]}")
  row+=" $(mega "$xd") / $(mega "$xs") | $(ratio "$xd" "$xs")x |"
  for b in dotprod armv8; do
    ad=$(arm_count "${ARM[$b]}" dense "${kv[@]}"); as=$(arm_count "${ARM[$b]}" sparse "${kv[@]}")
    row+=" $(mega "$ad") / $(mega "$as") | $(ratio "$ad" "$as")x |"
  done
  echo "$row"
done
