// ggufsparse: the sparse ops against the dense computation with the same mask, on the CPU
// backend, for every weight type, odd shapes, 1-4 threads and sparsity 0, 0.5 and 1.
//
// sparse_act   vs ggml's own activation op, masked here
// mul_mat_rows vs ggml_mul_mat, masked here
// axpy_sparse  vs a double-precision sum over the active rows of the dequantized weight
// axpy_sparse on packed Q4_0/Q4_1/Q8_0/Q4_K/Q5_K/Q6_K weights vs ggml_mul_mat on the original weight
// mul_mat_nm   vs a double-precision product with the masked dense weight built here from the
//              kept values, positions and permutation; and vs the type's own dot product on
//              the gathered input (bit for bit)
// nm_expand    vs the dense weight built here from the kept values and positions (exact)

#include "ggml.h"
#include "ggml-cpu.h"
#include "ggml-sparse.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <random>
#include <vector>

static int g_failures = 0;

#define CHECK(cond, ...) do { if (!(cond)) { std::printf("FAIL: " __VA_ARGS__); std::printf("\n"); g_failures++; } } while (0)

static std::vector<float> random_vec(std::mt19937 & rng, size_t n, float scale) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto & x : v) x = d(rng);
    return v;
}

static ggml_context * new_ctx() {
    ggml_init_params p = { 256u * 1024 * 1024, nullptr, false };
    return ggml_init(p);
}

static void fill_weight(ggml_tensor * w, const std::vector<float> & f) {
    const int64_t k = w->ne[0], n = w->ne[1];
    if (w->type == GGML_TYPE_F32) {
        memcpy(w->data, f.data(), f.size() * sizeof(float));
    } else {
        ggml_quantize_chunk(w->type, f.data(), w->data, 0, n, k, nullptr);
    }
}

static std::vector<float> dequant(const ggml_tensor * w) {
    const int64_t k = w->ne[0], n = w->ne[1];
    std::vector<float> out(k * n);
    for (int64_t r = 0; r < n; r++) {
        const char * row = (const char *) w->data + r * w->nb[1];
        if (w->type == GGML_TYPE_F32) {
            memcpy(out.data() + r * k, row, k * sizeof(float));
        } else {
            ggml_get_type_traits(w->type)->to_float(row, out.data() + r * k, k);
        }
    }
    return out;
}

// a mask with the given fraction of exact zeros
static std::vector<float> random_mask(std::mt19937 & rng, size_t n, float sparsity) {
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> v(n);
    size_t zeros = 0;
    for (auto & x : v) {
        const bool zero = u(rng) < sparsity;
        x = zero ? 0.0f : d(rng);
        if (!zero && x == 0.0f) x = 0.5f;   // a drawn exact zero would not be an active input
        zeros += zero;
    }
    // the mask must have the sparsity asked for, or the cases at 0.5 test dense inputs
    const double share = (double) zeros / (double) n;
    CHECK(std::fabs(share - sparsity) <= 0.5 * std::sqrt(sparsity * (1.0 - sparsity) / (double) n) * 8 + 1e-9,
          "random_mask: %.3f zeros asked, %.3f drawn", sparsity, share);
    return v;
}

static void compute(ggml_context * ctx, ggml_tensor * out, int threads) {
    ggml_cgraph * gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, out);
    ggml_graph_compute_with_ctx(ctx, gf, threads);
}

// out computed again on one thread gives the same bits: each output's sum runs in one order
// whatever the number of threads (the thresholds would turn another rounding into other channels kept)
static void check_thread_invariant(ggml_context * ctx, ggml_tensor * out, int threads, const char * what, ggml_type type) {
    if (threads == 1) {
        return;
    }
    const float * y = (const float *) out->data;
    const std::vector<float> got(y, y + ggml_nelements(out));
    compute(ctx, out, 1);
    CHECK(std::memcmp(got.data(), out->data, got.size() * sizeof(float)) == 0,
          "%s %s %s: %d threads do not give 1 thread's bits", what, ggml_type_name(type), ggml_get_name(out), threads);
}

