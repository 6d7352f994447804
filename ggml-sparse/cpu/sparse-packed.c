// ggufsparse: axpy_sparse on packed transposed weights (layout in ggml-sparse.h).
//
// A packed Q4_0 / Q4_1 / Q8_0 copy (K-quants: further down) keeps the original weight's blocks, so the product can run as
// ggml's own dot products do: h is quantized to Q8_0 once (as ggml_mul_mat quantizes it for these
// types), each column of 32 inputs accumulates its active inputs in integers for 32 outputs at a
// time, and one multiply by the two block scales per (output, column) finishes it. Inactive
// inputs quantize to 0, so the sum over active inputs is the dense dot product's sum exactly;
// results differ from dense only in the order of the float additions.
//
// Threads split the input columns into partial outputs of their own, summed at the end: no two
// threads write the same element.
//
// Three builds of each product: AVX2 (active inputs in pairs, maddubs), NEON on 64-bit ARM (in
// quads, vdotq_s32 or a lane-exact fallback without the dot-product instructions) and plain C.
// All three compute the same integer sums.

#include "sparse-packed.h"
#include "sparse-ops.h"

#define GGML_COMMON_DECL_C
#include "ggml-common.h"

#include "ggml-cpu.h"
#include "ggml-cpu-impl.h"
#include "ggml-impl.h"
#include "ggml-sparse.h"
#include "simd-mappings.h"

#include <string.h>

#define PACKED_GROUP     32    // outputs per group: one block's worth
#define PACKED_ACC_BYTES 128   // a group's partial sums: 32 int32 (Q8_0) or 32 int16 (Q4)
#define PACKED_LINE      64    // scratch alignment: no two threads share a cache line

#if defined(__GNUC__)
#define PACKED_PREFETCH(p) __builtin_prefetch((p), 0, 3)
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
#include <intrin.h>
#define PACKED_PREFETCH(p) _mm_prefetch((const char *) (p), _MM_HINT_T0)
#else
#define PACKED_PREFETCH(p) ((void) (p))
#endif

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#endif

// the index of the lowest set bit of x (x != 0)
static inline int packed_ctz(uint32_t x) {
#if defined(_MSC_VER) && !defined(__clang__)
    unsigned long i;
    _BitScanForward(&i, x);
    return (int) i;
#else
    return __builtin_ctz(x);
#endif
}

// which of a Q8_0 block's 32 inputs are non-zero, one bit each
static inline uint32_t packed_active_inputs(const block_q8_0 * hb) {
    uint32_t bits = 0;
    for (int i = 0; i < 32; i++) {
        bits |= (uint32_t) (hb->qs[i] != 0) << i;
    }
    return bits;
}

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

// the active inputs of a column in pairs: each pair multiplies two interleaved rows of quants by
// its two h values with one maddubs (|h| unsigned, the quants carrying h's sign)
typedef struct {
    const uint8_t * row[2][16];
    __m256i h_abs[16];
    __m256i h_sgn[16];
    int     n;
    int32_t sum_h;
} packed_pairs;

static void packed_pairs_of(packed_pairs * p, const block_q8_0 * hb, uint32_t active, const uint8_t * q, size_t q_row) {
    p->n = 0;
    p->sum_h = 0;
    while (active) {
        const int i1 = packed_ctz(active);
        active &= active - 1;
        int i2 = i1;   // an odd one out pairs with itself at h = 0
        int8_t h2 = 0;
        if (active) {
            i2 = packed_ctz(active);
            active &= active - 1;
            h2 = hb->qs[i2];
        }
        const int8_t h1 = hb->qs[i1];
        p->row[0][p->n] = q + i1*q_row;
        p->row[1][p->n] = q + i2*q_row;
        p->h_sgn[p->n] = _mm256_set1_epi16((int16_t) ((uint16_t) (uint8_t) h1 | (uint16_t) ((uint8_t) h2) << 8));
        p->h_abs[p->n] = _mm256_abs_epi8(p->h_sgn[p->n]);
        p->sum_h += h1 + h2;
        p->n++;
    }
}

// 32 quants of a Q4 row (low nibbles: outputs 0-15, high: 16-31) as int8 minus 8
static inline __m256i packed_q4_row(const uint8_t * p) {
    const __m128i v = _mm_loadu_si128((const __m128i *) p);
    const __m128i m = _mm_set1_epi8(0x0F);
    const __m256i q = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
    return _mm256_sub_epi8(q, _mm256_set1_epi8(8));
}

// products of one pair of rows for 32 outputs: int16, lo = outputs 0-7 | 16-23, hi = 8-15 | 24-31
static inline void packed_pair_products(const packed_pairs * p, int k, __m256i a, __m256i b, __m256i * lo, __m256i * hi) {
    *lo = _mm256_maddubs_epi16(p->h_abs[k], _mm256_sign_epi8(_mm256_unpacklo_epi8(a, b), p->h_sgn[k]));
    *hi = _mm256_maddubs_epi16(p->h_abs[k], _mm256_sign_epi8(_mm256_unpackhi_epi8(a, b), p->h_sgn[k]));
}

// y[0..32) += dh * (d * (acc + offset) [+ m * dh_sum])
static inline void packed_finish32(const __m256i acc[4], const ggml_fp16_t * d, const ggml_fp16_t * mn,
                                   float dh, float offset, float m_scale, float * y) {
    const __m256 vdh  = _mm256_set1_ps(dh);
    const __m256 voff = _mm256_set1_ps(offset);
    for (int k = 0; k < 4; k++) {
        const __m256 s  = _mm256_add_ps(_mm256_cvtepi32_ps(acc[k]), voff);
        const __m256 sc = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (d + 8*k))), vdh);
        __m256 r = _mm256_fmadd_ps(s, sc, _mm256_loadu_ps(y + 8*k));
        if (mn) {
            r = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (mn + 8*k))), _mm256_set1_ps(m_scale), r);
        }
        _mm256_storeu_ps(y + 8*k, r);
    }
}

// outputs in (lo, hi) int16 order to four int32 vectors of 8 consecutive outputs
static inline void packed_widen(__m256i lo, __m256i hi, __m256i out[4]) {
    out[0] = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(lo));
    out[1] = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(hi));
    out[2] = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(lo, 1));
    out[3] = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(hi, 1));
}

// Pairs go in chunks of PACKED_CHUNK, each chunk sweeping all the groups: every row is read
// front to back (a few sequential streams the prefetcher follows), and the partial sums of a
// chunk wait in `acc`, the thread's scratch of PACKED_ACC_BYTES per group, which stays in L1.
#define PACKED_CHUNK 4

static inline int packed_chunk_end(int k0, int n_pairs) {
    return k0 + PACKED_CHUNK < n_pairs ? k0 + PACKED_CHUNK : n_pairs;
}

// the next chunk's rows at byte offset `off`: their streams start warm
static inline void packed_prefetch(const packed_pairs * p, int k1, size_t off) {
    for (int k = k1; k < packed_chunk_end(k1, p->n); k++) {
        _mm_prefetch((const char *) p->row[0][k] + off, _MM_HINT_T0);
        _mm_prefetch((const char *) p->row[1][k] + off, _MM_HINT_T0);
    }
}

