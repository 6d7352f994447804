// ggufsparse: N:M sparse matrix product (GGML_OP_MUL_MAT_NM).
//
//   y[r,t] = sum_j vals[r,j] * xp[(j/N)*M + pos(r,j), t],   xp[c,t] = x[perm[c], t]
//
// vals holds the kept N of every M weights of each row, K*N/M wide, in any type with a vec_dot;
// pos(r,j) is kept value j's position inside its group (idx: ggml_sparse_nm_index_bits(M) bits
// each, little-endian along the row). Per token the input is gathered by the permutation once;
// per row the inputs of the kept positions are gathered into a K*N/M vector, converted to the
// type's vec_dot_type and multiplied by the type's own dot product. Rows are split across threads.
// 2:4 rows have faster paths (F32/F16 fused gather-and-dot, Q8_0/Q4_0 in int8) in AVX2 and in
// NEON on 64-bit ARM, and so has the 2:4 expansion (SSSE3, NEON).

#define GGML_COMMON_DECL_C
#include "ggml-common.h"

#include "sparse-nm.h"
#include "sparse-ops.h"

#include "ggml-cpu.h"
#include "ggml-cpu-impl.h"
#include "ggml-impl.h"
#include "ggml-sparse.h"
#include "simd-mappings.h"

#include <math.h>
#include <string.h>

#define NM_LINE 64

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define NM_AVX2 1
#elif defined(__ARM_NEON) && defined(__aarch64__)
#define NM_NEON 1
#endif

// 2:4 with 2-bit positions: one index byte b holds the positions of 4 kept values (two groups of
// 4 inputs); kept value q (0-3) is input 4*(q/2) + ((b >> 2q) & 3) of the group pair's 8 inputs.
// Constant tables of these, built by the preprocessor.
#define NM_Q(b, q) (4*((q)/2) + (((b) >> (2*(q))) & 3))


static inline float nm_x_2_4(const float * xp, const uint8_t * idx, int64_t j) {
    return xp[(j / 2) * 4 + ((idx[j >> 2] >> (2 * (j & 3))) & 3)];
}

// The gather's work per weight byte keeps fewer loads in flight than a dense dot product does, so
// from memory (not cache) the weights would arrive slower than the memory delivers them: fetch
// them, and the index, ahead (past a row's end is the next row's start)
static inline void nm_prefetch(const void * w, const uint8_t * idx) {
#if defined(__GNUC__)
    __builtin_prefetch((const char *) w + 1024, 0, 3);
    __builtin_prefetch((const char *) idx + 128, 0, 3);
#elif defined(NM_AVX2)
    _mm_prefetch((const char *) w + 1024, _MM_HINT_T0);
    _mm_prefetch((const char *) idx + 128, _MM_HINT_T0);
#else
    (void) w; (void) idx;
#endif
}

#ifdef NM_AVX2
// NM_PERM_2_4[b]: the lane permutation that brings the kept inputs to lanes 0-3 of the group
// pair's 8 inputs
#define NM_P1(b)   { NM_Q(b, 0), NM_Q(b, 1), NM_Q(b, 2), NM_Q(b, 3), 0, 0, 0, 0 }
#define NM_P4(b)   NM_P1(b), NM_P1((b) + 1), NM_P1((b) + 2), NM_P1((b) + 3)
#define NM_P16(b)  NM_P4(b), NM_P4((b) + 4), NM_P4((b) + 8), NM_P4((b) + 12)
#define NM_P64(b)  NM_P16(b), NM_P16((b) + 16), NM_P16((b) + 32), NM_P16((b) + 48)
static const int32_t NM_PERM_2_4[256][8] = {
    NM_P64(0), NM_P64(64), NM_P64(128), NM_P64(192)
};

static inline __m256i nm_perm_2_4(uint8_t b) {
    return _mm256_loadu_si256((const __m256i *) NM_PERM_2_4[b]);
}

// the next 8 kept inputs of a 2:4 row: kept values j..j+7 come from inputs 2j..2j+15
static inline __m256 nm_next8_2_4(const float * xp, const uint8_t * idx, int64_t j) {
    const __m256 ga = _mm256_permutevar8x32_ps(_mm256_loadu_ps(xp + 2*j),     nm_perm_2_4(idx[j/4]));
    const __m256 gb = _mm256_permutevar8x32_ps(_mm256_loadu_ps(xp + 2*j + 8), nm_perm_2_4(idx[j/4 + 1]));
    return _mm256_permute2f128_ps(ga, gb, 0x20);
}