static void test_mul_mat_rows(ggml_type type, int64_t k, int64_t n, int64_t m, float sparsity, int threads, std::mt19937 & rng) {
    ggml_context * ctx = new_ctx();
    ggml_tensor * w = ggml_new_tensor_2d(ctx, type, k, n);
    ggml_tensor * x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, m);
    ggml_tensor * mask = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n, m);
    fill_weight(w, random_vec(rng, k * n, 0.1f));
    auto xv = random_vec(rng, k * m, 1.0f);
    memcpy(x->data, xv.data(), xv.size() * sizeof(float));
    auto mv = random_mask(rng, n * m, sparsity);
    memcpy(mask->data, mv.data(), mv.size() * sizeof(float));

    ggml_tensor * sparse = ggml_mul_mat_rows(ctx, w, x, mask);
    ggml_tensor * dense  = ggml_mul_mat(ctx, w, x);
    compute(ctx, sparse, threads);
    compute(ctx, dense, threads);
    const float * ys = (const float *) sparse->data;
    const float * yd = (const float *) dense->data;
    double max_err = 0, scale = 1e-6;
    for (int64_t i = 0; i < n * m; i++) {
        const float want = mv[i] != 0.0f ? yd[i] : 0.0f;
        if (mv[i] == 0.0f) {
            CHECK(ys[i] == 0.0f, "mul_mat_rows %s: skipped row %lld is %g, not 0", ggml_type_name(type), (long long) i, ys[i]);
        }
        max_err = std::max(max_err, (double) std::fabs(ys[i] - want));
        scale = std::max(scale, (double) std::fabs(want));
    }
    CHECK(max_err <= 1e-5 * scale, "mul_mat_rows %s k=%lld n=%lld m=%lld s=%.1f t=%d: max err %g (scale %g)",
          ggml_type_name(type), (long long) k, (long long) n, (long long) m, sparsity, threads, max_err, scale);
    check_thread_invariant(ctx, sparse, threads, "mul_mat_rows", type);
    ggml_free(ctx);
}

static void test_axpy_sparse(ggml_type type, int64_t n, int64_t k, int64_t m, float sparsity, int threads, std::mt19937 & rng) {
    ggml_context * ctx = new_ctx();
    ggml_tensor * wt = ggml_new_tensor_2d(ctx, type, n, k);
    ggml_tensor * h  = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, m);
    fill_weight(wt, random_vec(rng, n * k, 0.1f));
    auto hv = random_mask(rng, k * m, sparsity);
    memcpy(h->data, hv.data(), hv.size() * sizeof(float));
    ggml_tensor * y = ggml_axpy_sparse(ctx, wt, h);
    compute(ctx, y, threads);

    const auto wf = dequant(wt);
    const float * yv = (const float *) y->data;
    double max_err = 0, scale = 1e-6;
    for (int64_t t = 0; t < m; t++) {
        for (int64_t j = 0; j < n; j++) {
            double want = 0, mag = 0;
            for (int64_t i = 0; i < k; i++) {
                want += (double) hv[t * k + i] * wf[i * n + j];
                mag  += std::fabs((double) hv[t * k + i] * wf[i * n + j]);
            }
            max_err = std::max(max_err, std::fabs(yv[t * n + j] - want));
            scale = std::max(scale, mag);
            if (sparsity == 1.0f) {
                CHECK(yv[t * n + j] == 0.0f, "axpy_sparse %s: all inactive but y=%g", ggml_type_name(type), yv[t * n + j]);
            }
        }
    }
    CHECK(max_err <= 1e-5 * scale, "axpy_sparse %s n=%lld k=%lld m=%lld s=%.1f t=%d: max err %g (scale %g)",
          ggml_type_name(type), (long long) n, (long long) k, (long long) m, sparsity, threads, max_err, scale);
    check_thread_invariant(ctx, y, threads, "axpy_sparse", type);
    ggml_free(ctx);
}

// a random N:M index for idx's rows of k inputs: n distinct of every m positions, ascending;
// returns each kept value's position (rows x k*n/m)
static std::vector<int> fill_nm_index(ggml_tensor * idx, int64_t k, int n, int m, std::mt19937 & rng) {
    const int64_t rows = idx->ne[1], kn = k / m * n;
    const int bits = ggml_sparse_nm_index_bits(m);
    std::vector<int> pos(rows * kn);
    memset(idx->data, 0, ggml_nbytes(idx));
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t g = 0; g < k / m; g++) {
            std::vector<int> p(m);
            for (int i = 0; i < m; i++) p[i] = i;
            std::shuffle(p.begin(), p.end(), rng);
            std::sort(p.begin(), p.begin() + n);
            for (int q = 0; q < n; q++) {
                const int64_t j = g * n + q;
                pos[r * kn + j] = p[q];
                const int64_t bit = j * bits;
                ((uint8_t *) idx->data + r * idx->nb[1])[bit >> 3] |= (uint8_t) (p[q] << (bit & 7));
            }
        }
    }
    return pos;
}

