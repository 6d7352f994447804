// ggufsparse: CPU forwards of the activation-sparsity ops.
//
// sparse_act:   y = act(a) where |act(a)| > thr, else 0           (rows split over elements)
// mul_mat_rows: y[r,t] = mask[r,t] != 0 ? dot(w[r], x[:,t]) : 0   (rows split across threads)
// axpy_sparse:  y[:,t] = sum_{i: h[i,t] != 0} h[i,t] * wt[i,:]     (output split across threads;
//               packed Q4_0/Q4_1/Q8_0 weights in sparse-packed.c)
// mul_mat_nm:   N:M sparse weights (sparse-nm.c)
//
// Every weight type goes through the type traits (vec_dot, to_float), as ggml_mul_mat does.

#include "sparse-ops.h"
#include "sparse-nm.h"
#include "sparse-packed.h"

#define GGML_COMMON_DECL_C
#include "ggml-common.h"

#include "ggml-cpu.h"
#include "ggml-cpu-impl.h"
#include "ggml-impl.h"
#include "ggml-sparse.h"
#include "vec.h"

#include <string.h>

#define SPARSE_CACHE_LINE 64
#define SPARSE_ROWS_AHEAD 2   // active rows prefetched ahead by mul_mat_rows

#if defined(__GNUC__)
#define GGML_PREFETCH(p) __builtin_prefetch((p), 0, 3)
#else
#define GGML_PREFETCH(p) ((void) (p))
#endif

static inline float sparse_act_apply(enum ggml_sparse_act_kind kind, float x) {
    switch (kind) {
        case GGML_SPARSE_ACT_SILU: return ggml_silu_f32(x);
        case GGML_SPARSE_ACT_GELU: return ggml_gelu_f32(x);
        case GGML_SPARSE_ACT_RELU: return x > 0.0f ? x : 0.0f;
        case GGML_SPARSE_ACT_NONE:
        default:                   return x;
    }
}

void ggml_compute_forward_sparse_act(const struct ggml_compute_params * params, struct ggml_tensor * dst) {
    const struct ggml_tensor * a   = dst->src[0];
    const struct ggml_tensor * thr = dst->src[1];
    const enum ggml_sparse_act_kind kind = (enum ggml_sparse_act_kind) ggml_get_op_params_i32(dst, 0);

    const int64_t n     = a->ne[0];
    const int64_t nrows = ggml_nrows(a);
    const bool    per_channel = thr->ne[0] == n && n > 1;
    const float * t     = (const float *) thr->data;

    // split each row's elements: decode has one row
    const int64_t i0 = (n * params->ith) / params->nth;
    const int64_t i1 = (n * (params->ith + 1)) / params->nth;

    // the zero count is read only by the sparsity report
    const bool count = ggml_sparse_stats_counting(dst);
    uint64_t zeros = 0;
    for (int64_t r = 0; r < nrows; r++) {
        const int64_t i3 = r / (a->ne[1] * a->ne[2]);
        const int64_t i2 = (r / a->ne[1]) % a->ne[2];
        const int64_t i1r = r % a->ne[1];
        const float * x = (const float *) ((const char *) a->data + i1r*a->nb[1] + i2*a->nb[2] + i3*a->nb[3]) + i0;
        float       * y = (float *) ((char *) dst->data + i1r*dst->nb[1] + i2*dst->nb[2] + i3*dst->nb[3]) + i0;
        const int64_t m = i1 - i0;
        if (kind == GGML_SPARSE_ACT_SILU) {
            // ggml's vectorised SiLU, the one its fused SwiGLU uses: prompts spend real time here
            ggml_vec_silu_f32((int) m, y, x);
        } else {
            for (int64_t i = 0; i < m; i++) {
                y[i] = sparse_act_apply(kind, x[i]);
            }
        }
        // branch-free, so the compiler vectorises it
        if (per_channel) {
            for (int64_t i = 0; i < m; i++) {
                y[i] = fabsf(y[i]) > t[i0 + i] ? y[i] : 0.0f;
            }
        } else {
            const float th = t[0];
            for (int64_t i = 0; i < m; i++) {
                y[i] = fabsf(y[i]) > th ? y[i] : 0.0f;
            }
        }
        for (int64_t i = 0; count && i < m; i++) {
            zeros += y[i] == 0.0f;
        }
    }
    if (count) {
        ggml_sparse_stats_add(dst, zeros, (uint64_t) (i1 - i0) * nrows);
    }
}