static inline float nm_hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// fused gather and dot for F32 / F16 rows of a 2:4 weight: the gathered input never leaves registers
static float nm_dot_2_4_float(enum ggml_type type, const void * w, const float * xp, const uint8_t * idx, int64_t kn) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t j = 0;
    if (type == GGML_TYPE_F16) {
        const ggml_fp16_t * wh = (const ggml_fp16_t *) w;
        for (; j + 16 <= kn; j += 16) {
            nm_prefetch(wh + j, idx + j/4);
            acc0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (wh + j))),
                                   nm_next8_2_4(xp, idx, j), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (wh + j + 8))),
                                   nm_next8_2_4(xp, idx, j + 8), acc1);
        }
        float sum = nm_hsum(_mm256_add_ps(acc0, acc1));
        for (; j < kn; j++) {
            sum += GGML_CPU_FP16_TO_FP32(wh[j]) * nm_x_2_4(xp, idx, j);
        }
        return sum;
    }
    const float * wf = (const float *) w;
    for (; j + 16 <= kn; j += 16) {
        nm_prefetch(wf + j, idx + j/4);
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(wf + j),     nm_next8_2_4(xp, idx, j),     acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(wf + j + 8), nm_next8_2_4(xp, idx, j + 8), acc1);
    }
    float sum = nm_hsum(_mm256_add_ps(acc0, acc1));
    for (; j < kn; j++) {
        sum += wf[j] * nm_x_2_4(xp, idx, j);
    }
    return sum;
}

// xg[0, kn) from xp by the 2:4 positions of one row
static void nm_gather_2_4(const float * xp, const uint8_t * idx, float * xg, int64_t kn) {
    int64_t j = 0;
    for (; j + 8 <= kn; j += 8) {
        _mm256_storeu_ps(xg + j, nm_next8_2_4(xp, idx, j));
    }
    for (; j < kn; j++) {
        xg[j] = nm_x_2_4(xp, idx, j);
    }
}

// The byte-shuffle control that picks a block's 32 kept int8 inputs, made in vector registers from
// its 8 index bytes. (It came from BMI2's pdep before, which is microcoded on AMD Zen 1/2, CPUs the
// portable x86-64-v3 build targets, and never enabled under MSVC.) Its four 8-byte quarters hold
// kept values 0-7, 16-23, 8-15, 24-31: byte j of a quarter of kept values 8X.. is the position of
// kept value 8X+j (2 bits q = j%4 of index byte 2X + j/4) plus its group's offset 4*(j/2) among
// the 16 inputs of its lane.
static inline __m256i nm_ctl_2_4(const uint8_t * ib) {
    int64_t u;
    memcpy(&u, ib, sizeof(u));
    const __m256i rep = _mm256_shuffle_epi8(_mm256_set1_epi64x(u), _mm256_setr_epi8(
        0, 0, 0, 0, 1, 1, 1, 1, 4, 4, 4, 4, 5, 5, 5, 5, 2, 2, 2, 2, 3, 3, 3, 3, 6, 6, 6, 6, 7, 7, 7, 7));
    // bits 2q..2q+1 of byte q of each dword (16-bit shifts: a neighbour's bits only reach bits
    // that the mask drops)
    const __m256i pos = _mm256_or_si256(
        _mm256_or_si256(_mm256_and_si256(rep, _mm256_set1_epi32(0x00000003)),
                        _mm256_and_si256(_mm256_srli_epi16(rep, 2), _mm256_set1_epi32(0x00000300))),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(rep, 4), _mm256_set1_epi32(0x00030000)),
                        _mm256_and_si256(_mm256_srli_epi16(rep, 6), _mm256_set1_epi32(0x03000000))));
    return _mm256_add_epi8(pos, _mm256_set1_epi64x(0x0C0C080804040000ll));
}

// the 32 kept int8 inputs of one weight block (64 inputs), in kept order: each 16-input lane
// yields 8 kept values by a byte shuffle
static inline __m256i nm_gather_q_2_4(const int8_t * xq, const uint8_t * ib) {
    const __m256i none = _mm256_set1_epi8((char) 0x80);
    const __m256i ctl  = nm_ctl_2_4(ib);
    // inputs 0-31 fill bytes 0-7 of each lane, inputs 32-63 bytes 8-15
    const __m256i lo = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *) xq),        _mm256_unpacklo_epi64(ctl, none));
    const __m256i hi = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *) (xq + 32)), _mm256_unpackhi_epi64(none, ctl));
    // quads hold kept 0-7, 16-23, 8-15, 24-31: restore the order
    return _mm256_permute4x64_epi64(_mm256_or_si256(lo, hi), 0xD8);
}

static inline __m256 nm_block_dot(__m256i qw, __m256i qx, float scale, __m256 acc) {
    const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(qw, qw), _mm256_sign_epi8(qx, qw));
    const __m256i p32 = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
    return _mm256_fmadd_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(p32), acc);
}