// rows of k inputs keeping n of every m (after the permutation `perm`, empty for none); vals in
// `type`, `threads` threads, `cols` input columns
static void test_mul_mat_nm(ggml_type type, int64_t k, int64_t rows, int64_t cols, int n, int m, bool shuffle,
                            int threads, std::mt19937 & rng) {
    const int64_t kn = k / m * n;
    ggml_context * ctx = new_ctx();
    ggml_tensor * vals = ggml_new_tensor_2d(ctx, type, kn, rows);
    ggml_tensor * idx  = ggml_new_tensor_2d(ctx, GGML_TYPE_I8, ggml_sparse_nm_index_row_size(k, n, m), rows);
    ggml_tensor * x    = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, cols);
    ggml_tensor * perm = shuffle ? ggml_new_tensor_1d(ctx, GGML_TYPE_I32, k) : nullptr;

    std::vector<int32_t> pv(k);
    for (int64_t c = 0; c < k; c++) pv[c] = (int32_t) c;
    if (shuffle) {
        std::shuffle(pv.begin(), pv.end(), rng);
        memcpy(perm->data, pv.data(), k * sizeof(int32_t));
    }
    const std::vector<int> pos = fill_nm_index(idx, k, n, m, rng);
    fill_weight(vals, random_vec(rng, rows * kn, 0.1f));
    auto xv = random_vec(rng, k * cols, 1.0f);
    memcpy(x->data, xv.data(), xv.size() * sizeof(float));

    ggml_tensor * y = ggml_mul_mat_nm(ctx, vals, idx, perm, x, n, m);
    compute(ctx, y, threads);
    const float * yv = (const float *) y->data;

    const auto wf = dequant(vals);
    const auto * traits = ggml_get_type_traits_cpu(type);
    std::vector<float> xg(kn);
    std::vector<char> xq(ggml_row_size(traits->vec_dot_type, kn) + 64);
    double max_err = 0, max_err_int8 = 0, scale = 1e-6;
    bool same_as_vec_dot = true;
    std::vector<float> xq64(k);
    for (int64_t t = 0; t < cols; t++) {
        // the 2:4 Q8_0 / Q4_0 fast path rounds the permuted input to int8 in blocks of 64 inputs
        for (int64_t b = 0; b < k / 64; b++) {
            float amax = 0.0f;
            for (int i = 0; i < 64; i++) amax = std::max(amax, std::fabs(xv[t * k + pv[b * 64 + i]]));
            const float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
            for (int i = 0; i < 64; i++) xq64[b * 64 + i] = std::nearbyint(xv[t * k + pv[b * 64 + i]] * id) * d;
        }
        for (int64_t r = 0; r < rows; r++) {
            double want = 0, want_int8 = 0, mag = 0;
            for (int64_t j = 0; j < kn; j++) {
                const int64_t c = (j / n) * m + pos[r * kn + j];
                const float xi = xv[t * k + pv[c]];
                xg[j] = xi;
                want += (double) wf[r * kn + j] * xi;
                want_int8 += k % 64 == 0 ? (double) wf[r * kn + j] * xq64[c] : 0.0;
                mag  += std::fabs((double) wf[r * kn + j] * xi);
            }
            const float got = yv[t * rows + r];
            max_err = std::max(max_err, std::fabs(got - want));
            max_err_int8 = std::max(max_err_int8, std::fabs(got - want_int8));
            scale = std::max(scale, mag);
            float dot = 0.0f;
            const char * w = (const char *) vals->data + r * vals->nb[1];
            if (traits->vec_dot_type == GGML_TYPE_F32) {
                traits->vec_dot(kn, &dot, 0, w, 0, xg.data(), 0, 1);
            } else {
                ggml_get_type_traits_cpu(traits->vec_dot_type)->from_float(xg.data(), xq.data(), kn);
                traits->vec_dot(kn, &dot, 0, w, 0, xq.data(), 0, 1);
            }
            same_as_vec_dot = same_as_vec_dot && dot == got;
        }
    }
    // the input is rounded to the type's vec_dot_type (8 bits for the quantized types)
    const double tol = traits->vec_dot_type == GGML_TYPE_F32 ? 1e-5 : type == GGML_TYPE_F16 ? 2e-3 : 2e-2;
    CHECK(max_err <= tol * scale, "mul_mat_nm %s %d:%d k=%lld rows=%lld cols=%lld perm=%d t=%d: max err %g (scale %g)",
          ggml_type_name(type), n, m, (long long) k, (long long) rows, (long long) cols, (int) shuffle, threads,
          max_err, scale);
    // 2:4 F32/F16 rows take a fused gather-and-dot (f32 input, its own summation order)
    const bool fused = n == 2 && m == 4 && (type == GGML_TYPE_F32 || type == GGML_TYPE_F16);
    // 2:4 Q8_0/Q4_0 rows (AVX2 and NEON builds) take the int8 path: then the result is the
    // masked product with the input rounded in blocks of 64, up to float summation
    const bool int8 = n == 2 && m == 4 && (type == GGML_TYPE_Q8_0 || type == GGML_TYPE_Q4_0) &&
                      max_err_int8 <= 1e-5 * scale;
    CHECK(fused || int8 || same_as_vec_dot,
          "mul_mat_nm %s %d:%d t=%d: differs from the type's own dot product on the gathered input (int8 path err %g)",
          ggml_type_name(type), n, m, threads, max_err_int8);
    check_thread_invariant(ctx, y, threads, "mul_mat_nm", type);
    ggml_free(ctx);
}