// Q4_0 / Q4_1: |h| <= 127 and |q - 8| <= 8, so the int16 sums of 16 pairs stay below 32767
static void packed_column_q4(enum ggml_type type, const uint8_t * col, int64_t n, int64_t g0, int64_t g1,
                             const block_q8_0 * hb, uint32_t active, float * y, __m256i * acc) {
    const ggml_fp16_t * d  = (const ggml_fp16_t *) col;
    const ggml_fp16_t * mn = type == GGML_TYPE_Q4_1 ? d + n : NULL;
    const uint8_t     * q  = col + (mn ? 4 : 2) * n;
    packed_pairs p;
    packed_pairs_of(&p, hb, active, q, (size_t) n / 2);

    const float dh = GGML_CPU_FP16_TO_FP32(hb->d);
    // Q4_1 stores q in 0..15: sum q*h = sum (q-8)*h + 8*sum h, and w = d*q + m
    const float offset  = mn ? 8.0f * (float) p.sum_h : 0.0f;
    const float m_scale = dh * (float) p.sum_h;
    for (int k0 = 0; k0 < p.n; k0 += PACKED_CHUNK) {
        const int  k1   = packed_chunk_end(k0, p.n);
        const bool last = k1 == p.n;
        for (int64_t g = g0; g < g1; g++) {
            if ((g & 3) == 0) {
                packed_prefetch(&p, k1, g*16);   // a cache line holds 4 groups of a row
            }
            __m256i * a = acc + 2*g;
            __m256i lo = k0 == 0 ? _mm256_setzero_si256() : _mm256_loadu_si256(a);
            __m256i hi = k0 == 0 ? _mm256_setzero_si256() : _mm256_loadu_si256(a + 1);
            for (int k = k0; k < k1; k++) {
                __m256i plo, phi;
                packed_pair_products(&p, k, packed_q4_row(p.row[0][k] + g*16), packed_q4_row(p.row[1][k] + g*16), &plo, &phi);
                lo = _mm256_add_epi16(lo, plo);
                hi = _mm256_add_epi16(hi, phi);
            }
            if (last) {
                __m256i sums[4];
                packed_widen(lo, hi, sums);
                packed_finish32(sums, d + g*32, mn ? mn + g*32 : NULL, dh, offset, m_scale, y + g*32);
            } else {
                _mm256_storeu_si256(a, lo);
                _mm256_storeu_si256(a + 1, hi);
            }
        }
    }
}

// Q8_0: one pair's int16 sum can reach 32258, so every pair is widened to int32
static void packed_column_q8(const uint8_t * col, int64_t n, int64_t g0, int64_t g1,
                             const block_q8_0 * hb, uint32_t active, float * y, __m256i * acc) {
    const ggml_fp16_t * d = (const ggml_fp16_t *) col;
    const uint8_t     * q = col + 2 * n;
    packed_pairs p;
    packed_pairs_of(&p, hb, active, q, (size_t) n);

    const float dh = GGML_CPU_FP16_TO_FP32(hb->d);
    for (int k0 = 0; k0 < p.n; k0 += PACKED_CHUNK) {
        const int  k1   = packed_chunk_end(k0, p.n);
        const bool last = k1 == p.n;
        for (int64_t g = g0; g < g1; g++) {
            if ((g & 1) == 0) {
                packed_prefetch(&p, k1, g*32);   // a cache line holds 2 groups of a row
            }
            __m256i * a = acc + 4*g;
            __m256i sums[4];
            for (int r = 0; r < 4; r++) {
                sums[r] = k0 == 0 ? _mm256_setzero_si256() : _mm256_loadu_si256(a + r);
            }
            for (int k = k0; k < k1; k++) {
                __m256i plo, phi, w[4];
                packed_pair_products(&p, k, _mm256_loadu_si256((const __m256i *) (p.row[0][k] + g*32)),
                                     _mm256_loadu_si256((const __m256i *) (p.row[1][k] + g*32)), &plo, &phi);
                packed_widen(plo, phi, w);
                for (int r = 0; r < 4; r++) {
                    sums[r] = _mm256_add_epi32(sums[r], w[r]);
                }
            }
            if (last) {
                packed_finish32(sums, d + g*32, NULL, dh, 0.0f, 0.0f, y + g*32);
            } else {
                for (int r = 0; r < 4; r++) {
                    _mm256_storeu_si256(a + r, sums[r]);
                }
            }
        }
    }
}

// y[32*g0, 32*g1) += the column's contribution to those of its n outputs
#define PACKED_SIMD 1
static void packed_column_simd(enum ggml_type type, const uint8_t * col, int64_t n, int64_t g0, int64_t g1,
                          const block_q8_0 * hb, uint32_t active, float * y, void * scratch) {
    if (type == GGML_TYPE_Q8_0) {
        packed_column_q8(col, n, g0, g1, hb, active, y, (__m256i *) scratch);
    } else {
        packed_column_q4(type, col, n, g0, g1, hb, active, y, (__m256i *) scratch);
    }
}
#elif defined(__ARM_NEON) && defined(__aarch64__)

// NEON: the active inputs go in quads. Four rows' bytes are interleaved so that each 32-bit lane
// holds one output's four quants, and vdotq_s32 multiplies them by the quad's four h values (the
// same four bytes in every lane) into that output's int32 sum.

#if defined(__ARM_FEATURE_DOTPROD)
#define packed_sdot(acc, a, b) vdotq_s32((acc), (a), (b))
#else
// vdotq_s32 without the dot-product instructions, lane for lane (ggml_vdotq_s32 only keeps the
// total): |a*b| <= 127*127, so a pair of products fits in int16
static inline int32x4_t packed_sdot(int32x4_t acc, int8x16_t a, int8x16_t b) {
    const int16x8_t p0 = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    const int16x8_t p1 = vmull_high_s8(a, b);
    return vpadalq_s16(acc, vpaddq_s16(p0, p1));
}
#endif

// rows r0..r3, 16 bytes each: out[i] lane l = (r0[4i+l], r1[4i+l], r2[4i+l], r3[4i+l])
static inline void packed_zip4(uint8x16_t r0, uint8x16_t r1, uint8x16_t r2, uint8x16_t r3, uint8x16_t out[4]) {
    const uint16x8_t a_lo = vreinterpretq_u16_u8(vzip1q_u8(r0, r1));
    const uint16x8_t a_hi = vreinterpretq_u16_u8(vzip2q_u8(r0, r1));
    const uint16x8_t b_lo = vreinterpretq_u16_u8(vzip1q_u8(r2, r3));
    const uint16x8_t b_hi = vreinterpretq_u16_u8(vzip2q_u8(r2, r3));
    out[0] = vreinterpretq_u8_u16(vzip1q_u16(a_lo, b_lo));
    out[1] = vreinterpretq_u8_u16(vzip2q_u16(a_lo, b_lo));
    out[2] = vreinterpretq_u8_u16(vzip1q_u16(a_hi, b_hi));
    out[3] = vreinterpretq_u8_u16(vzip2q_u16(a_hi, b_hi));
}