static float nm_dot_2_4_int8(enum ggml_type type, const void * w, const int8_t * xq, const float * xd,
                             const uint8_t * idx, int64_t kn) {
    __m256 acc = _mm256_setzero_ps();
    const int64_t nb = kn / 32;
    if (type == GGML_TYPE_Q8_0) {
        const block_q8_0 * b = (const block_q8_0 *) w;
        for (int64_t i = 0; i < nb; i++) {
            nm_prefetch(b + i, idx + i*8);
            const __m256i qw = _mm256_loadu_si256((const __m256i *) b[i].qs);
            acc = nm_block_dot(qw, nm_gather_q_2_4(xq + i*64, idx + i*8),
                               GGML_CPU_FP16_TO_FP32(b[i].d) * xd[i], acc);
        }
    } else {
        const block_q4_0 * b = (const block_q4_0 *) w;
        const __m256i low4 = _mm256_set1_epi8(0x0F);
        for (int64_t i = 0; i < nb; i++) {
            nm_prefetch(b + i, idx + i*8);
            const __m128i q = _mm_loadu_si128((const __m128i *) b[i].qs);
            __m256i qw = _mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1);
            qw = _mm256_sub_epi8(_mm256_and_si256(qw, low4), _mm256_set1_epi8(8));
            acc = nm_block_dot(qw, nm_gather_q_2_4(xq + i*64, idx + i*8),
                               GGML_CPU_FP16_TO_FP32(b[i].d) * xd[i], acc);
        }
    }
    return nm_hsum(acc);
}
#endif

#ifdef NM_NEON
// NM_GATHER_2_4[b]: the byte-table control that picks kept values 0-3 (floats) of index byte b
// from the group pair's 8 float inputs (32 bytes)
#define NM_GQ(b, q)  4*NM_Q(b, q), 4*NM_Q(b, q) + 1, 4*NM_Q(b, q) + 2, 4*NM_Q(b, q) + 3
#define NM_G1(b)     { NM_GQ(b, 0), NM_GQ(b, 1), NM_GQ(b, 2), NM_GQ(b, 3) }
#define NM_G4(b)     NM_G1(b), NM_G1((b) + 1), NM_G1((b) + 2), NM_G1((b) + 3)
#define NM_G16(b)    NM_G4(b), NM_G4((b) + 4), NM_G4((b) + 8), NM_G4((b) + 12)
#define NM_G64(b)    NM_G16(b), NM_G16((b) + 16), NM_G16((b) + 32), NM_G16((b) + 48)
static const uint8_t NM_GATHER_2_4[256][16] = {
    NM_G64(0), NM_G64(64), NM_G64(128), NM_G64(192)
};

// kept values 4i..4i+3 of a 2:4 row, from inputs 8i..8i+7 (xp8 = xp + 8i) by index byte b
static inline float32x4_t nm_next4_2_4(const float * xp8, uint8_t b) {
    uint8x16x2_t tab;
    tab.val[0] = vreinterpretq_u8_f32(vld1q_f32(xp8));
    tab.val[1] = vreinterpretq_u8_f32(vld1q_f32(xp8 + 4));
    return vreinterpretq_f32_u8(vqtbl2q_u8(tab, vld1q_u8(NM_GATHER_2_4[b])));
}

static inline float32x4_t nm_f16x4(const ggml_fp16_t * p) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *) p)));
}

// fused gather and dot for F32 / F16 rows of a 2:4 weight: the gathered input never leaves registers
static float nm_dot_2_4_float(enum ggml_type type, const void * w, const float * xp, const uint8_t * idx, int64_t kn) {
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
    int64_t j = 0;
    const bool f16 = type == GGML_TYPE_F16;
    const ggml_fp16_t * wh = (const ggml_fp16_t *) w;
    const float       * wf = (const float *) w;
    for (; j + 8 <= kn; j += 8) {
        nm_prefetch(f16 ? (const void *) (wh + j) : (const void *) (wf + j), idx + j/4);
        const float32x4_t w0 = f16 ? nm_f16x4(wh + j)     : vld1q_f32(wf + j);
        const float32x4_t w1 = f16 ? nm_f16x4(wh + j + 4) : vld1q_f32(wf + j + 4);
        acc0 = vfmaq_f32(acc0, w0, nm_next4_2_4(xp + 2*j,     idx[j/4]));
        acc1 = vfmaq_f32(acc1, w1, nm_next4_2_4(xp + 2*j + 8, idx[j/4 + 1]));
    }
    float sum = vaddvq_f32(vaddq_f32(acc0, acc1));
    for (; j < kn; j++) {
        sum += (f16 ? GGML_CPU_FP16_TO_FP32(wh[j]) : wf[j]) * nm_x_2_4(xp, idx, j);
    }
    return sum;
}

// xg[0, kn) from xp by the 2:4 positions of one row
static void nm_gather_2_4(const float * xp, const uint8_t * idx, float * xg, int64_t kn) {
    int64_t j = 0;
    for (; j + 4 <= kn; j += 4) {
        vst1q_f32(xg + j, nm_next4_2_4(xp + 2*j, idx[j/4]));
    }
    for (; j < kn; j++) {
        xg[j] = nm_x_2_4(xp, idx, j);
    }
}