// ggml_nm_expand vs the dense weight built here from the kept values and positions: the same
// values exactly (dequantized), zeros elsewhere; quantized types keep their blocks' scales
static void test_nm_expand(ggml_type type, int64_t k, int64_t rows, int n, int m, int threads, std::mt19937 & rng) {
    const int64_t kn = k / m * n;
    ggml_context * ctx = new_ctx();
    ggml_tensor * vals = ggml_new_tensor_2d(ctx, type, kn, rows);
    ggml_tensor * idx  = ggml_new_tensor_2d(ctx, GGML_TYPE_I8, ggml_sparse_nm_index_row_size(k, n, m), rows);
    const std::vector<int> pos = fill_nm_index(idx, k, n, m, rng);
    fill_weight(vals, random_vec(rng, rows * kn, 0.1f));

    ggml_tensor * w = ggml_nm_expand(ctx, vals, idx, n, m);
    compute(ctx, w, threads);
    CHECK(w->type == type && w->ne[0] == k && w->ne[1] == rows, "nm_expand %s: shape or type", ggml_type_name(type));

    const auto kept = dequant(vals);
    const auto got  = dequant(w);
    std::vector<float> want(k * rows, 0.0f);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t j = 0; j < kn; j++) {
            want[r * k + (j / n) * m + pos[r * kn + j]] = kept[r * kn + j];
        }
    }
    int64_t differ = 0;
    for (int64_t i = 0; i < k * rows; i++) {
        differ += want[i] != got[i];
    }
    CHECK(differ == 0, "nm_expand %s %d:%d k=%lld rows=%lld t=%d: %lld values differ from the kept values at their positions",
          ggml_type_name(type), n, m, (long long) k, (long long) rows, threads, (long long) differ);
    ggml_free(ctx);
}

static void test_sparse_act(ggml_sparse_act_kind kind, int64_t n, int64_t m, bool per_channel, int threads, std::mt19937 & rng) {
    ggml_context * ctx = new_ctx();
    ggml_tensor * a   = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n, m);
    ggml_tensor * thr = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, per_channel ? n : 1);
    auto av = random_vec(rng, n * m, 1.0f);
    memcpy(a->data, av.data(), av.size() * sizeof(float));
    std::uniform_real_distribution<float> u(0.0f, 0.6f);
    float * tv = (float *) thr->data;
    for (int64_t i = 0; i < thr->ne[0]; i++) tv[i] = u(rng);
    if (per_channel) tv[0] = 0.0f;  // a zero threshold keeps every non-zero value

    ggml_tensor * y = ggml_sparse_act(ctx, a, thr, kind);
    ggml_tensor * d = kind == GGML_SPARSE_ACT_SILU ? ggml_silu(ctx, a) : kind == GGML_SPARSE_ACT_GELU ? ggml_gelu(ctx, a)
                    : kind == GGML_SPARSE_ACT_RELU ? ggml_relu(ctx, a) : a;
    compute(ctx, y, threads);
    if (d != a) compute(ctx, d, threads);
    const float * yv = (const float *) y->data;
    const float * dv = (const float *) d->data;
    int64_t zeros = 0, checked = 0;
    for (int64_t t = 0; t < m; t++) {
        for (int64_t i = 0; i < n; i++) {
            const float th = tv[per_channel ? i : 0];
            const float ref = dv[t * n + i];
            const float got = yv[t * n + i];
            zeros += got == 0.0f;
            if (std::fabs(std::fabs(ref) - th) < 1e-3f) continue;  // on the edge: the dense op's SIMD rounding may differ
            checked++;
            const float want = std::fabs(ref) > th ? ref : 0.0f;
            CHECK(std::fabs(got - want) <= 1e-3f * std::max(1.0f, std::fabs(want)) && ((want == 0.0f) == (got == 0.0f)),
                  "sparse_act kind=%d at %lld,%lld: got %g want %g (thr %g)", (int) kind, (long long) t, (long long) i, got, want, th);
        }
    }
    CHECK(checked > n * m / 2, "sparse_act: too few values checked");
    CHECK(zeros > 0, "sparse_act: nothing zeroed");
    check_thread_invariant(ctx, y, threads, "sparse_act", GGML_TYPE_F32);
    ggml_free(ctx);
}