// the active inputs of a column in quads (the last one padded with its first row at h = 0):
// rows, and each quad's four h values as one 32-bit word
typedef struct {
    const uint8_t * row[32];
    int32_t         h4[8];
    int             n4;      // quads
    int32_t         sum_h;   // of the active h
} packed_quads;

static void packed_quads_of(packed_quads * p, const int8_t * h, uint32_t active, const uint8_t * q, size_t q_row) {
    int8_t hv[32];
    int n = 0;
    p->sum_h = 0;
    for (; active; active &= active - 1) {
        const int i = packed_ctz(active);
        p->row[n] = q + i*q_row;
        hv[n] = h[i];
        p->sum_h += h[i];
        n++;
    }
    p->n4 = (n + 3) / 4;
    for (int r = n; r < 4*p->n4; r++) {
        p->row[r] = p->row[0];
        hv[r] = 0;
    }
    memcpy(p->h4, hv, 4*p->n4);
}

// the rows are read front to back, 16 or 32 bytes per group of outputs: lines this far ahead are
// fetched while a group is computed
#define PACKED_AHEAD 256

// y[0..32) += dh * (d * (s - off) [+ m * sum_h])
static inline void packed_finish32(const int32x4_t s[8], const ggml_fp16_t * d, const ggml_fp16_t * mn,
                                   float dh, int32_t off, float m_scale, float * y) {
    const int32x4_t voff = vdupq_n_s32(off);
    for (int k = 0; k < 8; k++) {
        const float32x4_t sc = vmulq_n_f32(vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *) d + 4*k))), dh);
        float32x4_t r = vfmaq_f32(vld1q_f32(y + 4*k), vcvtq_f32_s32(vsubq_s32(s[k], voff)), sc);
        if (mn) {
            r = vfmaq_n_f32(r, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *) mn + 4*k))), m_scale);
        }
        vst1q_f32(y + 4*k, r);
    }
}

// y[0, n) += the column's contribution to all n outputs, 32 outputs at a time
#define PACKED_SIMD 1
static void packed_column_simd(enum ggml_type type, const uint8_t * col, int64_t n, int64_t g0, int64_t g1,
                          const block_q8_0 * hb, uint32_t active, float * y, void * scratch) {
    GGML_UNUSED(scratch);
    const ggml_fp16_t * d  = (const ggml_fp16_t *) col;
    const ggml_fp16_t * mn = type == GGML_TYPE_Q4_1 ? d + n : NULL;
    const uint8_t     * q  = col + (mn ? 4 : 2) * n;
    const bool          q8 = type == GGML_TYPE_Q8_0;
    const size_t        span = q8 ? 32 : 16;   // bytes of a row per 32 outputs
    packed_quads p;
    packed_quads_of(&p, hb->qs, active, q, q8 ? (size_t) n : (size_t) n / 2);

    const float dh = GGML_CPU_FP16_TO_FP32(hb->d);
    // Q4 quants are unsigned here: Q4_0's w = d*(q - 8) subtracts 8*sum_h; Q4_1's w = d*q + m
    const int32_t off = type == GGML_TYPE_Q4_0 ? 8*p.sum_h : 0;
    const uint8x16_t low4 = vdupq_n_u8(0x0F);
    for (int64_t g = g0; g < g1; g++) {
        if (g % (64 / span) == 0) {
            for (int r = 0; r < 4*p.n4; r++) {
                PACKED_PREFETCH(p.row[r] + g*span + PACKED_AHEAD);
            }
        }
        int32x4_t s[8];
        for (int k = 0; k < 8; k++) {
            s[k] = vdupq_n_s32(0);
        }
        for (int k4 = 0; k4 < p.n4; k4++) {
            const uint8_t * const * row = p.row + 4*k4;
            const int8x16_t hq = vreinterpretq_s8_s32(vdupq_n_s32(p.h4[k4]));
            uint8x16_t x[4];
            if (q8) {
                // outputs 0-15, then 16-31
                for (int half = 0; half < 2; half++) {
                    const size_t o = g*32 + 16*half;
                    packed_zip4(vld1q_u8(row[0] + o), vld1q_u8(row[1] + o), vld1q_u8(row[2] + o), vld1q_u8(row[3] + o), x);
                    for (int i = 0; i < 4; i++) {
                        s[4*half + i] = packed_sdot(s[4*half + i], vreinterpretq_s8_u8(x[i]), hq);
                    }
                }
            } else {
                // byte k: output k in the low nibble, k+16 in the high one
                const size_t o = g*16;
                packed_zip4(vld1q_u8(row[0] + o), vld1q_u8(row[1] + o), vld1q_u8(row[2] + o), vld1q_u8(row[3] + o), x);
                for (int i = 0; i < 4; i++) {
                    s[i]     = packed_sdot(s[i],     vreinterpretq_s8_u8(vandq_u8(x[i], low4)), hq);
                    s[4 + i] = packed_sdot(s[4 + i], vreinterpretq_s8_u8(vshrq_n_u8(x[i], 4)), hq);
                }
            }
        }
        packed_finish32(s, d + g*32, mn ? mn + g*32 : NULL, dh, off, dh * (float) p.sum_h, y + g*32);
    }
}
#endif

// y[32*g0, 32*g1) += the column's contribution to those outputs, in plain C (CPUs without AVX2 or
// NEON, and GGML_SPARSE_SCALAR)
static void packed_column_generic(enum ggml_type type, const uint8_t * col, int64_t n, int64_t g0, int64_t g1,
                          const block_q8_0 * hb, uint32_t active, float * y, void * scratch) {
    GGML_UNUSED(scratch);
    const ggml_fp16_t * d  = (const ggml_fp16_t *) col;
    const ggml_fp16_t * mn = type == GGML_TYPE_Q4_1 ? d + n : NULL;
    const uint8_t     * q  = col + (mn ? 4 : 2) * n;
    const float dh = GGML_CPU_FP16_TO_FP32(hb->d);

    int32_t sum_h = 0;
    for (int i = 0; i < 32; i++) {
        sum_h += hb->qs[i];
    }
    for (int64_t j = g0*PACKED_GROUP; j < g1*PACKED_GROUP; j++) {
        int32_t acc = 0;
        for (int i = 0; i < 32; i++) {
            if (!(active >> i & 1)) {
                continue;
            }
            int v;
            if (type == GGML_TYPE_Q8_0) {
                v = (int8_t) q[i*n + j];
            } else {
                const uint8_t byte = q[i*(n/2) + (j/32)*16 + (j%32)%16];
                v = (j%32) < 16 ? (byte & 0x0F) : (byte >> 4);
                v -= type == GGML_TYPE_Q4_0 ? 8 : 0;
            }
            acc += v * hb->qs[i];
        }
        float r = GGML_CPU_FP16_TO_FP32(d[j]) * (float) acc;
        if (mn) {
            r += GGML_CPU_FP16_TO_FP32(mn[j]) * (float) sum_h;   // w = d*q + m
        }
        y[j] += dh * r;
    }
}


