// ggufsparse: what the CUDA sparse kernels share (sparse-ops.cu):
// float loads of the plain weight types, ggml's q8_1 dot products by type, the type groups, and
// the split of an input-sparse product over blocks with its fixed-order partial-sum reduction.
#pragma once

#include "../common.cuh"
#include "../quantize.cuh"
#include "../vecdotq.cuh"

#include <type_traits>

#define SPARSE_ROWS_PER_BLOCK 4     // warps (one row each) per block of the row-wise kernels

// ---------------------------------------------------------------------------------------------
// float loads of the plain weight types

static __device__ __forceinline__ float sparse_to_f32(float v)         { return v; }
static __device__ __forceinline__ float sparse_to_f32(half v)          { return __half2float(v); }
static __device__ __forceinline__ float sparse_to_f32(nv_bfloat16 v)   { return __bfloat162float(v); }

// eight consecutive values from a 16-byte aligned address (two 16-byte loads for f32)
template <typename T>
static __device__ __forceinline__ void sparse_load8(const T * p, float out[8]) {
    if constexpr (sizeof(T) == 4) {
        const float4 a = ((const float4 *) p)[0];
        const float4 b = ((const float4 *) p)[1];
        out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w;
        out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
    } else {
        const int4 v = *(const int4 *) p;
        const T * e = (const T *) &v;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            out[i] = sparse_to_f32(e[i]);
        }
    }
}

static bool sparse_is_float(ggml_type type) {
    return type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16;
}

// 32-value block types with a ggml pair dequantizer (dequantize.cuh)
static bool sparse_is_q32(ggml_type type) {
    switch (type) {
        case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1: case GGML_TYPE_Q8_0:
            return true;
        default:
            return false;
    }
}

template <ggml_type type> struct sparse_vec_dot;
#define SPARSE_VEC_DOT(T, F, VDR) \
    template <> struct sparse_vec_dot<T> { \
        static constexpr int vdr = VDR; \
        static __device__ __forceinline__ float dot(const void * vx, const block_q8_1 * y, const int & kbx, const int & iqs) { \
            return F(vx, y, kbx, iqs); \
        } \
    }
SPARSE_VEC_DOT(GGML_TYPE_Q4_0, vec_dot_q4_0_q8_1, VDR_Q4_0_Q8_1_MMVQ);
SPARSE_VEC_DOT(GGML_TYPE_Q4_1, vec_dot_q4_1_q8_1, VDR_Q4_1_Q8_1_MMVQ);
SPARSE_VEC_DOT(GGML_TYPE_Q5_0, vec_dot_q5_0_q8_1, VDR_Q5_0_Q8_1_MMVQ);
SPARSE_VEC_DOT(GGML_TYPE_Q5_1, vec_dot_q5_1_q8_1, VDR_Q5_1_Q8_1_MMVQ);
SPARSE_VEC_DOT(GGML_TYPE_Q8_0, vec_dot_q8_0_q8_1, VDR_Q8_0_Q8_1_MMVQ);
SPARSE_VEC_DOT(GGML_TYPE_Q2_K, vec_dot_q2_K_q8_1, VDR_Q2_K_Q8_1_MMVQ);
SPARSE_VEC_DOT(GGML_TYPE_Q3_K, vec_dot_q3_K_q8_1, VDR_Q3_K_Q8_1_MMVQ);
SPARSE_VEC_DOT(GGML_TYPE_Q4_K, vec_dot_q4_K_q8_1, VDR_Q4_K_Q8_1_MMVQ);
SPARSE_VEC_DOT(GGML_TYPE_Q5_K, vec_dot_q5_K_q8_1, VDR_Q5_K_Q8_1_MMVQ);
SPARSE_VEC_DOT(GGML_TYPE_Q6_K, vec_dot_q6_K_q8_1, VDR_Q6_K_Q8_1_MMVQ);
#undef SPARSE_VEC_DOT

static bool sparse_rows_quantized(ggml_type type) {
    switch (type) {
        case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1: case GGML_TYPE_Q8_0:
        case GGML_TYPE_Q2_K: case GGML_TYPE_Q3_K: case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K:
            return true;
        default:
            return false;
    }
}