// the 32 kept int8 inputs of one weight block (64 inputs), in kept order: one table lookup over
// the 64 inputs, kept value j from input 8*(j/4) + 4*((j%4)/2) + its position, the 2 bits at
// 2*(j%4) of index byte j/4 (a per-lane shift)
static inline void nm_gather_q_2_4(const int8_t * xq, const uint8_t * ib, int8x16_t * lo, int8x16_t * hi) {
    static const uint8_t rep[16] = { 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3 };
    static const int8_t  shr[16] = { 0, -2, -4, -6, 0, -2, -4, -6, 0, -2, -4, -6, 0, -2, -4, -6 };
    static const uint8_t off[16] = { 0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28 };
    const uint8x16_t b     = vcombine_u8(vld1_u8(ib), vdup_n_u8(0));
    const uint8x16_t r     = vld1q_u8(rep);
    const int8x16_t  s     = vld1q_s8(shr);
    const uint8x16_t o     = vld1q_u8(off);
    const uint8x16_t three = vdupq_n_u8(3);
    const uint8x16_t c0 = vaddq_u8(vandq_u8(vshlq_u8(vqtbl1q_u8(b, r), s), three), o);
    const uint8x16_t c1 = vaddq_u8(vandq_u8(vshlq_u8(vqtbl1q_u8(b, vaddq_u8(r, vdupq_n_u8(4))), s), three),
                                   vaddq_u8(o, vdupq_n_u8(32)));
    int8x16x4_t x;
    x.val[0] = vld1q_s8(xq);
    x.val[1] = vld1q_s8(xq + 16);
    x.val[2] = vld1q_s8(xq + 32);
    x.val[3] = vld1q_s8(xq + 48);
    *lo = vqtbl4q_s8(x, c0);
    *hi = vqtbl4q_s8(x, c1);
}

static float nm_dot_2_4_int8(enum ggml_type type, const void * w, const int8_t * xq, const float * xd,
                             const uint8_t * idx, int64_t kn) {
    float32x4_t acc = vdupq_n_f32(0.0f);
    const int64_t nb = kn / 32;
    const bool q8 = type == GGML_TYPE_Q8_0;
    for (int64_t i = 0; i < nb; i++) {
        int8x16_t w0, w1;
        float d;
        if (q8) {
            const block_q8_0 * b = (const block_q8_0 *) w + i;
            nm_prefetch(b, idx + i*8);
            w0 = vld1q_s8(b->qs);
            w1 = vld1q_s8(b->qs + 16);
            d  = GGML_CPU_FP16_TO_FP32(b->d);
        } else {
            const block_q4_0 * b = (const block_q4_0 *) w + i;
            nm_prefetch(b, idx + i*8);
            const uint8x16_t q = vld1q_u8(b->qs);
            w0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F))), vdupq_n_s8(8));
            w1 = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), vdupq_n_s8(8));
            d  = GGML_CPU_FP16_TO_FP32(b->d);
        }
        int8x16_t x0, x1;
        nm_gather_q_2_4(xq + i*64, idx + i*8, &x0, &x1);
        const int32x4_t p = ggml_vdotq_s32(ggml_vdotq_s32(vdupq_n_s32(0), w0, x0), w1, x1);
        acc = vmlaq_n_f32(acc, vcvtq_f32_s32(p), d * xd[i]);
    }
    return vaddvq_f32(acc);
}
#endif

#if defined(NM_AVX2) || defined(NM_NEON)
// F32 / F16 rows of a 2:4 weight: gather and dot in one pass. Q8_0 / Q4_0 rows: the input is
// quantized once per token to int8 in blocks of 64 inputs, so that each weight block (32 kept
// values, from 64 inputs) meets one input scale; per block the kept int8 inputs are picked by
// byte shuffles and dotted in integers as ggml does. No per-row float gather and no per-row
// requantization.
#define NM_FLOAT_2_4 1
#define NM_INT8_2_4 1
#define NM_QBLK 64

static void nm_quantize_64(const float * xp, int8_t * xq, float * xd, int64_t k) {
    for (int64_t b = 0; b < k / NM_QBLK; b++) {
        const float * v = xp + b*NM_QBLK;
        float amax = 0.0f;
        for (int i = 0; i < NM_QBLK; i++) {
            amax = fmaxf(amax, fabsf(v[i]));
        }
        const float d  = amax / 127.0f;
        const float id = d > 0.0f ? 1.0f/d : 0.0f;
        for (int i = 0; i < NM_QBLK; i++) {
            xq[b*NM_QBLK + i] = (int8_t) nearbyintf(v[i]*id);
        }
        xd[b] = d;
    }
}
#endif

static void nm_gather(const float * xp, const uint8_t * idx, float * xg, int64_t kn, int n, int m) {
#ifdef NM_FLOAT_2_4
    if (n == 2 && m == 4 && !ggml_sparse_scalar()) {
        nm_gather_2_4(xp, idx, xg, kn);
        return;
    }
#endif
    const int bits = ggml_sparse_nm_index_bits(m);
    const int mask = (1 << bits) - 1;
    for (int64_t j = 0; j < kn; j++) {
        const int64_t bit = j * bits;
        const int pos = (idx[bit >> 3] >> (bit & 7)) & mask;
        // a malformed index (4-bit positions past m) must not read outside its group
        xg[j] = xp[(j / n) * m + (pos < m ? pos : m - 1)];
    }
}