static void packed_column(enum ggml_type type, const uint8_t * col, int64_t n, int64_t g0, int64_t g1,
                          const block_q8_0 * hb, uint32_t active, float * y, void * scratch) {
#ifdef PACKED_SIMD
    if (!ggml_sparse_scalar()) {
        packed_column_simd(type, col, n, g0, g1, hb, active, y, scratch);
        return;
    }
#endif
    packed_column_generic(type, col, n, g0, g1, hb, active, y, scratch);
}


// ---------------------------------------------------------------------------------------------
// K-quants (Q4_K, Q5_K, Q6_K): a column is a super-block's 256 inputs, h is quantized to Q8_K as
// ggml's K-quant dot products quantize it, and each scale group of inputs (32 for Q4_K/Q5_K, 16
// for Q6_K) accumulates its active inputs in integers. As in ggml's own K-quant dot products, the
// sums stay integers through the column: t[j] = sum over groups of sc*s (Q6_K: sc*(s - 32*sum_h)),
// m[j] = sum of mn*sum_h, and y[j] += dh*(d[j]*t[j] - dmin[j]*m[j]) once per column. They cannot
// overflow: |s| <= 32*63*127 and |sc| <= 128 over 16 groups stays below 2^31.

typedef struct {
    enum ggml_type      type;
    int64_t             n;
    int                 group;     // inputs per scale: 32, or 16 for Q6_K
    const ggml_fp16_t * d;
    const ggml_fp16_t * dmin;      // Q4_K, Q5_K
    const uint8_t     * sc;        // [256/group][n]: uint8, int8 for Q6_K
    const uint8_t     * mn;        // [8][n]: Q4_K, Q5_K
    const uint8_t     * ql;        // 256 rows of n/2 bytes: the low 4 bits
    const uint8_t     * qh;        // 256 rows of the high bits: n/8 bytes (Q5_K), n/4 (Q6_K)
    int64_t             s0, s1;    // the spans of 64 outputs computed: outputs [64*s0, 64*s1)
} packed_k_col;

static void packed_k_col_of(enum ggml_type type, const uint8_t * col, int64_t n, int64_t s0, int64_t s1, packed_k_col * c) {
    c->type = type;
    c->n    = n;
    c->s0   = s0;
    c->s1   = s1;
    c->d    = (const ggml_fp16_t *) col;
    if (type == GGML_TYPE_Q6_K) {
        c->group = 16;
        c->dmin  = NULL;
        c->sc    = col + 2*n;
        c->mn    = NULL;
        c->ql    = c->sc + (QK_K/16)*n;
        c->qh    = c->ql + QK_K*(n/2);
    } else {
        c->group = 32;
        c->dmin  = c->d + n;
        c->sc    = col + 4*n;
        c->mn    = c->sc + 8*n;
        c->ql    = c->mn + 8*n;
        c->qh    = type == GGML_TYPE_Q5_K ? c->ql + QK_K*(n/2) : NULL;
    }
}

// the next scale group to be read (in this column or the next): its rows are prefetched while the
// current group is computed, a whole group ahead, since each row is only n/2 bytes long
typedef struct {
    packed_k_col c;
    int          g;
    uint32_t     active;   // 0: none
} packed_k_next;

// the integer sums of one scale group into t (and m): first says the column's first active group
static void packed_k_group(const packed_k_col * c, int g, const int8_t * hq, uint32_t active, int32_t sum_h,
                           int32_t * t, int32_t * m, bool first, const packed_k_next * next);

// the active inputs of scale group g of a Q8_K block, one bit each
static inline uint32_t packed_k_active(const block_q8_K * hb, int group, int g) {
    const int8_t * hq = hb->qs + g*group;
    uint32_t active = 0;
    for (int i = 0; i < group; i++) {
        active |= (uint32_t) (hq[i] != 0) << i;
    }
    return active;
}

// the lines of the next group's rows that span o64 starts (every row's low bits; the high bits
// where a line of them starts)
static inline void packed_k_prefetch(const packed_k_next * next, int64_t o64) {
    const packed_k_col * c = &next->c;
    const int64_t qh_span = c->type == GGML_TYPE_Q6_K ? 16 : 8;   // high-bit bytes per span
    const bool    qh_line = c->qh != NULL && (o64*qh_span) % 64 == 0;
    const size_t  qh_row  = c->type == GGML_TYPE_Q6_K ? (size_t) c->n/4 : (size_t) c->n/8;
    for (uint32_t a = next->active; a; a &= a - 1) {
        const int i = next->g*c->group + packed_ctz(a);
        PACKED_PREFETCH(c->ql + i*((size_t) c->n/2) + o64*32);
        if (qh_line) {
            PACKED_PREFETCH(c->qh + i*qh_row + o64*qh_span);
        }
    }
}

// The spans of a group are visited in a scattered order, oi = (oi + stride) % n_spans: rows read
// front to back look like streams to the hardware prefetchers, which then fetch the inactive rows
// that follow them; the next group's rows are prefetched instead. The stride is coprime with the
// span count, so that every span is visited once (a stride that only does not divide the count
// is not enough: 9 for 21 spans, as 4096 outputs make on 3 threads, visits a third of them).
static int64_t packed_k_stride(int64_t n_spans) {
    int64_t stride = 7;
    for (;;) {
        int64_t a = n_spans, b = stride;
        while (b != 0) {
            const int64_t r = a % b;
            a = b;
            b = r;
        }
        if (a == 1) {
            return stride;
        }
        stride += 2;
    }
}

// span si of that order (stride from packed_k_stride), with the lines of the next group's rows
// that it starts prefetched
static inline int64_t packed_k_span(const packed_k_col * c, const packed_k_next * next, int64_t stride, int64_t si) {
    const int64_t o64 = c->s0 + (si * stride) % (c->s1 - c->s0);
    if (next->active && (o64 & 1) == 0) {   // a cache line holds two spans of a row
        packed_k_prefetch(next, o64);
    }
    return o64;
}

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define PACKED_K_SIMD 1

