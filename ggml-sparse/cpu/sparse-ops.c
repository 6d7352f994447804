// ggufsparse: CPU forwards of the activation-sparsity ops.
//
// sparse_act:   y = act(a) where |act(a)| > thr, else 0           (rows split over elements)
// mul_mat_rows: y[r,t] = mask[r,t] != 0 ? dot(w[r], x[:,t]) : 0   (rows split across threads)
// axpy_sparse:  y[:,t] = sum_{i: h[i,t] != 0} h[i,t] * wt[i,:]     (output split across threads;
//               Q8_0/Q4_0/Q4_1/F16/F32 rows fused four at a time (AVX2, NEON), other types
//               dequantized four rows at a time; packed weights in sparse-packed.c)
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

#include <stdlib.h>
#include <string.h>

#if !defined(_MSC_VER) || defined(__clang__)
#include <stdatomic.h>
#define SPARSE_ATOMIC 1
#endif

#define SPARSE_CACHE_LINE 64
#define SPARSE_ROWS_AHEAD 2   // active rows prefetched ahead by mul_mat_rows

#if defined(__GNUC__)
#define GGML_PREFETCH(p) __builtin_prefetch((p), 0, 3)
#else
#define GGML_PREFETCH(p) ((void) (p))
#endif

bool ggml_sparse_scalar(void) {
#ifdef SPARSE_ATOMIC
    static atomic_int state = -1;
    int s = atomic_load_explicit(&state, memory_order_relaxed);
#else
    static volatile int state = -1;
    int s = state;
#endif
    if (s < 0) {
        const char * e = getenv("GGML_SPARSE_SCALAR");
        s = e != NULL && e[0] != '\0' && strcmp(e, "0") != 0;
#ifdef SPARSE_ATOMIC
        atomic_store_explicit(&state, s, memory_order_relaxed);
#else
        state = s;
#endif
    }
    return s != 0;
}

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

    // split each row's elements (decode has one row) in spans of 64: ggml_vec_silu_f32's vector
    // part and its scalar tail round differently, so every element must fall in the same part
    // whatever the number of threads (the thresholds would turn that into other channels kept)
    const int64_t unit = 64;
    const int64_t nu   = n / unit;
    const int64_t i0 = ((nu * params->ith) / params->nth) * unit;
    const int64_t i1 = params->ith == params->nth - 1 ? n : ((nu * (params->ith + 1)) / params->nth) * unit;

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

// The kernels are written once over a few vector operations, mapped to AVX2 (8 floats a vector)
// or NEON (4 floats), as ggml's simd-mappings.h maps its GGML_F32_VEC.
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define SPARSE_AXPY4 1
#define SPARSE_EPR   8   // floats per vector
typedef __m256  sparse_f32v;
typedef __m128i sparse_i8x16;
#define sparse_splat(x)       _mm256_set1_ps(x)
#define sparse_loadf(p)       _mm256_loadu_ps(p)
#define sparse_storef(p, v)   _mm256_storeu_ps((p), (v))
#define sparse_addf(a, b)     _mm256_add_ps((a), (b))
#define sparse_fmaf(a, b, c)  _mm256_fmadd_ps((a), (b), (c))   // a*b + c
#define sparse_load_f16(p)    _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (p)))
#define sparse_load_i8(p)     _mm_loadu_si128((const __m128i *) (p))
#define sparse_minus8(v)      _mm_sub_epi8((v), _mm_set1_epi8(8))

// 16 int8 as floats, in order
static inline void sparse_i8_to_f32(sparse_i8x16 v, sparse_f32v out[2]) {
    out[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
    out[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v, 8)));
}

// nibbles of a 4-bit block: elements 0-15 in lo, 16-31 in hi
static inline void sparse_nibbles(const uint8_t * qs, sparse_i8x16 * lo, sparse_i8x16 * hi) {
    const __m128i v = _mm_loadu_si128((const __m128i *) qs);
    const __m128i m = _mm_set1_epi8(0x0F);
    *lo = _mm_and_si128(v, m);
    *hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
}
#elif defined(__ARM_NEON) && defined(__aarch64__)
#define SPARSE_AXPY4 1
#define SPARSE_EPR   4
typedef float32x4_t sparse_f32v;
typedef int8x16_t   sparse_i8x16;
#define sparse_splat(x)       vdupq_n_f32(x)
#define sparse_loadf(p)       vld1q_f32(p)
#define sparse_storef(p, v)   vst1q_f32((p), (v))
#define sparse_addf(a, b)     vaddq_f32((a), (b))
#define sparse_fmaf(a, b, c)  vfmaq_f32((c), (a), (b))
#define sparse_load_f16(p)    vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *) (p))))
#define sparse_load_i8(p)     vld1q_s8((const int8_t *) (p))
#define sparse_minus8(v)      vsubq_s8((v), vdupq_n_s8(8))