static size_t mul_mat_rows_x_size(const struct ggml_tensor * node) {
    const struct ggml_tensor * w = node->src[0];
    const struct ggml_tensor * x = node->src[1];
    const enum ggml_type vec_dot_type = ggml_get_type_traits_cpu(w->type)->vec_dot_type;
    return vec_dot_type == GGML_TYPE_F32 ? 0 : ggml_row_size(vec_dot_type, x->ne[0]) * x->ne[1];
}

void ggml_compute_forward_mul_mat_rows(const struct ggml_compute_params * params, struct ggml_tensor * dst) {
    const struct ggml_tensor * w    = dst->src[0];
    const struct ggml_tensor * x    = dst->src[1];
    const struct ggml_tensor * mask = dst->src[2];

    const int ith = params->ith;
    const int nth = params->nth;

    const struct ggml_type_traits_cpu * traits = ggml_get_type_traits_cpu(w->type);
    const enum ggml_type vec_dot_type = traits->vec_dot_type;
    const int64_t k = w->ne[0];
    const int64_t n = w->ne[1];
    const int64_t m = x->ne[1];

    // x in the weight type's vec_dot_type, converted once by all threads together
    const char * xq = (const char *) x->data;
    size_t xq_row = x->nb[1];
    if (vec_dot_type != GGML_TYPE_F32) {
        const ggml_from_float_t from_float = ggml_get_type_traits_cpu(vec_dot_type)->from_float;
        xq_row = ggml_row_size(vec_dot_type, k);
        for (int64_t t = ith; t < m; t += nth) {
            from_float((const float *) ((const char *) x->data + t*x->nb[1]), (char *) params->wdata + t*xq_row, k);
        }
        xq = (const char *) params->wdata;
        ggml_barrier(params->threadpool);
    }

    const int64_t r0 = (n * ith) / nth;
    const int64_t r1 = (n * (ith + 1)) / nth;
    const size_t  row_size = ggml_row_size(w->type, k);
    uint64_t skipped = 0;
    for (int64_t t = 0; t < m; t++) {
        const float * mk = (const float *) ((const char *) mask->data + t*mask->nb[1]);
        float       * y  = (float *) ((char *) dst->data + t*dst->nb[1]);
        // the active rows are short runs with gaps: a few active rows ahead are prefetched, where
        // the hardware would fetch the inactive rows that follow a run instead
        int64_t ahead   = r0;   // rows before it were looked at for prefetching
        int     n_ahead = 0;    // active rows prefetched beyond the current one
        for (int64_t r = r0; r < r1; r++) {
            if (mk[r] != 0.0f) {
                if (r < ahead) {
                    n_ahead--;   // r is one of the rows prefetched ahead
                } else {
                    ahead = r + 1;
                }
                for (; ahead < r1 && n_ahead < SPARSE_ROWS_AHEAD; ahead++) {
                    if (mk[ahead] != 0.0f) {
                        const char * row = (const char *) w->data + ahead*w->nb[1];
                        for (size_t b = 0; b < row_size; b += SPARSE_CACHE_LINE) {
                            GGML_PREFETCH(row + b);
                        }
                        n_ahead++;
                    }
                }
                traits->vec_dot(k, y + r, 0, (const char *) w->data + r*w->nb[1], 0, xq + t*xq_row, 0, 1);
            } else {
                y[r] = 0.0f;
                skipped++;
            }
        }
    }
    // counted only where the node carries a stat slot (a predictor's gate rows)
    if (ggml_sparse_stats_counting(dst)) {
        ggml_sparse_stats_add(dst, skipped, (uint64_t) (r1 - r0) * m);
    }
}