// 64 outputs' quants of input row i at output span o64, unsigned (0..15, 0..31, 0..63):
// outputs 0-31 in q[0], 32-63 in q[1]
static inline void packed_k_row(const packed_k_col * c, int i, int64_t o64, __m256i q[2]) {
    const __m256i v = _mm256_loadu_si256((const __m256i *) (c->ql + i*(c->n/2) + o64*32));
    const __m256i m = _mm256_set1_epi8(0x0F);
    q[0] = _mm256_and_si256(v, m);
    q[1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
    if (c->type == GGML_TYPE_Q5_K) {
        int64_t bits;
        memcpy(&bits, c->qh + i*(c->n/8) + o64*8, 8);
        // byte k of q[0] takes bit k%8 of byte k/8; q[1] the same from byte 4 on
        const __m256i b    = _mm256_set1_epi64x(bits);
        const __m256i bit  = _mm256_set1_epi64x((int64_t) 0x8040201008040201ULL);
        const __m256i five = _mm256_set1_epi8(16);
        const __m256i s0 = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
        const __m256i s1 = _mm256_add_epi8(s0, _mm256_set1_epi8(4));
        q[0] = _mm256_or_si256(q[0], _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(b, s0), bit), bit), five));
        q[1] = _mm256_or_si256(q[1], _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(b, s1), bit), bit), five));
    } else if (c->type == GGML_TYPE_Q6_K) {
        // output k's two bits at 2*(k/16) of byte k%16: shift each 16-output quarter to bits 4-5
        // (within each byte: a shift of at most 4 moves no bit that the mask keeps across bytes)
        const __m256i b   = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *) (c->qh + i*(c->n/4) + o64*16)));
        const __m256i m30 = _mm256_set1_epi8(0x30);
        q[0] = _mm256_or_si256(q[0], _mm256_and_si256(_mm256_sllv_epi64(b, _mm256_setr_epi64x(4, 4, 2, 2)), m30));
        q[1] = _mm256_or_si256(q[1], _mm256_and_si256(_mm256_srlv_epi64(b, _mm256_setr_epi64x(0, 0, 2, 2)), m30));
    }
}

static void packed_k_group_simd(const packed_k_col * c, int g, const int8_t * hq, uint32_t active, int32_t sum_h,
                           int32_t * t, int32_t * m, bool first, const packed_k_next * next) {
    // the active inputs in pairs (an odd one out pairs with itself at h = 0): rows and (h1, h2)
    int     rows[2][16];
    __m256i hp[16];
    int     n_pairs = 0;
    while (active) {
        const int i1 = packed_ctz(active);
        active &= active - 1;
        int    i2 = i1;
        int8_t h2 = 0;
        if (active) {
            i2 = packed_ctz(active);
            active &= active - 1;
            h2 = hq[i2];
        }
        rows[0][n_pairs] = g*c->group + i1;
        rows[1][n_pairs] = g*c->group + i2;
        hp[n_pairs] = _mm256_set1_epi16((int16_t) ((uint16_t) (uint8_t) hq[i1] | (uint16_t) ((uint8_t) h2) << 8));
        n_pairs++;
    }
    // pairs whose int16 sums cannot overflow: 2*qmax*127 each
    const int chunk = c->type == GGML_TYPE_Q4_K ? 8 : c->type == GGML_TYPE_Q5_K ? 4 : 2;
    const __m256i vsumh  = _mm256_set1_epi32(c->type == GGML_TYPE_Q6_K ? 32*sum_h : sum_h);

    const int64_t stride = packed_k_stride(c->s1 - c->s0);
    for (int64_t si = 0; si < c->s1 - c->s0; si++) {
        const int64_t o64 = packed_k_span(c, next, stride, si);
        __m256i s[8];
        for (int r = 0; r < 8; r++) {
            s[r] = _mm256_setzero_si256();
        }
        for (int k0 = 0; k0 < n_pairs; k0 += chunk) {
            const int k1 = k0 + chunk < n_pairs ? k0 + chunk : n_pairs;
            __m256i lo0 = _mm256_setzero_si256(), hi0 = _mm256_setzero_si256();
            __m256i lo1 = _mm256_setzero_si256(), hi1 = _mm256_setzero_si256();
            for (int k = k0; k < k1; k++) {
                __m256i a[2], b[2];
                packed_k_row(c, rows[0][k], o64, a);
                packed_k_row(c, rows[1][k], o64, b);
                lo0 = _mm256_add_epi16(lo0, _mm256_maddubs_epi16(_mm256_unpacklo_epi8(a[0], b[0]), hp[k]));
                hi0 = _mm256_add_epi16(hi0, _mm256_maddubs_epi16(_mm256_unpackhi_epi8(a[0], b[0]), hp[k]));
                lo1 = _mm256_add_epi16(lo1, _mm256_maddubs_epi16(_mm256_unpacklo_epi8(a[1], b[1]), hp[k]));
                hi1 = _mm256_add_epi16(hi1, _mm256_maddubs_epi16(_mm256_unpackhi_epi8(a[1], b[1]), hp[k]));
            }
            __m256i w[4];
            packed_widen(lo0, hi0, w);
            for (int r = 0; r < 4; r++) {
                s[r] = _mm256_add_epi32(s[r], w[r]);
            }
            packed_widen(lo1, hi1, w);
            for (int r = 0; r < 4; r++) {
                s[4 + r] = _mm256_add_epi32(s[4 + r], w[r]);
            }
        }
        // scale the group's sums into the column's: 8 outputs at a time
        for (int r = 0; r < 8; r++) {
            const int64_t j  = o64*64 + 8*r;
            const __m128i sb = _mm_loadl_epi64((const __m128i *) (c->sc + g*c->n + j));
            __m256i v;
            if (c->type == GGML_TYPE_Q6_K) {
                v = _mm256_mullo_epi32(_mm256_sub_epi32(s[r], vsumh), _mm256_cvtepi8_epi32(sb));
            } else {
                v = _mm256_mullo_epi32(s[r], _mm256_cvtepu8_epi32(sb));
                const __m128i mb = _mm_loadl_epi64((const __m128i *) (c->mn + g*c->n + j));
                __m256i mv = _mm256_mullo_epi32(vsumh, _mm256_cvtepu8_epi32(mb));
                if (!first) {
                    mv = _mm256_add_epi32(mv, _mm256_loadu_si256((const __m256i *) (m + j)));
                }
                _mm256_storeu_si256((__m256i *) (m + j), mv);
            }
            if (!first) {
                v = _mm256_add_epi32(v, _mm256_loadu_si256((const __m256i *) (t + j)));
            }
            _mm256_storeu_si256((__m256i *) (t + j), v);
        }
    }
}

// y[j] += dh*(d[j]*t[j] - dmin[j]*m[j])
static void packed_k_finish_simd(const packed_k_col * c, float dh, const int32_t * t, const int32_t * m, float * y) {
    const __m256 vdh = _mm256_set1_ps(dh);
    for (int64_t j = c->s0*64; j < c->s1*64; j += 8) {
        const __m256 d = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (c->d + j))), vdh);
        __m256 r = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *) (t + j))), _mm256_loadu_ps(y + j));
        if (c->dmin) {
            const __m256 dm = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (c->dmin + j))), vdh);
            r = _mm256_fnmadd_ps(dm, _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *) (m + j))), r);
        }
        _mm256_storeu_ps(y + j, r);
    }
}

#elif defined(__ARM_NEON) && defined(__aarch64__)
#define PACKED_K_SIMD 1

// Q5_K's fifth bits for a quad of rows, in packed_zip4's order: with the four rows' 8 bytes of a
// span as a table (row r at byte 8r), byte 4l+r of the interleaved low bits x[i] of half b (output
// k = 16b + 4i + l) is bit k%8 of table byte 8r + k/8 = 8r + 2b + i/2, the high nibble's (output
// k + 32) the same bit of byte 8r + k/8 + 4
#define PACKED_Q5_IDX(v)  { (v), 8 + (v), 16 + (v), 24 + (v), (v), 8 + (v), 16 + (v), 24 + (v), \
                            (v), 8 + (v), 16 + (v), 24 + (v), (v), 8 + (v), 16 + (v), 24 + (v) }