static inline void sparse_i8_to_f32(sparse_i8x16 v, sparse_f32v out[4]) {
    const int16x8_t lo = vmovl_s8(vget_low_s8(v));
    const int16x8_t hi = vmovl_high_s8(v);
    out[0] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo)));
    out[1] = vcvtq_f32_s32(vmovl_high_s16(lo));
    out[2] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi)));
    out[3] = vcvtq_f32_s32(vmovl_high_s16(hi));
}

static inline void sparse_nibbles(const uint8_t * qs, sparse_i8x16 * lo, sparse_i8x16 * hi) {
    const uint8x16_t v = vld1q_u8(qs);
    *lo = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F)));
    *hi = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
}
#endif

#ifdef SPARSE_AXPY4
#define SPARSE_ACC (32 / SPARSE_EPR)   // vectors per 32 floats

// acc (32 floats) += sc * (32 int8: elements 0-15 in lo, 16-31 in hi)
static inline void sparse_fma_i8x32(sparse_f32v sc, sparse_i8x16 lo, sparse_i8x16 hi, sparse_f32v acc[SPARSE_ACC]) {
    sparse_f32v w[SPARSE_ACC];
    sparse_i8_to_f32(lo, w);
    sparse_i8_to_f32(hi, w + SPARSE_ACC/2);
    for (int i = 0; i < SPARSE_ACC; i++) {
        acc[i] = sparse_fmaf(sc, w[i], acc[i]);
    }
}

static inline void sparse_load32(const float * y, sparse_f32v acc[SPARSE_ACC]) {
    for (int i = 0; i < SPARSE_ACC; i++) {
        acc[i] = sparse_loadf(y + SPARSE_EPR*i);
    }
}

// y[0..32) = acc + offset
static inline void sparse_store32(float * y, const sparse_f32v acc[SPARSE_ACC], float offset) {
    const sparse_f32v off = sparse_splat(offset);
    for (int i = 0; i < SPARSE_ACC; i++) {
        sparse_storef(y + SPARSE_EPR*i, sparse_addf(acc[i], off));
    }
}

static void sparse_axpy4_q8_0(const char * const rows[4], const float c[4], float * y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++) {
        sparse_f32v acc[SPARSE_ACC];
        sparse_load32(y + 32*b, acc);
        for (int r = 0; r < 4; r++) {
            const block_q8_0 * blk = (const block_q8_0 *) rows[r] + b;
            sparse_fma_i8x32(sparse_splat(c[r] * GGML_CPU_FP16_TO_FP32(blk->d)),
                             sparse_load_i8(blk->qs), sparse_load_i8(blk->qs + 16), acc);
        }
        sparse_store32(y + 32*b, acc, 0.0f);
    }
}

static void sparse_axpy4_q4_0(const char * const rows[4], const float c[4], float * y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++) {
        sparse_f32v acc[SPARSE_ACC];
        sparse_load32(y + 32*b, acc);
        for (int r = 0; r < 4; r++) {
            const block_q4_0 * blk = (const block_q4_0 *) rows[r] + b;
            sparse_i8x16 lo, hi;
            sparse_nibbles(blk->qs, &lo, &hi);
            sparse_fma_i8x32(sparse_splat(c[r] * GGML_CPU_FP16_TO_FP32(blk->d)),
                             sparse_minus8(lo), sparse_minus8(hi), acc);
        }
        sparse_store32(y + 32*b, acc, 0.0f);
    }
}

static void sparse_axpy4_q4_1(const char * const rows[4], const float c[4], float * y, int64_t nb) {
    for (int64_t b = 0; b < nb; b++) {
        sparse_f32v acc[SPARSE_ACC];
        sparse_load32(y + 32*b, acc);
        float offset = 0.0f; // sum of c[r] * m over the four blocks: w = d*q + m
        for (int r = 0; r < 4; r++) {
            const block_q4_1 * blk = (const block_q4_1 *) rows[r] + b;
            offset += c[r] * GGML_CPU_FP16_TO_FP32(blk->m);
            sparse_i8x16 lo, hi;
            sparse_nibbles(blk->qs, &lo, &hi);
            sparse_fma_i8x32(sparse_splat(c[r] * GGML_CPU_FP16_TO_FP32(blk->d)), lo, hi, acc);
        }
        sparse_store32(y + 32*b, acc, offset);
    }
}