// w [k, n] of a packable type, packed by ggml_sparse_pack_transposed: the same products as the
// dense ggml_mul_mat of the unpacked weight (both quantize h to 8 bits the same way)
static void test_axpy_packed(ggml_type type, int64_t k, int64_t n, int64_t m, float sparsity, int threads, std::mt19937 & rng) {
    ggml_context * ctx = new_ctx();
    ggml_tensor * w = ggml_new_tensor_2d(ctx, type, k, n);
    fill_weight(w, random_vec(rng, k * n, 0.1f));
    const size_t col_size = ggml_sparse_packed_column_size(type, n);
    ggml_tensor * wp = ggml_new_tensor_2d(ctx, GGML_TYPE_I8, (int64_t) col_size, k / ggml_sparse_packed_column_inputs(type));
    CHECK(ggml_sparse_pack_transposed(type, w->data, k, n, wp->data) == ggml_nbytes(wp), "pack %s: wrong size", ggml_type_name(type));
    ggml_tensor * h = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, m);
    auto hv = random_mask(rng, k * m, sparsity);
    memcpy(h->data, hv.data(), hv.size() * sizeof(float));

    ggml_tensor * sparse = ggml_axpy_sparse_packed(ctx, wp, h, type);
    ggml_tensor * dense  = ggml_mul_mat(ctx, w, h);
    compute(ctx, sparse, threads);
    compute(ctx, dense, threads);
    const float * ys = (const float *) sparse->data;
    const float * yd = (const float *) dense->data;
    const auto wf = dequant(w);
    double max_err = 0, scale = 1e-6;
    for (int64_t t = 0; t < m; t++) {
        for (int64_t j = 0; j < n; j++) {
            double mag = 0;
            for (int64_t i = 0; i < k; i++) {
                mag += std::fabs((double) hv[t * k + i] * wf[j * k + i]);
            }
            scale = std::max(scale, mag);
            max_err = std::max(max_err, (double) std::fabs(ys[t * n + j] - yd[t * n + j]));
            if (sparsity == 1.0f) {
                CHECK(ys[t * n + j] == 0.0f, "axpy packed %s: all inactive but y=%g", ggml_type_name(type), ys[t * n + j]);
            }
        }
    }
    // Q4_1's dense product uses h's block sums rounded to f16; the packed one sums exactly
    const double tol = type == GGML_TYPE_Q4_1 ? 1e-3 : 1e-5;
    CHECK(max_err <= tol * scale, "axpy packed %s k=%lld n=%lld m=%lld s=%.1f t=%d: max err %g (scale %g)",
          ggml_type_name(type), (long long) k, (long long) n, (long long) m, sparsity, threads, max_err, scale);
    check_thread_invariant(ctx, sparse, threads, "axpy packed", type);
    ggml_free(ctx);
}

// BENCH_ONLY=dense|sparse: the bench modes compute only that side (its time is reported, the other
// as 0), for counting one side's executed instructions (docs/arm.md)
static int bench_only() {
    const char * only = getenv("BENCH_ONLY");
    return only == nullptr ? -1 : std::string(only) == "dense" ? 0 : 1;
}

// `test-sparse-ops bench-nm TYPE K ROWS [REPS] [THREADS]`: one token through a K x ROWS weight,
// dense ggml_mul_mat against 2:4 ggml_mul_mat_nm (with a permutation), alternated; medians.
static int bench_nm(const char * type_name, int64_t k, int64_t rows, int reps, int threads) {
    ggml_type type = GGML_TYPE_COUNT;
    for (int t = 0; t < GGML_TYPE_COUNT; t++) {
        if (ggml_get_type_traits((ggml_type) t)->type_name && std::string(type_name) == ggml_type_name((ggml_type) t)) {
            type = (ggml_type) t;
        }
    }
    if (type == GGML_TYPE_COUNT) {
        std::printf("unknown type %s\n", type_name);
        return 2;
    }
    std::mt19937 rng(7);
    ggml_init_params p = { (size_t) (k * rows * 8 + (64u << 20)), nullptr, false };
    ggml_context * ctx = ggml_init(p);
    const int n = 2, m = 4;
    const int64_t kn = k / m * n;
    ggml_tensor * dense = ggml_new_tensor_2d(ctx, type, k, rows);
    ggml_tensor * vals  = ggml_new_tensor_2d(ctx, type, kn, rows);
    ggml_tensor * idx   = ggml_new_tensor_2d(ctx, GGML_TYPE_I8, ggml_sparse_nm_index_row_size(k, n, m), rows);
    ggml_tensor * perm  = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, k);
    ggml_tensor * x     = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, 1);
    fill_weight(dense, random_vec(rng, k * rows, 0.1f));
    fill_weight(vals, random_vec(rng, kn * rows, 0.1f));
    for (int64_t i = 0; i < ggml_nelements(idx); i++) ((uint8_t *) idx->data)[i] = (uint8_t) (rng() & 0xff) | 0x44;
    std::vector<int32_t> pv(k);
    for (int64_t c = 0; c < k; c++) pv[c] = (int32_t) c;
    std::shuffle(pv.begin(), pv.end(), rng);
    memcpy(perm->data, pv.data(), k * sizeof(int32_t));
    auto xv = random_vec(rng, k, 1.0f);
    memcpy(x->data, xv.data(), k * sizeof(float));
    ggml_tensor * yd = ggml_mul_mat(ctx, dense, x);
    ggml_tensor * ys = ggml_mul_mat_nm(ctx, vals, idx, perm, x, n, m);
    ggml_cgraph * gd = ggml_new_graph(ctx);
    ggml_build_forward_expand(gd, yd);
    ggml_cgraph * gs = ggml_new_graph(ctx);
    ggml_build_forward_expand(gs, ys);
    std::vector<double> td, ts;
    for (int r = 0; r < reps; r++) {
        for (int which = 0; which < 2; which++) {
            if (bench_only() >= 0 && which != bench_only()) {
                (which == 0 ? td : ts).push_back(0.0);
                continue;
            }
            const auto t0 = std::chrono::steady_clock::now();
            ggml_graph_compute_with_ctx(ctx, which == 0 ? gd : gs, threads);
            const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
            (which == 0 ? td : ts).push_back(us);
        }
    }
    std::sort(td.begin(), td.end());
    std::sort(ts.begin(), ts.end());
    const double md = td[td.size() / 2], ms = ts[ts.size() / 2];
    std::printf("%s k=%lld rows=%lld threads=%d reps=%d: dense %.1f us, 2:4 %.1f us, dense/2:4 %.2fx\n",
                ggml_type_name(type), (long long) k, (long long) rows, threads, reps, md, ms, md / ms);
    ggml_free(ctx);
    return 0;
}