#define PACKED_Q5_BIT(s)  { 1 << (s), 1 << (s), 1 << (s), 1 << (s), 2 << (s), 2 << (s), 2 << (s), 2 << (s), \
                            4 << (s), 4 << (s), 4 << (s), 4 << (s), 8 << (s), 8 << (s), 8 << (s), 8 << (s) }
static const uint8_t PACKED_Q5_IDX_TAB[4][16] = { PACKED_Q5_IDX(0), PACKED_Q5_IDX(1), PACKED_Q5_IDX(2), PACKED_Q5_IDX(3) };
static const uint8_t PACKED_Q5_BIT_TAB[2][16] = { PACKED_Q5_BIT(0), PACKED_Q5_BIT(4) };

// a quad of rows at span o64, interleaved (packed_zip4): q[a] holds the unsigned quants of
// outputs 4a..4a+3 (a = 0 .. 15), each lane the four rows' quants of one output
static inline void packed_k_quad(const packed_k_col * c, const int rows[4], int64_t o64, uint8x16_t q[16]) {
    const uint8x16_t low4 = vdupq_n_u8(0x0F);
    uint8x16_t xl[4], xh[4];   // bytes 0-15 (outputs 0-15 | 32-47), 16-31 (outputs 16-31 | 48-63)
    const uint8_t * ql[4];
    for (int r = 0; r < 4; r++) {
        ql[r] = c->ql + rows[r]*(c->n/2) + o64*32;
    }
    packed_zip4(vld1q_u8(ql[0]),      vld1q_u8(ql[1]),      vld1q_u8(ql[2]),      vld1q_u8(ql[3]),      xl);
    packed_zip4(vld1q_u8(ql[0] + 16), vld1q_u8(ql[1] + 16), vld1q_u8(ql[2] + 16), vld1q_u8(ql[3] + 16), xh);
    for (int i = 0; i < 4; i++) {
        q[i]      = vandq_u8(xl[i], low4);
        q[4 + i]  = vandq_u8(xh[i], low4);
        q[8 + i]  = vshrq_n_u8(xl[i], 4);
        q[12 + i] = vshrq_n_u8(xh[i], 4);
    }
    if (c->type == GGML_TYPE_Q5_K) {
        uint8x16x2_t tab;
        const uint8_t * qh[4];
        for (int r = 0; r < 4; r++) {
            qh[r] = c->qh + rows[r]*(c->n/8) + o64*8;
        }
        tab.val[0] = vcombine_u8(vld1_u8(qh[0]), vld1_u8(qh[1]));
        tab.val[1] = vcombine_u8(vld1_u8(qh[2]), vld1_u8(qh[3]));
        const uint8x16_t fifth = vdupq_n_u8(0x10);
        for (int b = 0; b < 2; b++) {
            for (int i = 0; i < 4; i++) {
                const uint8x16_t idx = vld1q_u8(PACKED_Q5_IDX_TAB[2*b + i/2]);
                const uint8x16_t bit = vld1q_u8(PACKED_Q5_BIT_TAB[i % 2]);
                const uint8x16_t lo  = vtstq_u8(vqtbl2q_u8(tab, idx), bit);
                const uint8x16_t hi  = vtstq_u8(vqtbl2q_u8(tab, vaddq_u8(idx, vdupq_n_u8(4))), bit);
                q[4*b + i]     = vorrq_u8(q[4*b + i],     vandq_u8(lo, fifth));
                q[8 + 4*b + i] = vorrq_u8(q[8 + 4*b + i], vandq_u8(hi, fifth));
            }
        }
    } else if (c->type == GGML_TYPE_Q6_K) {
        // byte k of a row holds outputs k, k+16, k+32, k+48 at bits 0-1, 2-3, 4-5, 6-7
        uint8x16_t y[4];
        const size_t row = (size_t) c->n/4;
        packed_zip4(vld1q_u8(c->qh + rows[0]*row + o64*16), vld1q_u8(c->qh + rows[1]*row + o64*16),
                    vld1q_u8(c->qh + rows[2]*row + o64*16), vld1q_u8(c->qh + rows[3]*row + o64*16), y);
        const uint8x16_t m30 = vdupq_n_u8(0x30);
        for (int i = 0; i < 4; i++) {
            q[i]      = vorrq_u8(q[i],      vandq_u8(vshlq_n_u8(y[i], 4), m30));
            q[4 + i]  = vorrq_u8(q[4 + i],  vandq_u8(vshlq_n_u8(y[i], 2), m30));
            q[8 + i]  = vorrq_u8(q[8 + i],  vandq_u8(y[i], m30));
            q[12 + i] = vorrq_u8(q[12 + i], vandq_u8(vshrq_n_u8(y[i], 2), m30));
        }
    }
}

static void packed_k_group_simd(const packed_k_col * c, int g, const int8_t * hq, uint32_t active, int32_t sum_h,
                           int32_t * t, int32_t * m, bool first, const packed_k_next * next) {
    // the active inputs in quads (the last padded with its first row at h = 0)
    int     rows[32];
    int8_t  hv[32];
    int     n = 0;
    for (; active; active &= active - 1) {
        const int i = packed_ctz(active);
        rows[n] = g*c->group + i;
        hv[n]   = hq[i];
        n++;
    }
    const int n4 = (n + 3) / 4;
    for (int r = n; r < 4*n4; r++) {
        rows[r] = rows[0];
        hv[r]   = 0;
    }
    int32_t h4[8];
    memcpy(h4, hv, 4*n4);
    const int32_t sub = c->type == GGML_TYPE_Q6_K ? 32*sum_h : 0;   // Q6_K: w = d*sc*(q - 32)

    const int64_t stride = packed_k_stride(c->s1 - c->s0);
    for (int64_t si = 0; si < c->s1 - c->s0; si++) {
        const int64_t o64 = packed_k_span(c, next, stride, si);
        int32x4_t s[16];
        for (int a = 0; a < 16; a++) {
            s[a] = vdupq_n_s32(0);
        }
        for (int k4 = 0; k4 < n4; k4++) {
            uint8x16_t q[16];
            packed_k_quad(c, rows + 4*k4, o64, q);
            const int8x16_t h = vreinterpretq_s8_s32(vdupq_n_s32(h4[k4]));
            for (int a = 0; a < 16; a++) {
                s[a] = packed_sdot(s[a], vreinterpretq_s8_u8(q[a]), h);
            }
        }
        // scale the group's sums into the column's: 16 outputs at a time
        for (int b = 0; b < 4; b++) {
            const int64_t j  = o64*64 + 16*b;
            const uint8x16_t sb = vld1q_u8(c->sc + g*c->n + j);
            int32x4_t sc[4];
            if (c->type == GGML_TYPE_Q6_K) {
                const int16x8_t lo = vmovl_s8(vget_low_s8(vreinterpretq_s8_u8(sb)));
                const int16x8_t hi = vmovl_high_s8(vreinterpretq_s8_u8(sb));
                sc[0] = vmovl_s16(vget_low_s16(lo)); sc[1] = vmovl_high_s16(lo);
                sc[2] = vmovl_s16(vget_low_s16(hi)); sc[3] = vmovl_high_s16(hi);
            } else {
                const uint16x8_t lo = vmovl_u8(vget_low_u8(sb));
                const uint16x8_t hi = vmovl_high_u8(sb);
                sc[0] = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(lo))); sc[1] = vreinterpretq_s32_u32(vmovl_high_u16(lo));
                sc[2] = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(hi))); sc[3] = vreinterpretq_s32_u32(vmovl_high_u16(hi));
                const uint8x16_t mb  = vld1q_u8(c->mn + g*c->n + j);
                const uint16x8_t mlo = vmovl_u8(vget_low_u8(mb));
                const uint16x8_t mhi = vmovl_high_u8(mb);
                const int32x4_t mn[4] = {
                    vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(mlo))), vreinterpretq_s32_u32(vmovl_high_u16(mlo)),
                    vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(mhi))), vreinterpretq_s32_u32(vmovl_high_u16(mhi)),
                };
                for (int k = 0; k < 4; k++) {
                    int32x4_t mv = vmulq_n_s32(mn[k], sum_h);
                    if (!first) {
                        mv = vaddq_s32(mv, vld1q_s32(m + j + 4*k));
                    }
                    vst1q_s32(m + j + 4*k, mv);
                }
            }
            for (int k = 0; k < 4; k++) {
                int32x4_t v = vmulq_s32(vsubq_s32(s[4*b + k], vdupq_n_s32(sub)), sc[k]);
                if (!first) {
                    v = vaddq_s32(v, vld1q_s32(t + j + 4*k));
                }
                vst1q_s32(t + j + 4*k, v);
            }
        }
    }
}