static size_t nm_thread_floats(const struct ggml_tensor * node) {
    const int64_t k  = node->src[2]->ne[0];
    const int64_t kn = node->src[0]->ne[0];
    return GGML_PAD((k + kn) * sizeof(float), NM_LINE);
}

static bool nm_int8_path(const struct ggml_tensor * node) {
#ifdef NM_INT8_2_4
    const enum ggml_type type = node->src[0]->type;
    return !ggml_sparse_scalar() && ggml_get_op_params_i32(node, 0) == 2 && ggml_get_op_params_i32(node, 1) == 4 &&
           (type == GGML_TYPE_Q8_0 || type == GGML_TYPE_Q4_0);
#else
    (void) node;
    return false;
#endif
}

static size_t nm_thread_xq(const struct ggml_tensor * node) {
    const struct ggml_type_traits_cpu * traits = ggml_get_type_traits_cpu(node->src[0]->type);
    if (traits->vec_dot_type == GGML_TYPE_F32) {
        return 0;
    }
    size_t size = ggml_row_size(traits->vec_dot_type, node->src[0]->ne[0]);
    if (nm_int8_path(node)) {
        const int64_t k = node->src[2]->ne[0];
        size = MAX(size, (size_t) k + (size_t) (k / 64) * sizeof(float) + NM_LINE);
    }
    return GGML_PAD(size, NM_LINE);
}

size_t ggml_sparse_mul_mat_nm_work_size(const struct ggml_tensor * node, int n_tasks) {
    return (size_t) n_tasks * (nm_thread_floats(node) + nm_thread_xq(node)) + NM_LINE;
}

void ggml_compute_forward_mul_mat_nm(const struct ggml_compute_params * params, struct ggml_tensor * dst) {
    const struct ggml_tensor * vals = dst->src[0];
    const struct ggml_tensor * idx  = dst->src[1];
    const struct ggml_tensor * x    = dst->src[2];
    const struct ggml_tensor * perm = dst->src[3];
    const int n = ggml_get_op_params_i32(dst, 0);
    const int m = ggml_get_op_params_i32(dst, 1);

    const int ith = params->ith;
    const int nth = params->nth;

    const struct ggml_type_traits_cpu * traits = ggml_get_type_traits_cpu(vals->type);
    const enum ggml_type vec_dot_type = traits->vec_dot_type;
    const ggml_from_float_t from_float = vec_dot_type == GGML_TYPE_F32 ? NULL :
                                         ggml_get_type_traits_cpu(vec_dot_type)->from_float;
    const int64_t k    = x->ne[0];
    const int64_t kn   = vals->ne[0];
    const int64_t rows = vals->ne[1];
    const int64_t cols = x->ne[1];

    char * base = (char *) GGML_PAD((uintptr_t) params->wdata, NM_LINE) +
                  (size_t) ith * (nm_thread_floats(dst) + nm_thread_xq(dst));
    float * xp = (float *) base;
    float * xg = xp + k;
    void  * xq = base + nm_thread_floats(dst);

    const int64_t r0 = (rows * ith) / nth;
    const int64_t r1 = (rows * (ith + 1)) / nth;
    const int32_t * pm = perm ? (const int32_t *) perm->data : NULL;
    // F32 and F16 rows of a 2:4 weight: gather and dot in one pass (the dot in f32, where the
    // type's own vec_dot would round the input to f16 first)
    const bool fused = n == 2 && m == 4 && (vals->type == GGML_TYPE_F32 || vals->type == GGML_TYPE_F16) &&
                       !ggml_sparse_scalar();
    (void) fused;
    const bool int8 = nm_int8_path(dst);
    (void) int8;
    int8_t * xq8 = (int8_t *) xq;
    float  * xd  = (float *) ((char *) xq + GGML_PAD(k, NM_LINE));
    (void) xq8; (void) xd;

    for (int64_t t = 0; t < cols; t++) {
        const float * xt = (const float *) ((const char *) x->data + t*x->nb[1]);
        const float * src = xt;
        if (pm) {
            // a malformed permutation must not read outside the input
            for (int64_t c = 0; c < k; c++) {
                xp[c] = (uint32_t) pm[c] < (uint64_t) k ? xt[pm[c]] : 0.0f;
            }
            src = xp;
        }
        float * y = (float *) ((char *) dst->data + t*dst->nb[1]);
#ifdef NM_INT8_2_4
        if (int8) {
            nm_quantize_64(src, xq8, xd, k);
            for (int64_t r = r0; r < r1; r++) {
                y[r] = nm_dot_2_4_int8(vals->type, (const char *) vals->data + r*vals->nb[1], xq8, xd,
                                       (const uint8_t *) idx->data + r*idx->nb[1], kn);
            }
            continue;
        }
#endif
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t * ir = (const uint8_t *) idx->data + r*idx->nb[1];
            const char * w = (const char *) vals->data + r*vals->nb[1];
#ifdef NM_FLOAT_2_4
            if (fused) {
                y[r] = nm_dot_2_4_float(vals->type, w, src, ir, kn);
                continue;
            }
#endif
            nm_gather(src, ir, xg, kn, n, m);
            if (from_float) {
                from_float(xg, xq, kn);
                traits->vec_dot(kn, y + r, 0, w, 0, xq, 0, 1);
            } else {
                traits->vec_dot(kn, y + r, 0, w, 0, xg, 0, 1);
            }
        }
    }
}