// `test-sparse-ops bench-packed|bench-rows TYPE K N SPARSITY [REPS] [THREADS] [TOKENS]`: TOKENS
// tokens through a stack of K x N weights larger than the caches (as a model's layers are),
// dense ggml_mul_mat on the weights against ggml_axpy_sparse_packed on their packed copies with
// inputs at SPARSITY (or ggml_mul_mat_rows with that share of rows skipped), alternated; medians,
// and the bytes each reads per second.
static int bench_packed(const char * type_name, int64_t k, int64_t n, float sparsity, int reps, int threads, int64_t tokens, bool rows) {
    ggml_type type = GGML_TYPE_COUNT;
    for (int t = 0; t < GGML_TYPE_COUNT; t++) {
        if (ggml_get_type_traits((ggml_type) t)->type_name && std::string(type_name) == ggml_type_name((ggml_type) t)) {
            type = (ggml_type) t;
        }
    }
    if (type == GGML_TYPE_COUNT || (!rows && (ggml_sparse_packed_column_size(type, n) == 0 || k % ggml_sparse_packed_column_inputs(type) != 0))) {
        std::printf("cannot pack %s %lld x %lld\n", type_name, (long long) k, (long long) n);
        return 2;
    }
    std::mt19937 rng(7);
    const size_t w_bytes = ggml_row_size(type, k) * n;
    const int layers = getenv("BENCH_LAYERS") ? atoi(getenv("BENCH_LAYERS")) : (int) std::max<size_t>(4, (size_t) (512u << 20) / (2 * w_bytes));   // about 512 MiB in all
    ggml_init_params p = { (size_t) layers * 2 * w_bytes + (size_t) k * tokens * 8 + n * tokens * 8 * layers + (256u << 20), nullptr, false };
    ggml_context * ctx = ggml_init(p);
    ggml_tensor * h = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, tokens);
    auto hv = random_mask(rng, k * tokens, rows ? 0.0f : sparsity);
    // BENCH_SKEW=random|sorted: inputs active with per-channel rates spread over (0, 1) around
    // SPARSITY (as calibrated thresholds make them), in random order or sorted by rate
    if (const char * skew = getenv("BENCH_SKEW"); skew && !rows) {
        std::vector<float> rate(k);
        std::uniform_real_distribution<float> u(0.0f, 1.0f);
        for (auto & r : rate) r = std::pow(u(rng), sparsity / (1.0f - sparsity + 1e-6f));   // mean 1 - sparsity
        if (std::string(skew) == "sorted") std::sort(rate.begin(), rate.end());
        std::normal_distribution<float> d(0.0f, 1.0f);
        for (int64_t t = 0; t < tokens; t++) {
            for (int64_t i = 0; i < k; i++) {
                hv[t*k + i] = u(rng) < rate[i] ? d(rng) + 1e-3f : 0.0f;
            }
        }
    }
    memcpy(h->data, hv.data(), hv.size() * sizeof(float));
    // rows: the mask of output rows the row-skipping product computes
    ggml_tensor * mask = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n, tokens);
    const auto mv = random_mask(rng, n * tokens, sparsity);
    memcpy(mask->data, mv.data(), mv.size() * sizeof(float));
    const auto wf = random_vec(rng, k * n, 0.1f);
    ggml_cgraph * gd = ggml_new_graph(ctx);
    ggml_cgraph * gs = ggml_new_graph(ctx);
    for (int l = 0; l < layers; l++) {
        ggml_tensor * w  = ggml_new_tensor_2d(ctx, type, k, n);
        fill_weight(w, wf);
        ggml_build_forward_expand(gd, ggml_mul_mat(ctx, w, h));
        if (rows) {
            ggml_build_forward_expand(gs, ggml_mul_mat_rows(ctx, w, h, mask));
            continue;
        }
        ggml_tensor * wp = ggml_new_tensor_2d(ctx, GGML_TYPE_I8, (int64_t) ggml_sparse_packed_column_size(type, n), k / ggml_sparse_packed_column_inputs(type));
        ggml_sparse_pack_transposed(type, w->data, k, n, wp->data);
        ggml_build_forward_expand(gs, ggml_axpy_sparse_packed(ctx, wp, h, type));
    }
    // one work buffer per graph, planned once (compute_with_ctx would take it from ctx per call)
    ggml_cplan plans[2] = { ggml_graph_plan(gd, threads, nullptr), ggml_graph_plan(gs, threads, nullptr) };
    std::vector<uint8_t> work[2];
    for (int i = 0; i < 2; i++) {
        work[i].resize(plans[i].work_size + 1);
        plans[i].work_data = work[i].data();
    }
    std::vector<double> td, ts;
    for (int r = 0; r < reps; r++) {
        for (int which = 0; which < 2; which++) {
            if (bench_only() >= 0 && which != bench_only()) {
                (which == 0 ? td : ts).push_back(0.0);
                continue;
            }
            const auto t0 = std::chrono::steady_clock::now();
            ggml_graph_compute(which == 0 ? gd : gs, &plans[which]);
            const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
            (which == 0 ? td : ts).push_back(us / layers);
        }
    }
    std::sort(td.begin(), td.end());
    std::sort(ts.begin(), ts.end());
    const double md = td[td.size() / 2], ms = ts[ts.size() / 2];
    const double packed_bytes = rows ? (double) w_bytes : (double) ggml_sparse_packed_column_size(type, n) * (double) (k / ggml_sparse_packed_column_inputs(type));
    std::printf("%s %s k=%lld n=%lld tokens=%lld sparsity=%.2f threads=%d layers=%d reps=%d: dense %.1f us (%.1f GB/s), "
                "sparse %.1f us (%.1f GB/s of the active share), dense/sparse %.2fx (bound %.2fx)\n", rows ? "rows" : "packed",
                ggml_type_name(type), (long long) k, (long long) n, (long long) tokens, sparsity, threads, layers, reps,
                md, w_bytes / md / 1e3, ms, (1.0 - sparsity) * packed_bytes / ms / 1e3, md / ms,
                w_bytes / ((1.0 - sparsity) * packed_bytes));
    ggml_free(ctx);
    return 0;
}