// y[j] += dh*(d[j]*t[j] - dmin[j]*m[j])
static void packed_k_finish_simd(const packed_k_col * c, float dh, const int32_t * t, const int32_t * m, float * y) {
    for (int64_t j = c->s0*64; j < c->s1*64; j += 4) {
        const float32x4_t d = vmulq_n_f32(vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *) c->d + j))), dh);
        float32x4_t r = vfmaq_f32(vld1q_f32(y + j), d, vcvtq_f32_s32(vld1q_s32(t + j)));
        if (c->dmin) {
            const float32x4_t dm = vmulq_n_f32(vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *) c->dmin + j))), dh);
            r = vfmsq_f32(r, dm, vcvtq_f32_s32(vld1q_s32(m + j)));
        }
        vst1q_f32(y + j, r);
    }
}

#endif

// plain C (CPUs without AVX2 or NEON, and GGML_SPARSE_SCALAR)

static inline int packed_k_quant(const packed_k_col * c, int i, int64_t j) {
    const int64_t o = j % 64;
    const uint8_t byte = c->ql[i*(c->n/2) + (j/64)*32 + o%32];
    int q = o < 32 ? (byte & 0x0F) : (byte >> 4);
    if (c->type == GGML_TYPE_Q5_K) {
        q |= (c->qh[i*(c->n/8) + j/8] >> (j%8) & 1) << 4;
    } else if (c->type == GGML_TYPE_Q6_K) {
        q |= (c->qh[i*(c->n/4) + (j/64)*16 + o%16] >> (2*(o/16)) & 3) << 4;
    }
    return q;
}

static void packed_k_group_generic(const packed_k_col * c, int g, const int8_t * hq, uint32_t active, int32_t sum_h,
                           int32_t * t, int32_t * m, bool first, const packed_k_next * next) {
    GGML_UNUSED(next);
    for (int64_t j = c->s0*64; j < c->s1*64; j++) {
        int32_t s = 0;
        for (int i = 0; i < c->group; i++) {
            if (active >> i & 1) {
                s += packed_k_quant(c, g*c->group + i, j) * hq[i];
            }
        }
        int32_t v;
        if (c->type == GGML_TYPE_Q6_K) {
            v = ((const int8_t *) c->sc)[g*c->n + j] * (s - 32*sum_h);
        } else {
            v = c->sc[g*c->n + j] * s;
            m[j] = (first ? 0 : m[j]) + c->mn[g*c->n + j] * sum_h;
        }
        t[j] = (first ? 0 : t[j]) + v;
    }
}

static void packed_k_finish_generic(const packed_k_col * c, float dh, const int32_t * t, const int32_t * m, float * y) {
    for (int64_t j = c->s0*64; j < c->s1*64; j++) {
        float r = GGML_CPU_FP16_TO_FP32(c->d[j]) * (float) t[j];
        if (c->dmin) {
            r -= GGML_CPU_FP16_TO_FP32(c->dmin[j]) * (float) m[j];
        }
        y[j] += dh * r;
    }
}


static void packed_k_group(const packed_k_col * c, int g, const int8_t * hq, uint32_t active, int32_t sum_h,
                           int32_t * t, int32_t * m, bool first, const packed_k_next * next) {
#ifdef PACKED_K_SIMD
    if (!ggml_sparse_scalar()) {
        packed_k_group_simd(c, g, hq, active, sum_h, t, m, first, next);
        return;
    }
#endif
    packed_k_group_generic(c, g, hq, active, sum_h, t, m, first, next);
}

static void packed_k_finish(const packed_k_col * c, float dh, const int32_t * t, const int32_t * m, float * y) {
#ifdef PACKED_K_SIMD
    if (!ggml_sparse_scalar()) {
        packed_k_finish_simd(c, dh, t, m, y);
        return;
    }
#endif
    packed_k_finish_generic(c, dh, t, m, y);
}

// y[0, n) += the contribution of one K-quant column (256 inputs) to all n outputs; `scratch`
// holds 2*n int32. `next` is the first group the caller reads after this column (or none).
static void packed_column_k(enum ggml_type type, const uint8_t * col, int64_t n, int64_t s0, int64_t s1,
                            const block_q8_K * hb, float * y, int32_t * scratch, const packed_k_next * after) {
    packed_k_next cur;
    packed_k_col_of(type, col, n, s0, s1, &cur.c);
    const int n_groups = QK_K / cur.c.group;
    uint32_t active[QK_K/16];
    for (int g = 0; g < n_groups; g++) {
        active[g] = packed_k_active(hb, cur.c.group, g);
    }
    bool first = true;
    for (int g = 0; g < n_groups; g++) {
        if (active[g] == 0) {
            continue;   // neither its quants nor its scales are read
        }
        packed_k_next next = *after;
        for (int g2 = g + 1; g2 < n_groups; g2++) {
            if (active[g2]) {
                next.c = cur.c;
                next.g = g2;
                next.active = active[g2];
                break;
            }
        }
        // h's sums of 16 quants, as ggml's K-quant dot products use them
        const int32_t sum_h = cur.c.group == 16 ? hb->bsums[g] : hb->bsums[2*g] + hb->bsums[2*g + 1];
        packed_k_group(&cur.c, g, hb->qs + g*cur.c.group, active[g], sum_h, scratch, scratch + n, first, &next);
        first = false;
    }
    if (!first) {
        packed_k_finish(&cur.c, hb->d, scratch, scratch + n, y);
    }
}