bool ggml_sparse_mul_mat_nm_supported(const struct ggml_tensor * op) {
    const struct ggml_tensor * vals = op->src[0];
    const struct ggml_type_traits_cpu * traits = ggml_get_type_traits_cpu(vals->type);
    return op->src[2]->type == GGML_TYPE_F32 && traits->vec_dot != NULL && traits->nrows == 1 &&
           (traits->vec_dot_type == GGML_TYPE_F32 ||
            ggml_get_type_traits_cpu(traits->vec_dot_type)->from_float != NULL) &&
           vals->ne[0] % ggml_blck_size(vals->type) == 0;
}

// GGML_OP_NM_EXPAND: the dense weight a packed copy stands for, in the permuted input order, for
// products over many tokens (prompts), where llama.cpp's dense kernels beat a per-token gather.
// Permuted input c = (j/n)*m + pos(r,j) of row r holds kept value j; every other input is zero.
// Q8_0 / Q4_0: kept values keep their quants, and a dense block takes the scale of the packed
// block its kept values come from (one block, as n divides m and 32), so the expansion is exact.

// Positions are read group by group with a running bit offset (bits is 1, 2 or 4, so a position
// never straddles a byte): no division per kept value, which dominated a per-value column formula.
// A malformed index (4-bit positions past m) must not write outside its group: clamp to m-1.
#define NM_FOR_EACH_KEPT(k, n, m, bits, idx, ...)                                       \
    do {                                                                                \
        const int mask_ = (1 << (bits)) - 1;                                            \
        int64_t bit_ = 0, j = 0;                                                        \
        for (int64_t base = 0; base < (k); base += (m)) {                               \
            for (int t_ = 0; t_ < (n); t_++, j++, bit_ += (bits)) {                     \
                int pos_ = ((idx)[bit_ >> 3] >> (bit_ & 7)) & mask_;                    \
                const int64_t c = base + (pos_ < (m) ? pos_ : (m) - 1);                 \
                __VA_ARGS__;                                                            \
            }                                                                           \
        }                                                                               \
    } while (0)

#if defined(__SSSE3__) || defined(NM_NEON)
// 16-byte vectors: SSSE3's, or NEON's (whose byte table lookup also writes 0 for an index >= 16)
#if defined(__SSSE3__)
#include <immintrin.h>
typedef __m128i nm_v16;
#define nm_load16(p)        _mm_loadu_si128((const __m128i *) (p))
#define nm_load8(p)         _mm_loadl_epi64((const __m128i *) (p))   // the upper 8 bytes 0
#define nm_store16(p, v)    _mm_storeu_si128((__m128i *) (p), (v))
#define nm_shuffle(v, m)    _mm_shuffle_epi8((v), (m))
#define nm_pair64(lo, hi)   _mm_set_epi64x((long long) (hi), (long long) (lo))
#define nm_set1(x)          _mm_set1_epi8((char) (x))
#define nm_and(a, b)        _mm_and_si128((a), (b))
#define nm_or(a, b)         _mm_or_si128((a), (b))
#define nm_xor(a, b)        _mm_xor_si128((a), (b))
#define nm_srl16(v, n)      _mm_srli_epi16((v), (n))
#define nm_sll16(v, n)      _mm_slli_epi16((v), (n))
#else
typedef uint8x16_t nm_v16;
#define nm_load16(p)        vld1q_u8((const uint8_t *) (p))
#define nm_load8(p)         vcombine_u8(vld1_u8((const uint8_t *) (p)), vdup_n_u8(0))
#define nm_store16(p, v)    vst1q_u8((uint8_t *) (p), (v))
#define nm_shuffle(v, m)    vqtbl1q_u8((v), (m))
#define nm_pair64(lo, hi)   vcombine_u8(vcreate_u8(lo), vcreate_u8(hi))
#define nm_set1(x)          vdupq_n_u8((uint8_t) (x))
#define nm_and(a, b)        vandq_u8((a), (b))
#define nm_or(a, b)         vorrq_u8((a), (b))
#define nm_xor(a, b)        veorq_u8((a), (b))
#define nm_srl16(v, n)      vreinterpretq_u8_u16(vshrq_n_u16(vreinterpretq_u16_u8(v), (n)))
#define nm_sll16(v, n)      vreinterpretq_u8_u16(vshlq_n_u16(vreinterpretq_u16_u8(v), (n)))
#endif