int main(int argc, char ** argv) {
    if (argc >= 6 && (std::string(argv[1]) == "bench-packed" || std::string(argv[1]) == "bench-rows")) {
        return bench_packed(argv[2], std::atoll(argv[3]), std::atoll(argv[4]), (float) std::atof(argv[5]),
                            argc > 6 ? std::atoi(argv[6]) : 11, argc > 7 ? std::atoi(argv[7]) : 2,
                            argc > 8 ? std::atoll(argv[8]) : 1, std::string(argv[1]) == "bench-rows");
    }
    if (argc >= 5 && std::string(argv[1]) == "bench-nm") {
        return bench_nm(argv[2], std::atoll(argv[3]), std::atoll(argv[4]), argc > 5 ? std::atoi(argv[5]) : 21,
                        argc > 6 ? std::atoi(argv[6]) : 2);
    }
    // the SIMD the sparse kernels were compiled with (ggml-cpu's flags): AVX2, or NEON with or
    // without the dot-product instructions; each has its own kernels, all checked below
    std::printf("kernels: AVX2=%d NEON=%d DOTPROD=%d\n", ggml_cpu_has_avx2(), ggml_cpu_has_neon(), ggml_cpu_has_dotprod());
    // `--threads 2,3`: only these thread counts (default 1,2,3,4), for slow emulated runs. Every
    // case above 1 thread is also computed on 1 thread and compared bit for bit, and N:M cases
    // take a permutation at odd counts only, so 2,3 still reaches every path.
    std::vector<int> thread_counts = { 1, 2, 3, 4 };
    for (int i = 1; i + 1 < argc; i++) {
        if (std::string(argv[i]) == "--threads") {
            thread_counts.clear();
            const char * p = argv[i + 1];
            for (;;) {
                char * end;
                const long t = std::strtol(p, &end, 10);
                if (end == p || t < 1 || t > 64) {
                    std::printf("--threads takes thread counts (1-64) separated by commas, not %s\n", argv[i + 1]);
                    return 2;
                }
                thread_counts.push_back((int) t);
                if (*end != ',') {
                    break;
                }
                p = end + 1;
            }
        }
    }
    std::printf("threads:");
    for (int t : thread_counts) std::printf(" %d", t);
    std::printf("\n");
    std::mt19937 rng(42);
    const ggml_type types[] = {
        GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0,
        GGML_TYPE_Q5_1, GGML_TYPE_Q8_0, GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K,
    };
    int cases = 0;
    for (ggml_type type : types) {
        const int64_t bs = ggml_blck_size(type);
        // the weight's row length must be whole blocks; the other dimension is odd
        const int64_t row = bs == 1 ? 67 : 2 * bs;
        for (int threads : thread_counts) {
            for (float s : {0.0f, 0.5f, 1.0f}) {
                for (int64_t m : {1, 3}) {
                    test_mul_mat_rows(type, row, 37, m, s, threads, rng);
                    test_axpy_sparse(type, row * 3, 29, m, s, threads, rng);
                    cases += 2;
                }
            }
        }
    }
    // unquantized weights with outputs in spans of 32 (the fused kernels' unit), split unevenly
    for (ggml_type type : { GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16 }) {
        for (int threads : thread_counts) {
            for (float s : {0.0f, 0.5f, 1.0f}) {
                for (int64_t m : {1, 3}) {
                    test_axpy_sparse(type, 7 * 32, 29, m, s, threads, rng);
                    cases++;
                }
            }
        }
    }
    for (ggml_type type : { GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K }) {
        CHECK(ggml_sparse_packed_column_size(type, 48) == 0, "%s: 48 outputs cannot be packed", ggml_type_name(type));
        const int64_t col  = ggml_sparse_packed_column_inputs(type);
        // outputs come in spans of 32 (64 for the K-quants)
        const int64_t span = col == 32 ? 32 : 64;
        if (span == 64) {
            CHECK(ggml_sparse_packed_column_size(type, 96) == 0, "%s: 96 outputs cannot be packed", ggml_type_name(type));
        }
        for (int threads : thread_counts) {
            for (float s : {0.0f, 0.5f, 1.0f}) {
                for (int64_t m : {1, 3}) {
                    // columns of inputs (fewer columns than threads, for the K-quants' 256-input
                    // columns); spans of outputs split unevenly over the threads
                    test_axpy_packed(type, (col == 32 ? 7 : 3) * col, 3 * span, m, s, threads, rng);
                    test_axpy_packed(type, (col == 32 ? 5 : 1) * col, 9 * span, m, s, threads, rng);
                    // 21 spans (a count divisible by 3 and 7: the K-quants' scattered span order)
                    test_axpy_packed(type, col, 21 * span, m, s, threads, rng);
                    // 24 spans, as a 1536-wide model's (8 a thread at 3 threads)
                    test_axpy_packed(type, 6 * col, 24 * span, m, s, threads, rng);
                    cases += 4;
                }
            }
        }
    }
    for (ggml_type type : { GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q5_0, GGML_TYPE_F16 }) {
        CHECK(ggml_sparse_packed_column_size(type, 256) == 0, "%s cannot be packed", ggml_type_name(type));
    }
    const int patterns[][2] = { {2, 4}, {4, 8}, {1, 4}, {3, 16}, {1, 2} };
    for (ggml_type type : types) {
        const int64_t bs = ggml_blck_size(type);
        for (const auto & nm : patterns) {
            const int n = nm[0], m = nm[1];
            // whole groups whose kept values are whole blocks; unquantized types get an odd group
            // count (a tail after the 2:4 fast path's 8-value spans)
            const int64_t groups = bs == 1 ? 105 : 2 * bs / std::gcd((int64_t) n, bs);
            const int64_t k = groups * m;
            for (int threads : thread_counts) {
                for (int64_t cols : {1, 3}) {
                    test_mul_mat_nm(type, k, 37, cols, n, m, threads % 2 == 1, threads, rng);
                    cases++;
                }
            }
        }
    }
    // expansion (prompts of packed-only files): every expandable type, patterns where n divides m
    // and 32, odd row counts, 1-4 threads
    const int expand_patterns[][2] = { {2, 4}, {4, 8}, {1, 4}, {8, 16}, {1, 2} };
    for (ggml_type type : { GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0 }) {
        for (const auto & nm : expand_patterns) {
            // unquantized types also get one more group: a tail after the 2:4 fast path's 8-input spans
            const int64_t k = 3 * 32 * nm[1] / nm[0];
            for (int64_t kk : { k, ggml_is_quantized(type) ? k : k + nm[1] }) {
                for (int threads : thread_counts) {
                    test_nm_expand(type, kk, 37, nm[0], nm[1], threads, rng);
                    cases++;
                }
            }
        }
    }
    CHECK(ggml_sparse_nm_expandable(GGML_TYPE_F16, 3, 7), "F16 expands at any N:M");
    CHECK(!ggml_sparse_nm_expandable(GGML_TYPE_Q8_0, 3, 6), "Q8_0 at 3:6: 32 kept values span a group boundary");
    CHECK(!ggml_sparse_nm_expandable(GGML_TYPE_Q4_1, 2, 4), "Q4_1 cannot hold an exact zero beside its values");
    CHECK(ggml_sparse_nm_index_row_size(4096, 2, 4) == 512, "2:4 index: 2 bits per kept value");
    CHECK(ggml_sparse_nm_index_row_size(4096, 4, 8) == 1024, "4:8 index: 4 bits per kept value");
    for (int threads : thread_counts) {
        for (auto kind : {GGML_SPARSE_ACT_NONE, GGML_SPARSE_ACT_SILU, GGML_SPARSE_ACT_GELU, GGML_SPARSE_ACT_RELU}) {
            for (bool per_channel : {true, false}) {
                test_sparse_act(kind, 301, 3, per_channel, threads, rng);
                test_sparse_act(kind, 1003, 1, per_channel, threads, rng);   // decode: one row split
                cases += 2;
            }
        }
    }
    std::printf("%d cases, %d failures\n", cases, g_failures);
    return g_failures == 0 ? 0 : 1;
}