// the first active group of a column, for packed_column_k's `after`
static packed_k_next packed_k_first(enum ggml_type type, const uint8_t * col, int64_t n, int64_t s0, int64_t s1,
                                    const block_q8_K * hb) {
    packed_k_next next;
    packed_k_col_of(type, col, n, s0, s1, &next.c);
    next.g = 0;
    next.active = 0;
    for (int g = 0; g < QK_K / next.c.group; g++) {
        next.active = packed_k_active(hb, next.c.group, g);
        if (next.active) {
            next.g = g;
            break;
        }
    }
    return next;
}

static bool packed_k_any(const block_q8_K * hb) {
    for (int i = 0; i < QK_K; i++) {
        if (hb->qs[i] != 0) {
            return true;
        }
    }
    return false;
}

// a thread's scratch: the integer sums of a column's outputs (up to 4 bytes per output for
// Q4_0/Q4_1/Q8_0, 8 for the K-quants)
static size_t packed_scratch_size(int64_t n) {
    return GGML_PAD((size_t) n * 2 * sizeof(int32_t), PACKED_LINE);
}

// h quantized as the type's dot products quantize it: Q8_0, or Q8_K for the K-quants
static enum ggml_type packed_h_type(enum ggml_type type) {
    return ggml_sparse_packed_column_inputs(type) == QK_K ? GGML_TYPE_Q8_K : GGML_TYPE_Q8_0;
}

static size_t packed_hq_size(enum ggml_type type, int64_t k, int64_t m) {
    return GGML_PAD(ggml_row_size(packed_h_type(type), k) * m, PACKED_LINE);
}

void ggml_sparse_axpy_packed(const struct ggml_compute_params * params, struct ggml_tensor * dst) {
    const struct ggml_tensor * wt = dst->src[0];
    const struct ggml_tensor * h  = dst->src[1];
    const enum ggml_type type = (enum ggml_type) ggml_get_op_params_i32(dst, 0);

    const int ith = params->ith;
    const int nth = params->nth;
    const int64_t n        = dst->ne[0];
    const int64_t k        = h->ne[0];
    const int64_t m        = h->ne[1];
    const int64_t col_in   = ggml_sparse_packed_column_inputs(type);
    const int64_t n_cols   = k / col_in;
    const enum ggml_type h_type = packed_h_type(type);

    // h is quantized by all threads together, then threads split the outputs (groups of 32; spans
    // of 64 for the K-quants), each adding every active column into its part of dst directly. An
    // output's sum runs over the columns in one order whatever the number of threads, so the
    // result does not depend on it: the thresholds would turn such rounding into other channels kept.
    const size_t  hq_row  = ggml_row_size(h_type, k);
    const size_t  hq_blk  = ggml_type_size(h_type);
    char        * scratch = (char *) params->wdata + packed_hq_size(type, k, m);
    void        * acc     = scratch + ith * packed_scratch_size(n);
    const ggml_from_float_t to_q8 = ggml_get_type_traits_cpu(h_type)->from_float;

    const int64_t n_blk = n_cols * m;
    for (int64_t b = (n_blk * ith) / nth; b < (n_blk * (ith + 1)) / nth; b++) {
        const int64_t t = b / n_cols, c = b % n_cols;
        to_q8((const float *) ((const char *) h->data + t*h->nb[1]) + c*col_in,
              (char *) params->wdata + t*hq_row + c*hq_blk, col_in);
    }
    ggml_barrier(params->threadpool);

    const int64_t unit = col_in == QK_K ? 64 : PACKED_GROUP;
    const int64_t s0 = ((n / unit) * ith) / nth;
    const int64_t s1 = ((n / unit) * (ith + 1)) / nth;
    for (int64_t t = 0; t < m; t++) {
        memset((char *) dst->data + t*dst->nb[1] + s0*unit*sizeof(float), 0, (size_t) (s1 - s0)*unit*sizeof(float));
    }
    if (s1 == s0) {
        return;
    }

    if (col_in == QK_K) {
        // K-quants: each thread reads its part of every active row for all columns
        for (int64_t c = 0; c < n_cols; c++) {
            const uint8_t * col = (const uint8_t *) wt->data + c*wt->nb[1];
            for (int64_t t = 0; t < m; t++) {
                const char       * hq = (const char *) params->wdata + t*hq_row;
                const block_q8_K * hb = (const block_q8_K *) (hq + c*hq_blk);
                if (!packed_k_any(hb)) {
                    continue;   // neither scales nor quants are read
                }
                // what is read next: this column for the next token, or the next column
                packed_k_next after = { .active = 0 };
                if (t + 1 < m) {
                    after = packed_k_first(type, col, n, s0, s1, (const block_q8_K *) (hq + hq_row + c*hq_blk));
                } else if (c + 1 < n_cols) {
                    after = packed_k_first(type, col + wt->nb[1], n, s0, s1, (const block_q8_K *) ((const char *) params->wdata + (c + 1)*hq_blk));
                }
                packed_column_k(type, col, n, s0, s1, hb, (float *) ((char *) dst->data + t*dst->nb[1]), (int32_t *) acc, &after);
            }
        }
        return;
    }

    // a column at a time for all tokens: a batch reads each column from memory once
    for (int64_t c = 0; c < n_cols; c++) {
        const uint8_t * col = (const uint8_t *) wt->data + c*wt->nb[1];
        for (int64_t t = 0; t < m; t++) {
            const block_q8_0 * hb = (const block_q8_0 *) ((const char *) params->wdata + t*hq_row + c*hq_blk);
            const uint32_t active = packed_active_inputs(hb);
            if (active == 0) {
                continue;   // the whole column is skipped: neither scales nor quants are read
            }
            packed_column(type, col, n, s0, s1, hb, active, (float *) ((char *) dst->data + t*dst->nb[1]), acc);
        }
    }
}

size_t ggml_sparse_axpy_packed_work_size(const struct ggml_tensor * node, int n_tasks) {
    const enum ggml_type type = (enum ggml_type) ggml_get_op_params_i32(node, 0);
    const int64_t k = node->src[1]->ne[0];
    const int64_t m = node->src[1]->ne[1];
    return packed_hq_size(type, k, m) + (size_t) n_tasks * packed_scratch_size(node->ne[0]);
}

bool ggml_sparse_axpy_packed_supported(const struct ggml_tensor * op) {
    const enum ggml_type type = (enum ggml_type) ggml_get_op_params_i32(op, 0);
    const struct ggml_tensor * wt = op->src[0];
    const struct ggml_tensor * h  = op->src[1];
    const int64_t col_in = ggml_sparse_packed_column_inputs(type);
    return wt->type == GGML_TYPE_I8 && h->type == GGML_TYPE_F32 && col_in > 0 && h->ne[0] == wt->ne[1] * col_in &&
           ggml_sparse_packed_column_size(type, op->ne[0]) == (size_t) wt->ne[0] &&
           ggml_is_contiguous(wt);
}