// F16 and F32 rows: "blocks" of 32 elements
static void sparse_axpy4_f16(const char * const rows[4], const float c[4], float * y, int64_t nb) {
    for (int64_t j = 0; j < 32*nb; j += SPARSE_EPR) {
        sparse_f32v a = sparse_loadf(y + j);
        for (int r = 0; r < 4; r++) {
            a = sparse_fmaf(sparse_splat(c[r]), sparse_load_f16((const ggml_fp16_t *) rows[r] + j), a);
        }
        sparse_storef(y + j, a);
    }
}

static void sparse_axpy4_f32(const char * const rows[4], const float c[4], float * y, int64_t nb) {
    for (int64_t j = 0; j < 32*nb; j += SPARSE_EPR) {
        sparse_f32v a = sparse_loadf(y + j);
        for (int r = 0; r < 4; r++) {
            a = sparse_fmaf(sparse_splat(c[r]), sparse_loadf((const float *) rows[r] + j), a);
        }
        sparse_storef(y + j, a);
    }
}

// the fused kernel for wt's type over an output slice of len elements, or NULL
static sparse_axpy4_t sparse_axpy4_for(enum ggml_type type, int64_t len) {
    if (len % 32 != 0 || ggml_sparse_scalar()) {
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

// y[0, len) += sum_r c[r] * rows[r][0, len) over four f32 rows, in one pass over y: the kernel
// where there is one, else a loop the compiler vectorises
static void sparse_axpy4_floats(const float * const rows[4], const float c[4], float * y, int64_t len) {
    int64_t j = 0;
#ifdef SPARSE_AXPY4
    if (!ggml_sparse_scalar()) {
        j = len / 32 * 32;
        sparse_axpy4_f32((const char * const *) rows, c, y, len / 32);
    }
#endif
    for (; j < len; j++) {
#ifdef SPARSE_AXPY4
        // as the kernel does each lane, so that an output's bits do not depend on whether the
        // thread's slice puts it in the kernel's part or in this tail
        float a = y[j];
        for (int r = 0; r < 4; r++) {
            a = fmaf(c[r], rows[r][j], a);
        }
        y[j] = a;
#else
        y[j] += c[0]*rows[0][j] + c[1]*rows[1][j] + c[2]*rows[2][j] + c[3]*rows[3][j];
#endif
    }
}

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

// a thread's work buffer for n outputs: four rows of floats, each on its own cache lines
static size_t axpy_sparse_thread_size(int64_t n) {
    return 4 * GGML_PAD((n + 1) * sizeof(float), SPARSE_CACHE_LINE);
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

    // this thread owns outputs [j0, j1), whole blocks of wt's type (F32/F16: spans of 32 where n
    // allows, the fused kernels' unit): no shared writes
    const int64_t unit = bs == 1 && n % 32 == 0 ? 32 : bs;
    const int64_t nb = n / unit;
    const int64_t j0 = ((nb * ith) / nth) * unit;
    const int64_t j1 = ((nb * (ith + 1)) / nth) * unit;
    const int64_t len = j1 - j0;
    if (len == 0) {
        return;
    }
    // four rows of floats: the active rows of a type without a fused kernel, dequantized four at a
    // time so that y is read and written once per four rows
    float * tmp = (float *) ((char *) params->wdata + ith * axpy_sparse_thread_size(n));
    const size_t tmp_row = axpy_sparse_thread_size(n) / (4 * sizeof(float));
    const sparse_axpy4_t fused = sparse_axpy4_for(wt->type, len);

    for (int64_t t = 0; t < m; t++) {
        const float * hv = (const float *) ((const char *) h->data + t*h->nb[1]);
        float       * y  = (float *) ((char *) dst->data + t*dst->nb[1]) + j0;
        memset(y, 0, len * sizeof(float));
        if (fused) {
            axpy_sparse_fused(fused, wt, hv, k, j0, len, y);
            continue;
        }
        const float * rows[4];
        float c[4];
        int nr = 0;
        for (int64_t i = 0; i < k; i++) {
            if (hv[i] == 0.0f) {
                continue;
            }
            const char * row = (const char *) wt->data + i*wt->nb[1] + (j0 / bs) * ts;
            if (wt->type == GGML_TYPE_F32) {
                rows[nr] = (const float *) row;
            } else {
                to_float(row, tmp + nr*tmp_row, len);
                rows[nr] = tmp + nr*tmp_row;
            }
            c[nr] = hv[i];
            if (++nr == 4) {
                sparse_axpy4_floats(rows, c, y, len);
                nr = 0;
            }
        }
        if (nr > 0) {
            // pad with zero coefficients on a row already read
            for (int r = nr; r < 4; r++) {
                rows[r] = rows[0];
                c[r] = 0.0f;
            }
            sparse_axpy4_floats(rows, c, y, len);
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
            return (size_t) n_tasks * axpy_sparse_thread_size(node->src[0]->ne[0]);
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