// 2:4: one index byte places 4 kept values (two groups) among 8 inputs. Source lane of input q, or
// -1 for a pruned one; where a malformed byte repeats a position, the later kept value wins.
#define NM_SRC_G(c, q, o)   ((((c) >> 2) & 3) == (q) ? (o) + 1 : (((c) & 3) == (q) ? (o) : -1))
#define NM_SRC(b, q)        ((q) < 4 ? NM_SRC_G((b), (q), 0) : NM_SRC_G((b) >> 4, (q) - 4, 2))
#define NM_B8(b, q)         (NM_SRC(b, q) < 0 ? 0x80 : NM_SRC(b, q))
#define NM_B16(b, q, h)     (NM_SRC(b, q) < 0 ? 0x80 : 2*NM_SRC(b, q) + (h))

// byte shuffles (0x80 zeroes a lane) for 1-byte values (Q8_0 quants, Q4_0 nibbles)
#define NM_S8(b)   { NM_B8(b,0), NM_B8(b,1), NM_B8(b,2), NM_B8(b,3), NM_B8(b,4), NM_B8(b,5), NM_B8(b,6), NM_B8(b,7) }
#define NM_S8x4(b)  NM_S8(b), NM_S8((b) + 1), NM_S8((b) + 2), NM_S8((b) + 3)
#define NM_S8x16(b) NM_S8x4(b), NM_S8x4((b) + 4), NM_S8x4((b) + 8), NM_S8x4((b) + 12)
#define NM_S8x64(b) NM_S8x16(b), NM_S8x16((b) + 16), NM_S8x16((b) + 32), NM_S8x16((b) + 48)
static const uint8_t NM_SHUF8_2_4[256][8] = {
    NM_S8x64(0), NM_S8x64(64), NM_S8x64(128), NM_S8x64(192)
};

// and for 2-byte values (F16, BF16)
#define NM_S16(b)   { NM_B16(b,0,0), NM_B16(b,0,1), NM_B16(b,1,0), NM_B16(b,1,1), NM_B16(b,2,0), NM_B16(b,2,1), \
                      NM_B16(b,3,0), NM_B16(b,3,1), NM_B16(b,4,0), NM_B16(b,4,1), NM_B16(b,5,0), NM_B16(b,5,1), \
                      NM_B16(b,6,0), NM_B16(b,6,1), NM_B16(b,7,0), NM_B16(b,7,1) }
#define NM_S16x4(b)  NM_S16(b), NM_S16((b) + 1), NM_S16((b) + 2), NM_S16((b) + 3)
#define NM_S16x16(b) NM_S16x4(b), NM_S16x4((b) + 4), NM_S16x4((b) + 8), NM_S16x4((b) + 12)
#define NM_S16x64(b) NM_S16x16(b), NM_S16x16((b) + 16), NM_S16x16((b) + 32), NM_S16x16((b) + 48)
static const uint8_t NM_SHUF16_2_4[256][16] = {
    NM_S16x64(0), NM_S16x64(64), NM_S16x64(128), NM_S16x64(192)
};

// the shuffle that places 16 one-byte kept values (4 index bytes) among the 32 inputs of a block
static inline void nm_masks_2_4(const uint8_t * ib, nm_v16 * lo, nm_v16 * hi) {
    uint64_t s[4];
    memcpy(&s[0], NM_SHUF8_2_4[ib[0]], 8);
    memcpy(&s[1], NM_SHUF8_2_4[ib[1]], 8);
    memcpy(&s[2], NM_SHUF8_2_4[ib[2]], 8);
    memcpy(&s[3], NM_SHUF8_2_4[ib[3]], 8);
    // index byte i takes kept values 4i..4i+3; adding 4i to a 0x80 lane keeps its top bit
    *lo = nm_pair64(s[0], s[1] + 0x0404040404040404ull);
    *hi = nm_pair64(s[2] + 0x0808080808080808ull, s[3] + 0x0c0c0c0c0c0c0c0cull);
}
#define NM_EXPAND_2_4 1
#endif

// expanded rows are written whole (pruned inputs as zeros), once, from the packed row
static void nm_expand_row_float(size_t size, const char * v, const uint8_t * idx, char * d, int64_t k,
                                int n, int m, int bits) {
    int64_t c0 = 0;  // inputs before c0 are written
#ifdef NM_EXPAND_2_4
    if (size == 2 && n == 2 && m == 4 && !ggml_sparse_scalar()) {
        for (; c0 + 8 <= k; c0 += 8) {
            const nm_v16 in = nm_load8(v + c0);  // kept values c0/2 ..
            const nm_v16 sh = nm_load16(NM_SHUF16_2_4[idx[c0 / 8]]);
            nm_store16(d + 2*c0, nm_shuffle(in, sh));
        }
        if (c0 == k) {
            return;
        }
    }
#endif
    memset(d + c0*size, 0, (size_t) (k - c0) * size);
    if (size == 4) {
        NM_FOR_EACH_KEPT(k, n, m, bits, idx, if (c >= c0) ((uint32_t *) d)[c] = ((const uint32_t *) v)[j]);
    } else {
        NM_FOR_EACH_KEPT(k, n, m, bits, idx, if (c >= c0) ((uint16_t *) d)[c] = ((const uint16_t *) v)[j]);
    }
}