// Fused dequantize-and-accumulate of four rows at a time: y[0, 32*nb) += sum_r c[r] * row_r.
// Reading y once per four rows keeps the kernel near memory speed; the rows are whole blocks.
typedef void (*sparse_axpy4_t)(const char * const rows[4], const float c[4], float * y, int64_t nb);

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

static inline __m256 sparse_i8x8_to_ps(__m128i v) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
}

// acc[0..3] (32 floats) += sc * (32 int8: elements 0-15 in lo, 16-31 in hi)
static inline void sparse_fma_i8x32(__m256 sc, __m128i lo, __m128i hi, __m256 acc[4]) {
    acc[0] = _mm256_fmadd_ps(sc, sparse_i8x8_to_ps(lo), acc[0]);
    acc[1] = _mm256_fmadd_ps(sc, sparse_i8x8_to_ps(_mm_srli_si128(lo, 8)), acc[1]);
    acc[2] = _mm256_fmadd_ps(sc, sparse_i8x8_to_ps(hi), acc[2]);
    acc[3] = _mm256_fmadd_ps(sc, sparse_i8x8_to_ps(_mm_srli_si128(hi, 8)), acc[3]);
}

static inline void sparse_load32(const float * y, __m256 acc[4]) {
    for (int i = 0; i < 4; i++) {
        acc[i] = _mm256_loadu_ps(y + 8*i);
    }
}

// y[0..32) = acc + offset
static inline void sparse_store32(float * y, const __m256 acc[4], float offset) {
    const __m256 off = _mm256_set1_ps(offset);
    for (int i = 0; i < 4; i++) {
        _mm256_storeu_ps(y + 8*i, _mm256_add_ps(acc[i], off));
    }
}

// nibbles of a 4-bit block: elements 0-15 in the low halves, 16-31 in the high halves
static inline void sparse_nibbles(const uint8_t * qs, __m128i * lo, __m128i * hi) {
    const __m128i v = _mm_loadu_si128((const __m128i *) qs);
    const __m128i m = _mm_set1_epi8(0x0F);
    *lo = _mm_and_si128(v, m);
    *hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
}

static void sparse_axpy4_q8_0(const char * const rows[4], const float c[4], float * y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++) {
        __m256 acc[4];
        sparse_load32(y + 32*b, acc);
        for (int r = 0; r < 4; r++) {
            const block_q8_0 * blk = (const block_q8_0 *) rows[r] + b;
            sparse_fma_i8x32(_mm256_set1_ps(c[r] * GGML_CPU_FP16_TO_FP32(blk->d)),
                             _mm_loadu_si128((const __m128i *) blk->qs),
                             _mm_loadu_si128((const __m128i *) (blk->qs + 16)), acc);
        }
        sparse_store32(y + 32*b, acc, 0.0f);
    }
}

static void sparse_axpy4_q4_0(const char * const rows[4], const float c[4], float * y, int64_t nb) {
    const __m128i eight = _mm_set1_epi8(8);
    for (int64_t b = 0; b < nb; b++) {
        __m256 acc[4];
        sparse_load32(y + 32*b, acc);
        for (int r = 0; r < 4; r++) {
            const block_q4_0 * blk = (const block_q4_0 *) rows[r] + b;
            __m128i lo, hi;
            sparse_nibbles(blk->qs, &lo, &hi);
            sparse_fma_i8x32(_mm256_set1_ps(c[r] * GGML_CPU_FP16_TO_FP32(blk->d)),
                             _mm_sub_epi8(lo, eight), _mm_sub_epi8(hi, eight), acc);
        }
        sparse_store32(y + 32*b, acc, 0.0f);
    }
}