// f(std::integral_constant<ggml_type, T>{}) for the quantized row type T == type (a kernel
// template launched per type)
template <typename F>
static void sparse_for_rows_type(ggml_type type, F && f) {
    switch (type) {
        case GGML_TYPE_Q4_0: f(std::integral_constant<ggml_type, GGML_TYPE_Q4_0>{}); break;
        case GGML_TYPE_Q4_1: f(std::integral_constant<ggml_type, GGML_TYPE_Q4_1>{}); break;
        case GGML_TYPE_Q5_0: f(std::integral_constant<ggml_type, GGML_TYPE_Q5_0>{}); break;
        case GGML_TYPE_Q5_1: f(std::integral_constant<ggml_type, GGML_TYPE_Q5_1>{}); break;
        case GGML_TYPE_Q8_0: f(std::integral_constant<ggml_type, GGML_TYPE_Q8_0>{}); break;
        case GGML_TYPE_Q2_K: f(std::integral_constant<ggml_type, GGML_TYPE_Q2_K>{}); break;
        case GGML_TYPE_Q3_K: f(std::integral_constant<ggml_type, GGML_TYPE_Q3_K>{}); break;
        case GGML_TYPE_Q4_K: f(std::integral_constant<ggml_type, GGML_TYPE_Q4_K>{}); break;
        case GGML_TYPE_Q5_K: f(std::integral_constant<ggml_type, GGML_TYPE_Q5_K>{}); break;
        case GGML_TYPE_Q6_K: f(std::integral_constant<ggml_type, GGML_TYPE_Q6_K>{}); break;
        default: GGML_ABORT("mul_mat_rows: unsupported type %d", (int) type);
    }
}

// the tokens x (f32, ne[0] values each) in q8_1 blocks into xq, as ggml's mmvq quantizes them for
// a weight of `type`; returns the blocks per token
static int64_t sparse_quantize_tokens(ggml_backend_cuda_context & ctx, const ggml_tensor * x, ggml_type type,
                                      ggml_cuda_pool_alloc<char> & xq) {
    const int64_t k = x->ne[0];
    const int64_t m = x->ne[1];
    const int64_t k_padded = GGML_PAD(k, MATRIX_ROW_PADDING);
    xq.alloc(m * k_padded * sizeof(block_q8_1) / QK8_1);
    const int64_t s11 = x->nb[1] / sizeof(float);
    quantize_row_q8_1_cuda((const float *) x->data, nullptr, xq.get(), type, k, s11, s11*m, s11*m, k_padded, m, 1, 1,
                           ctx.stream());
    return k_padded / QK8_1;
}

static bool sparse_aligned16(const void * p, size_t stride) {
    return (uintptr_t) p % 16 == 0 && stride % 16 == 0;
}

struct sparse_split {
    int64_t per_split;  // inputs (or columns of 32 inputs, packed) per split
    int     n_splits;
};

// enough blocks to fill the GPU on one token; at least 8 inputs per split so that the partial
// sums stay small against the weight read; each split's inputs fit in shared memory
static sparse_split sparse_choose_split(int64_t k, int64_t blocks_out, int64_t m, int nsm, int64_t max_per_split) {
    const int64_t want = std::max<int64_t>(1, (4*nsm + blocks_out*m - 1) / (blocks_out*m));
    int64_t per = std::max<int64_t>(8, (k + want - 1) / want);
    per = std::min<int64_t>(per, max_per_split);
    sparse_split s;
    s.per_split = std::min<int64_t>(per, k);
    s.n_splits  = (int) ((k + s.per_split - 1) / s.per_split);
    return s;
}

// dst[o, t] = sum over splits of part[t][split][o]
static __global__ void k_sparse_sum_splits(const float * part, float * dst, const int64_t n, const int n_splits,
                                           const int64_t dst_s1) {
    const int64_t o = (int64_t) blockIdx.x*blockDim.x + threadIdx.x;
    const int64_t t = blockIdx.y;
    if (o >= n) {
        return;
    }
    const float * p = part + t*n_splits*n + o;
    float sum = 0.0f;
    for (int s = 0; s < n_splits; s++) {
        sum += p[s*n];
    }
    dst[t*dst_s1 + o] = sum;
}

// dst = the sum of part's n_splits partial sums per token ([token][split][output])
static void sparse_sum_splits(const float * part, ggml_tensor * dst, int n_splits, cudaStream_t stream) {
    const int64_t n = dst->ne[0];
    const dim3 grid((unsigned) ((n + 255) / 256), (unsigned) dst->ne[1]);
    k_sparse_sum_splits<<<grid, 256, 0, stream>>>(part, (float *) dst->data, n, n_splits, dst->nb[1] / sizeof(float));
    CUDA_CHECK(cudaGetLastError());
}