// Q8_0 / Q4_0: n divides m and 32 (ggml_sparse_nm_expandable), so dense block b draws all its kept
// values from packed block (b*n)/m and takes that block's scale
static void nm_expand_row_q8_0(const block_q8_0 * v, const uint8_t * idx, block_q8_0 * d, int64_t k,
                               int n, int m, int bits) {
#ifdef NM_EXPAND_2_4
    if (n == 2 && m == 4 && !ggml_sparse_scalar()) {
        for (int64_t b = 0; b < k / QK8_0; b++) {
            nm_v16 lo, hi;
            nm_masks_2_4(idx + 4*b, &lo, &hi);
            const nm_v16 in = nm_load16(v[b/2].qs + 16*(b % 2));
            d[b].d = v[b/2].d;
            nm_store16(d[b].qs,      nm_shuffle(in, lo));
            nm_store16(d[b].qs + 16, nm_shuffle(in, hi));
        }
        return;
    }
#endif
    for (int64_t b = 0; b < k / QK8_0; b++) {
        d[b].d = v[(b * n) / m].d;
        memset(d[b].qs, 0, sizeof(d[b].qs));
    }
    NM_FOR_EACH_KEPT(k, n, m, bits, idx, d[c / QK8_0].qs[c % QK8_0] = v[j / QK8_0].qs[j % QK8_0]);
}

// Q4_0 keeps element i of a block in the low nibble of qs[i] (i < 16) or the high nibble of
// qs[i - 16], offset by 8: a zero is the nibble 8
static void nm_expand_row_q4_0(const block_q4_0 * v, const uint8_t * idx, block_q4_0 * d, int64_t k,
                               int n, int m, int bits) {
    const int half = QK4_0 / 2;
#ifdef NM_EXPAND_2_4
    if (n == 2 && m == 4 && !ggml_sparse_scalar()) {
        const nm_v16 low4 = nm_set1(0x0f), eight = nm_set1(0x08);
        for (int64_t b = 0; b < k / QK4_0; b++) {
            nm_v16 lo, hi;
            nm_masks_2_4(idx + 4*b, &lo, &hi);
            // kept values 16*(b%2).. of the packed block, one per byte; xor 8 makes a zero the 0 a
            // shuffle writes to pruned inputs
            const nm_v16 q  = nm_load16(v[b/2].qs);
            const nm_v16 in = nm_xor(nm_and(b % 2 ? nm_srl16(q, 4) : q, low4), eight);
            const nm_v16 e0 = nm_xor(nm_shuffle(in, lo), eight);  // elements 0..15
            const nm_v16 e1 = nm_xor(nm_shuffle(in, hi), eight);  // elements 16..31
            d[b].d = v[b/2].d;
            nm_store16(d[b].qs, nm_or(e0, nm_sll16(e1, 4)));
        }
        return;
    }
#endif
    for (int64_t b = 0; b < k / QK4_0; b++) {
        d[b].d = v[(b * n) / m].d;
        memset(d[b].qs, 0x88, sizeof(d[b].qs));
    }
    NM_FOR_EACH_KEPT(k, n, m, bits, idx, {
        const int jj = (int) (j % QK4_0);
        const uint8_t src = v[j / QK4_0].qs[jj % half];
        const uint8_t q = jj < half ? (src & 0x0F) : (src >> 4);
        const int cc = (int) (c % QK4_0);
        uint8_t * dst = &d[c / QK4_0].qs[cc % half];
        *dst = cc < half ? (uint8_t) ((*dst & 0xF0) | q) : (uint8_t) ((*dst & 0x0F) | (q << 4));
    });
}

void ggml_compute_forward_nm_expand(const struct ggml_compute_params * params, struct ggml_tensor * dst) {
    const struct ggml_tensor * vals = dst->src[0];
    const struct ggml_tensor * idx  = dst->src[1];
    const int n = ggml_get_op_params_i32(dst, 0);
    const int m = ggml_get_op_params_i32(dst, 1);
    const int bits = ggml_sparse_nm_index_bits(m);
    const int64_t k    = dst->ne[0];
    const int64_t rows = vals->ne[1];

    const int64_t r0 = (rows * params->ith) / params->nth;
    const int64_t r1 = (rows * (params->ith + 1)) / params->nth;
    for (int64_t r = r0; r < r1; r++) {
        const char    * v  = (const char *) vals->data + r*vals->nb[1];
        const uint8_t * ir = (const uint8_t *) idx->data + r*idx->nb[1];
        char          * d  = (char *) dst->data + r*dst->nb[1];
        switch (vals->type) {
            case GGML_TYPE_Q8_0:
                nm_expand_row_q8_0((const block_q8_0 *) v, ir, (block_q8_0 *) d, k, n, m, bits);
                break;
            case GGML_TYPE_Q4_0:
                nm_expand_row_q4_0((const block_q4_0 *) v, ir, (block_q4_0 *) d, k, n, m, bits);
                break;
            default:
                nm_expand_row_float(ggml_type_size(vals->type), v, ir, d, k, n, m, bits);
                break;
        }
    }
}