static void sparse_axpy4_q4_1(const char * const rows[4], const float c[4], float * y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++) {
        __m256 acc[4];
        sparse_load32(y + 32*b, acc);
        float offset = 0.0f; // sum of c[r] * m over the four blocks: w = d*q + m
        for (int r = 0; r < 4; r++) {
            const block_q4_1 * blk = (const block_q4_1 *) rows[r] + b;
            offset += c[r] * GGML_CPU_FP16_TO_FP32(blk->m);
            __m128i lo, hi;
            sparse_nibbles(blk->qs, &lo, &hi);
            sparse_fma_i8x32(_mm256_set1_ps(c[r] * GGML_CPU_FP16_TO_FP32(blk->d)), lo, hi, acc);
        }
        sparse_store32(y + 32*b, acc, offset);
    }
}

// F16 and F32 rows: "blocks" of 32 elements
static void sparse_axpy4_f16(const char * const rows[4], const float c[4], float * y, int64_t nb) {
    for (int64_t j = 0; j < 32*nb; j += 8) {
        __m256 a = _mm256_loadu_ps(y + j);
        for (int r = 0; r < 4; r++) {
            const __m256 w = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) ((const ggml_fp16_t *) rows[r] + j)));
            a = _mm256_fmadd_ps(_mm256_set1_ps(c[r]), w, a);
        }
        _mm256_storeu_ps(y + j, a);
    }
}

static void sparse_axpy4_f32(const char * const rows[4], const float c[4], float * y, int64_t nb) {
    for (int64_t j = 0; j < 32*nb; j += 8) {
        __m256 a = _mm256_loadu_ps(y + j);
        for (int r = 0; r < 4; r++) {
            a = _mm256_fmadd_ps(_mm256_set1_ps(c[r]), _mm256_loadu_ps((const float *) rows[r] + j), a);
        }
        _mm256_storeu_ps(y + j, a);
    }
}

// the fused kernel for wt's type over an output slice of len elements, or NULL
static sparse_axpy4_t sparse_axpy4_for(enum ggml_type type, int64_t len) {
    if (len % 32 != 0) {
        return NULL;
    }
    switch (type) {
        case GGML_TYPE_Q8_0: return sparse_axpy4_q8_0;
        case GGML_TYPE_Q4_0: return sparse_axpy4_q4_0;
        case GGML_TYPE_Q4_1: return sparse_axpy4_q4_1;
        case GGML_TYPE_F16:  return sparse_axpy4_f16;
        case GGML_TYPE_F32:  return sparse_axpy4_f32;
        default:             return NULL;
    }
}
#else
static sparse_axpy4_t sparse_axpy4_for(enum ggml_type type, int64_t len) {
    GGML_UNUSED(type); GGML_UNUSED(len);
    return NULL;
}
#endif

// y[:,t] over this thread's slice with the fused kernel: the active rows, four at a time
static void axpy_sparse_fused(sparse_axpy4_t kernel, const struct ggml_tensor * wt, const float * hv, int64_t k,
                              int64_t j0, int64_t len, float * y) {
    const size_t  offs = (size_t) (j0 / ggml_blck_size(wt->type)) * ggml_type_size(wt->type);
    const char  * base = (const char *) wt->data + offs;
    const char  * rows[4];
    float c[4];
    int n = 0;
    for (int64_t i = 0; i < k; i++) {
        if (hv[i] == 0.0f) {
            continue;
        }
        rows[n] = base + i*wt->nb[1];
        c[n] = hv[i];
        if (++n == 4) {
            kernel(rows, c, y, len / 32);
            n = 0;
        }
    }
    if (n > 0) {
        // pad with zero coefficients on a row already read
        for (int r = n; r < 4; r++) {
            rows[r] = rows[0];
            c[r] = 0.0f;
        }
        kernel(rows, c, y, len / 32);
    }
}

void ggml_compute_forward_axpy_sparse(const struct ggml_compute_params * params, struct ggml_tensor * dst) {
    const struct ggml_tensor * wt = dst->src[0];
    const struct ggml_tensor * h  = dst->src[1];
    if (wt->type == GGML_TYPE_I8) {
        ggml_sparse_axpy_packed(params, dst);
        return;
    }

    const int ith = params->ith;
    const int nth = params->nth;

    const int64_t n  = wt->ne[0];   // outputs
    const int64_t k  = wt->ne[1];   // input channels
    const int64_t m  = h->ne[1];
    const int64_t bs = ggml_blck_size(wt->type);
    const size_t  ts = ggml_type_size(wt->type);
    const ggml_to_float_t to_float = ggml_get_type_traits(wt->type)->to_float;

    // this thread owns outputs [j0, j1), whole blocks of wt's type: no shared writes
    const int64_t nb = n / bs;
    const int64_t j0 = ((nb * ith) / nth) * bs;
    const int64_t j1 = ((nb * (ith + 1)) / nth) * bs;
    const int64_t len = j1 - j0;
    if (len == 0) {
        return;
    }
    float * tmp = (float *) ((char *) params->wdata + ith * GGML_PAD((n + 1) * sizeof(float), SPARSE_CACHE_LINE));
    const sparse_axpy4_t fused = sparse_axpy4_for(wt->type, len);

    for (int64_t t = 0; t < m; t++) {
        const float * hv = (const float *) ((const char *) h->data + t*h->nb[1]);
        float       * y  = (float *) ((char *) dst->data + t*dst->nb[1]) + j0;
        memset(y, 0, len * sizeof(float));
        if (fused) {
            axpy_sparse_fused(fused, wt, hv, k, j0, len, y);
            continue;
        }
        for (int64_t i = 0; i < k; i++) {
            const float s = hv[i];
            if (s == 0.0f) {
                continue;
            }
            const char * row = (const char *) wt->data + i*wt->nb[1] + (j0 / bs) * ts;
            if (wt->type == GGML_TYPE_F32) {
                ggml_vec_mad_f32((int) len, y, (const float *) row, s);
            } else {
                to_float(row, tmp, len);
                ggml_vec_mad_f32((int) len, y, tmp, s);
            }
        }
    }
}

size_t ggml_sparse_op_work_size(const struct ggml_tensor * node, int n_tasks) {
    switch (node->op) {
        case GGML_OP_MUL_MAT_ROWS:
            return mul_mat_rows_x_size(node);
        case GGML_OP_MUL_MAT_NM:
            return ggml_sparse_mul_mat_nm_work_size(node, n_tasks);
        case GGML_OP_AXPY_SPARSE:
            if (node->src[0]->type == GGML_TYPE_I8) {
                return ggml_sparse_axpy_packed_work_size(node, n_tasks);
            }
            return (size_t) n_tasks * GGML_PAD((node->src[0]->ne[0] + 1) * sizeof(float), SPARSE_CACHE_LINE);
        default:
            return 0;
    }
}

bool ggml_sparse_op_supported(const struct ggml_tensor * op) {
    switch (op->op) {
        case GGML_OP_SPARSE_ACT:
            return op->src[0]->type == GGML_TYPE_F32 && op->src[1]->type == GGML_TYPE_F32;
        case GGML_OP_MUL_MAT_ROWS: {
            const struct ggml_type_traits_cpu * traits = ggml_get_type_traits_cpu(op->src[0]->type);
            return op->src[1]->type == GGML_TYPE_F32 && traits->vec_dot != NULL &&
                   (traits->vec_dot_type == GGML_TYPE_F32 ||
                    ggml_get_type_traits_cpu(traits->vec_dot_type)->from_float != NULL) &&
                   traits->nrows == 1;
        }
        case GGML_OP_MUL_MAT_NM:
            return ggml_sparse_mul_mat_nm_supported(op);
        case GGML_OP_NM_EXPAND:
            return ggml_sparse_nm_expandable(op->src[0]->type, ggml_get_op_params_i32(op, 0), ggml_get_op_params_i32(op, 1));
        case GGML_OP_AXPY_SPARSE:
            if (op->src[0]->type == GGML_TYPE_I8) {
                return ggml_sparse_axpy_packed_supported(op);
            }
            return op->src[1]->type == GGML_TYPE_F32 &&
                   (op->src[0]->type == GGML_TYPE_F32 || ggml_get_type_traits(op->src[0]->type)->to_float != NULL) &&
                   op->src[0]->ne[0] % ggml_blck_size(op->src[0]->type) == 0;
        default:
            return false;
    }
}
