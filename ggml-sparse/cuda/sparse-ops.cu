// ggufsparse: CUDA forwards of the sparse ops (semantics in ggml-sparse/cpu/sparse-ops.c).
//
// sparse_act:   elementwise, one thread per value.
// mul_mat_rows: one warp per output row; a row whose mask is zero is written as 0 without
//               reading its weights. Quantized rows use ggml's own q8_1 dot products (those of
//               mmvq), so the sums are the dense kernel's.
// axpy_sparse:  the transposed weight is read one input row at a time, only for inputs whose
//               activation is non-zero. Blocks split the outputs and the inputs (so a decode
//               token fills the GPU); each input split writes partial sums that a second kernel
//               adds in a fixed order, so results do not depend on scheduling.
// mul_mat_nm:   one warp per output row over its kept values; the input is gathered by the
//               permutation once per token.
//
// Nothing here synchronises with the host, so CUDA graphs keep working. The sparsity counters
// of the CPU ops (a context's ggml_sparse_stats) are not kept on the GPU.

#include "sparse-ops.cuh"
#include "sparse-common.cuh"

#include "../dequantize.cuh"
#include "../unary.cuh"
#include "../vecdotq.cuh"

#include "ggml-sparse.h"

#define SPARSE_AXPY_THREADS   128

template <ggml_type type>
static __device__ __forceinline__ void sparse_dequantize_pair(const void * row, int64_t ib, int iqs, float2 & v) {
    if constexpr (type == GGML_TYPE_Q4_0) { dequantize_q4_0(row, ib, iqs, v); }
    if constexpr (type == GGML_TYPE_Q4_1) { dequantize_q4_1(row, ib, iqs, v); }
    if constexpr (type == GGML_TYPE_Q5_0) { dequantize_q5_0(row, ib, iqs, v); }
    if constexpr (type == GGML_TYPE_Q5_1) { dequantize_q5_1(row, ib, iqs, v); }
    if constexpr (type == GGML_TYPE_Q8_0) { dequantize_q8_0(row, ib, iqs, v); }
}

// the two elements a pair index p of a 32-value block type covers, as ggml's dequantize kernels
// assign them: with qr == 2 element i and i + 16 of a block, with qr == 1 elements i and i + 1
template <ggml_type type>
static __device__ __forceinline__ void sparse_pair_elements(int64_t p, int64_t & ib, int & iqs, int64_t & e0, int64_t & e1) {
    constexpr int qk = ggml_cuda_type_traits<type>::qk;
    constexpr int qr = ggml_cuda_type_traits<type>::qr;
    const int64_t e = 2*p;
    ib  = e / qk;
    iqs = (int) (e % qk) / qr;
    e0  = ib*qk + iqs;
    e1  = e0 + (qr == 1 ? 1 : qk/2);
}

// ---------------------------------------------------------------------------------------------
// sparse_act

template <int kind>
static __device__ __forceinline__ float sparse_act_apply(float x) {
    if constexpr (kind == GGML_SPARSE_ACT_SILU) { return ggml_cuda_op_silu_single(x); }
    if constexpr (kind == GGML_SPARSE_ACT_GELU) { return ggml_cuda_op_gelu_single(x); }
    if constexpr (kind == GGML_SPARSE_ACT_RELU) { return fmaxf(x, 0.0f); }
    return x;
}

template <int kind>
static __global__ void k_sparse_act(const char * a, const float * thr, char * y, const int64_t n, const int64_t nrows,
                                    const int64_t ne1, const int64_t ne2, const int per_channel,
                                    const size_t a_nb1, const size_t a_nb2, const size_t a_nb3,
                                    const size_t y_nb1, const size_t y_nb2, const size_t y_nb3) {
    const int64_t i = (int64_t) blockIdx.x*blockDim.x + threadIdx.x;
    if (i >= n) {
        return;
    }
    const float t = thr[per_channel ? i : 0];
    for (int64_t r = blockIdx.y; r < nrows; r += gridDim.y) {
        const int64_t i1 = r % ne1;
        const int64_t i2 = (r / ne1) % ne2;
        const int64_t i3 = r / (ne1*ne2);
        const float v = sparse_act_apply<kind>(((const float *) (a + i1*a_nb1 + i2*a_nb2 + i3*a_nb3))[i]);
        ((float *) (y + i1*y_nb1 + i2*y_nb2 + i3*y_nb3))[i] = fabsf(v) > t ? v : 0.0f;
    }
}

void ggml_cuda_op_sparse_act(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    const ggml_tensor * a   = dst->src[0];
    const ggml_tensor * thr = dst->src[1];
    const int kind = ggml_get_op_params_i32(dst, 0);
    const int64_t n     = a->ne[0];
    const int64_t nrows = ggml_nrows(a);
    const int per_channel = thr->ne[0] == n && n > 1;
    if (n == 0 || nrows == 0) {
        return;
    }

    const dim3 grid((unsigned) ((n + 255) / 256), (unsigned) std::min<int64_t>(nrows, 65535));
    cudaStream_t stream = ctx.stream();
#define SPARSE_ACT_LAUNCH(K) k_sparse_act<K><<<grid, 256, 0, stream>>>( \
        (const char *) a->data, (const float *) thr->data, (char *) dst->data, n, nrows, a->ne[1], a->ne[2], per_channel, \
        a->nb[1], a->nb[2], a->nb[3], dst->nb[1], dst->nb[2], dst->nb[3])
    switch (kind) {
        case GGML_SPARSE_ACT_SILU: SPARSE_ACT_LAUNCH(GGML_SPARSE_ACT_SILU); break;
        case GGML_SPARSE_ACT_GELU: SPARSE_ACT_LAUNCH(GGML_SPARSE_ACT_GELU); break;
        case GGML_SPARSE_ACT_RELU: SPARSE_ACT_LAUNCH(GGML_SPARSE_ACT_RELU); break;
        default:                   SPARSE_ACT_LAUNCH(GGML_SPARSE_ACT_NONE); break;
    }
#undef SPARSE_ACT_LAUNCH
    CUDA_CHECK(cudaGetLastError());
}

// ---------------------------------------------------------------------------------------------
// mul_mat_rows

// quantized rows against the token in q8_1 (blocks of 32), as ggml's mmvq
template <ggml_type type>
static __global__ void k_mul_mat_rows_q(const char * w, const block_q8_1 * xq, const float * mask, float * y,
                                        const int blocks_per_row, const size_t w_nb1, const int64_t n,
                                        const int64_t xq_s1, const int64_t mask_s1, const int64_t y_s1) {
    constexpr int qk  = ggml_cuda_type_traits<type>::qk;
    constexpr int qi  = ggml_cuda_type_traits<type>::qi;
    constexpr int vdr = sparse_vec_dot<type>::vdr;
    constexpr int lanes_per_block = qi/vdr;
    constexpr int blocks_per_iter = WARP_SIZE/lanes_per_block;

    const int64_t r = (int64_t) blockIdx.x*blockDim.y + threadIdx.y;
    const int64_t t = blockIdx.y;
    if (r >= n) {
        return;
    }
    if (mask[t*mask_s1 + r] == 0.0f) {
        if (threadIdx.x == 0) {
            y[t*y_s1 + r] = 0.0f;
        }
        return;
    }
    const void * row = w + r*w_nb1;
    const block_q8_1 * x = xq + t*xq_s1;
    const int kqs = vdr * (threadIdx.x % lanes_per_block);
    float sum = 0.0f;
    for (int kbx = threadIdx.x / lanes_per_block; kbx < blocks_per_row; kbx += blocks_per_iter) {
        sum += sparse_vec_dot<type>::dot(row, &x[kbx * (qk/QK8_1)], kbx, kqs);
    }
    sum = warp_reduce_sum(sum);
    if (threadIdx.x == 0) {
        y[t*y_s1 + r] = sum;
    }
}

// F32, F16 and BF16 rows against the f32 token; vec: rows and token 16-byte aligned, k % 8 == 0
template <typename T, bool vec>
static __global__ void k_mul_mat_rows_f(const char * w, const float * x, const float * mask, float * y,
                                        const int64_t k, const size_t w_nb1, const int64_t n,
                                        const int64_t x_s1, const int64_t mask_s1, const int64_t y_s1) {
    const int64_t r = (int64_t) blockIdx.x*blockDim.y + threadIdx.y;
    const int64_t t = blockIdx.y;
    if (r >= n) {
        return;
    }
    if (mask[t*mask_s1 + r] == 0.0f) {
        if (threadIdx.x == 0) {
            y[t*y_s1 + r] = 0.0f;
        }
        return;
    }
    const T * row = (const T *) (w + r*w_nb1);
    const float * xt = x + t*x_s1;
    float sum = 0.0f;
    if constexpr (vec) {
        for (int64_t i = 8*threadIdx.x; i < k; i += 8*WARP_SIZE) {
            float wv[8], xv[8];
            sparse_load8(row + i, wv);
            sparse_load8(xt + i, xv);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                sum += wv[j]*xv[j];
            }
        }
    } else {
        for (int64_t i = threadIdx.x; i < k; i += WARP_SIZE) {
            sum += sparse_to_f32(row[i])*xt[i];
        }
    }
    sum = warp_reduce_sum(sum);
    if (threadIdx.x == 0) {
        y[t*y_s1 + r] = sum;
    }
}

template <typename T>
static void sparse_launch_rows_f(const ggml_tensor * w, const ggml_tensor * x, const ggml_tensor * mask, ggml_tensor * dst,
                                 dim3 grid, dim3 block, cudaStream_t stream) {
    const int64_t k = w->ne[0];
    const bool vec = k % 8 == 0 && sparse_aligned16(w->data, w->nb[1]) && sparse_aligned16(x->data, x->nb[1]);
    const auto kernel = vec ? k_mul_mat_rows_f<T, true> : k_mul_mat_rows_f<T, false>;
    kernel<<<grid, block, 0, stream>>>((const char *) w->data, (const float *) x->data, (const float *) mask->data,
                                       (float *) dst->data, k, w->nb[1], w->ne[1], x->nb[1] / sizeof(float),
                                       mask->nb[1] / sizeof(float), dst->nb[1] / sizeof(float));
}

void ggml_cuda_op_mul_mat_rows(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    const ggml_tensor * w    = dst->src[0];
    const ggml_tensor * x    = dst->src[1];
    const ggml_tensor * mask = dst->src[2];
    const int64_t k = w->ne[0];
    const int64_t n = w->ne[1];
    const int64_t m = x->ne[1];
    cudaStream_t stream = ctx.stream();

    const dim3 block(WARP_SIZE, SPARSE_ROWS_PER_BLOCK);
    const dim3 grid((unsigned) ((n + SPARSE_ROWS_PER_BLOCK - 1) / SPARSE_ROWS_PER_BLOCK), (unsigned) m);

    switch (w->type) {
        case GGML_TYPE_F32:  sparse_launch_rows_f<float>(w, x, mask, dst, grid, block, stream);       break;
        case GGML_TYPE_F16:  sparse_launch_rows_f<half>(w, x, mask, dst, grid, block, stream);        break;
        case GGML_TYPE_BF16: sparse_launch_rows_f<nv_bfloat16>(w, x, mask, dst, grid, block, stream); break;
        default: {
            GGML_ASSERT(sparse_rows_quantized(w->type));
            ggml_cuda_pool_alloc<char> xq(ctx.pool());
            const int64_t xq_s1 = sparse_quantize_tokens(ctx, x, w->type, xq);
            const int blocks_per_row = (int) (k / ggml_blck_size(w->type));
            sparse_for_rows_type(w->type, [&](auto type) {
                k_mul_mat_rows_q<decltype(type)::value><<<grid, block, 0, stream>>>((const char *) w->data,
                    (const block_q8_1 *) xq.get(), (const float *) mask->data, (float *) dst->data, blocks_per_row,
                    w->nb[1], n, xq_s1, mask->nb[1] / sizeof(float), dst->nb[1] / sizeof(float));
            });
        } break;
    }
    CUDA_CHECK(cudaGetLastError());
}

// ---------------------------------------------------------------------------------------------
// axpy_sparse: partial sums per input split, then their sum

// the split's activations into shared memory: every thread of the block reads all of them
static __device__ __forceinline__ int64_t sparse_stage_h(float * sh, const float * h, int64_t i0, int64_t i1) {
    for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
        sh[i - i0] = h[i];
    }
    __syncthreads();
    return i1 - i0;
}

// plain F32/F16/BF16 transposed weight: each thread 8 consecutive outputs (vec) or 1
template <typename T, bool vec>
static __global__ void k_axpy_f(const char * wt, const float * h, float * part, const int64_t n, const int64_t k,
                                const size_t wt_nb1, const int64_t h_s1, const int64_t per_split) {
    extern __shared__ float sh[];
    const int64_t t = blockIdx.z;
    const int64_t s = blockIdx.y;
    const int64_t i0 = s*per_split;
    const int64_t cnt = sparse_stage_h(sh, h + t*h_s1, i0, i0 + per_split < k ? i0 + per_split : k);
    constexpr int V = vec ? 8 : 1;
    const int64_t o = V*((int64_t) blockIdx.x*blockDim.x + threadIdx.x);
    if (o >= n) {
        return;
    }
    float acc[V] = {0.0f};
    for (int64_t i = 0; i < cnt; i++) {
        const float hv = sh[i];
        if (hv == 0.0f) {
            continue;
        }
        const T * row = (const T *) (wt + (i0 + i)*wt_nb1);
        if constexpr (vec) {
            float wv[8];
            sparse_load8(row + o, wv);
#pragma unroll
            for (int j = 0; j < 8; j++) {
                acc[j] += hv*wv[j];
            }
        } else {
            acc[0] += hv*sparse_to_f32(row[o]);
        }
    }
    float * p = part + (t*gridDim.y + s)*n + o;
#pragma unroll
    for (int j = 0; j < V; j++) {
        p[j] = acc[j];
    }
}

// plain 32-block quantized transposed weight: each thread one pair of outputs of a block
template <ggml_type type>
static __global__ void k_axpy_q(const char * wt, const float * h, float * part, const int64_t n, const int64_t k,
                                const size_t wt_nb1, const int64_t h_s1, const int64_t per_split) {
    extern __shared__ float sh[];
    const int64_t t = blockIdx.z;
    const int64_t s = blockIdx.y;
    const int64_t i0 = s*per_split;
    const int64_t cnt = sparse_stage_h(sh, h + t*h_s1, i0, i0 + per_split < k ? i0 + per_split : k);
    const int64_t pair = (int64_t) blockIdx.x*blockDim.x + threadIdx.x;
    if (2*pair >= n) {
        return;
    }
    int64_t ib, e0, e1;
    int iqs;
    sparse_pair_elements<type>(pair, ib, iqs, e0, e1);
    float a0 = 0.0f, a1 = 0.0f;
    for (int64_t i = 0; i < cnt; i++) {
        const float hv = sh[i];
        if (hv == 0.0f) {
            continue;
        }
        float2 v;
        sparse_dequantize_pair<type>(wt + (i0 + i)*wt_nb1, ib, iqs, v);
        a0 += hv*v.x;
        a1 += hv*v.y;
    }
    float * p = part + (t*gridDim.y + s)*n;
    p[e0] = a0;
    p[e1] = a1;
}

// packed Q4_0 / Q4_1 / Q8_0 (ggml-sparse.h): columns of 32 inputs; each thread 4 quant bytes
// of one input row: 8 outputs (Q4: 32g+kk..kk+3 and the same +16) or 4 (Q8_0)
template <ggml_type type>
static __global__ void k_axpy_packed(const char * wt, const float * h, float * part, const int64_t n, const int64_t n_cols,
                                     const size_t col_nb, const int64_t h_s1, const int64_t per_split) {
    extern __shared__ float sh[];
    constexpr bool q4 = type != GGML_TYPE_Q8_0;
    constexpr int  V  = q4 ? 8 : 4;
    constexpr int  n_scales = type == GGML_TYPE_Q4_1 ? 2 : 1;
    const int64_t t = blockIdx.z;
    const int64_t s = blockIdx.y;
    const int64_t c0 = s*per_split;
    const int64_t cols = (c0 + per_split < n_cols ? c0 + per_split : n_cols) - c0;
    sparse_stage_h(sh, h + t*h_s1, 32*c0, 32*(c0 + cols));

    const int64_t lane = (int64_t) blockIdx.x*blockDim.x + threadIdx.x;  // 4 quant bytes each
    const int64_t qrow = q4 ? n/2 : n;                                   // bytes of one input row
    if (4*lane >= qrow) {
        return;
    }
    // the outputs of this thread's bytes
    int64_t out[V];
    if constexpr (q4) {
        const int64_t g = (4*lane) / 16, kk = (4*lane) % 16;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            out[j] = 32*g + kk + j;
            out[4 + j] = 32*g + kk + j + 16;
        }
    } else {
#pragma unroll
        for (int j = 0; j < 4; j++) {
            out[j] = 4*lane + j;
        }
    }
    float acc[V] = {0.0f};
    for (int64_t c = 0; c < cols; c++) {
        const float * hc = sh + 32*c;
        float sq[V] = {0.0f};
        float hsum = 0.0f;
        bool any = false;
        const char * col = wt + (c0 + c)*col_nb;
        const char * q = col + n_scales*2*n;
#pragma unroll 4
        for (int ii = 0; ii < 32; ii++) {
            const float hv = hc[ii];
            if (hv == 0.0f) {
                continue;
            }
            any = true;
            hsum += hv;
            const int qv = *(const int *) (q + ii*qrow + 4*lane);
            if constexpr (q4) {
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    sq[j]     += hv * (float) ((qv >> (8*j))     & 0x0F);
                    sq[4 + j] += hv * (float) ((qv >> (8*j + 4)) & 0x0F);
                }
            } else {
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    sq[j] += hv * (float) (int8_t) (qv >> (8*j));
                }
            }
        }
        if (!any) {
            continue;  // a whole column inactive: its scales are not read either
        }
        const half * d  = (const half *) col;
        const half * mn = (const half *) (col + 2*n);
#pragma unroll
        for (int j = 0; j < V; j++) {
            const float dj = __half2float(d[out[j]]);
            if constexpr (type == GGML_TYPE_Q4_0) { acc[j] += dj*(sq[j] - 8.0f*hsum); }
            if constexpr (type == GGML_TYPE_Q4_1) { acc[j] += dj*sq[j] + __half2float(mn[out[j]])*hsum; }
            if constexpr (type == GGML_TYPE_Q8_0) { acc[j] += dj*sq[j]; }
        }
    }
    float * p = part + (t*gridDim.y + s)*n;
#pragma unroll
    for (int j = 0; j < V; j++) {
        p[out[j]] = acc[j];
    }
}

static constexpr int64_t SPARSE_MAX_SHARED_FLOATS = 8192;  // 32 KiB of activations per block

void ggml_cuda_op_axpy_sparse(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    const ggml_tensor * wt = dst->src[0];
    const ggml_tensor * h  = dst->src[1];
    const int64_t n = dst->ne[0];
    const int64_t k = h->ne[0];
    const int64_t m = h->ne[1];
    const int64_t h_s1 = h->nb[1] / sizeof(float);
    const int nsm = ggml_cuda_info().devices[ctx.device].nsm;
    cudaStream_t stream = ctx.stream();

    const int threads = SPARSE_AXPY_THREADS;
    int64_t outputs_per_block;   // outputs one block covers
    int64_t split_unit = 1;      // inputs per split step (32 for packed columns)
    bool vec = false;
    ggml_type type = wt->type;
    if (wt->type == GGML_TYPE_I8) {
        type = (ggml_type) ggml_get_op_params_i32(dst, 0);
        outputs_per_block = threads * (type == GGML_TYPE_Q8_0 ? 4 : 8);
        split_unit = 32;
    } else if (sparse_is_float(wt->type)) {
        vec = n % 8 == 0 && sparse_aligned16(wt->data, wt->nb[1]);
        outputs_per_block = threads * (vec ? 8 : 1);
    } else {
        GGML_ASSERT(sparse_is_q32(wt->type));
        outputs_per_block = threads * 2;
    }
    const int64_t blocks_out = (n + outputs_per_block - 1) / outputs_per_block;
    const sparse_split sp = sparse_choose_split(k / split_unit, blocks_out, m, nsm, SPARSE_MAX_SHARED_FLOATS / split_unit);
    const size_t shmem = (size_t) sp.per_split * split_unit * sizeof(float);

    ggml_cuda_pool_alloc<float> part(ctx.pool(), (size_t) m * sp.n_splits * n);
    const dim3 grid((unsigned) blocks_out, (unsigned) sp.n_splits, (unsigned) m);
    const char * w = (const char *) wt->data;
    const float * hd = (const float *) h->data;

    if (wt->type == GGML_TYPE_I8) {
#define AXPY_PACKED(T) k_axpy_packed<T><<<grid, threads, shmem, stream>>>(w, hd, part.get(), n, k/32, wt->nb[1], h_s1, sp.per_split)
        switch (type) {
            case GGML_TYPE_Q4_0: AXPY_PACKED(GGML_TYPE_Q4_0); break;
            case GGML_TYPE_Q4_1: AXPY_PACKED(GGML_TYPE_Q4_1); break;
            case GGML_TYPE_Q8_0: AXPY_PACKED(GGML_TYPE_Q8_0); break;
            default: GGML_ABORT("axpy_sparse: unsupported packed type");
        }
#undef AXPY_PACKED
    } else {
#define AXPY_F(T) (vec ? k_axpy_f<T, true> : k_axpy_f<T, false>)<<<grid, threads, shmem, stream>>>(w, hd, part.get(), n, k, wt->nb[1], h_s1, sp.per_split)
#define AXPY_Q(T) k_axpy_q<T><<<grid, threads, shmem, stream>>>(w, hd, part.get(), n, k, wt->nb[1], h_s1, sp.per_split)
        switch (wt->type) {
            case GGML_TYPE_F32:  AXPY_F(float);       break;
            case GGML_TYPE_F16:  AXPY_F(half);        break;
            case GGML_TYPE_BF16: AXPY_F(nv_bfloat16); break;
            case GGML_TYPE_Q4_0: AXPY_Q(GGML_TYPE_Q4_0); break;
            case GGML_TYPE_Q4_1: AXPY_Q(GGML_TYPE_Q4_1); break;
            case GGML_TYPE_Q5_0: AXPY_Q(GGML_TYPE_Q5_0); break;
            case GGML_TYPE_Q5_1: AXPY_Q(GGML_TYPE_Q5_1); break;
            case GGML_TYPE_Q8_0: AXPY_Q(GGML_TYPE_Q8_0); break;
            default: GGML_ABORT("axpy_sparse: unsupported type");
        }
#undef AXPY_F
#undef AXPY_Q
    }
    CUDA_CHECK(cudaGetLastError());
    sparse_sum_splits(part.get(), dst, sp.n_splits, stream);
}

// ---------------------------------------------------------------------------------------------
// mul_mat_nm

// xp[t][c] = x[perm[c], t]; a permutation entry outside the input reads 0, as on the CPU
static __global__ void k_nm_permute(const float * x, const int32_t * perm, float * xp, const int64_t k, const int64_t x_s1) {
    const int64_t c = (int64_t) blockIdx.x*blockDim.x + threadIdx.x;
    const int64_t t = blockIdx.y;
    if (c < k) {
        const uint32_t src = (uint32_t) perm[c];
        xp[t*k + c] = src < (uint64_t) k ? x[t*x_s1 + src] : 0.0f;
    }
}

// the input of kept value j (positions past m, malformed, read the group's last input)
static __device__ __forceinline__ float nm_input(const float * xp, const uint8_t * idx, int64_t j, int n, int m, int bits) {
    const int64_t bit = j*bits;
    const int pos = (idx[bit >> 3] >> (bit & 7)) & ((1 << bits) - 1);
    return xp[(j / n)*m + (pos < m ? pos : m - 1)];
}

// F32/F16/BF16 kept values; vec: each lane 8 consecutive kept values per step (whole index bytes)
template <typename T, bool vec>
static __global__ void k_nm_f(const char * vals, const uint8_t * idx, const float * x, float * y,
                              const int64_t kn, const int64_t rows, const size_t vals_nb1, const size_t idx_nb1,
                              const int64_t x_s1, const int64_t y_s1, const int n, const int m, const int bits) {
    const int64_t r = (int64_t) blockIdx.x*blockDim.y + threadIdx.y;
    const int64_t t = blockIdx.y;
    if (r >= rows) {
        return;
    }
    const T * w = (const T *) (vals + r*vals_nb1);
    const uint8_t * ir = idx + r*idx_nb1;
    const float * xt = x + t*x_s1;
    float sum = 0.0f;
    if constexpr (vec) {
        const int mask = (1 << bits) - 1;
        for (int64_t j = 8*threadIdx.x; j < kn; j += 8*WARP_SIZE) {
            float wv[8];
            sparse_load8(w + j, wv);
            // 8 positions of `bits` bits: `bits` whole bytes from byte j*bits/8
            const uint8_t * ib = ir + (j*bits >> 3);
            uint32_t packed = 0;
            for (int b = 0; b < bits; b++) {
                packed |= (uint32_t) ib[b] << (8*b);
            }
#pragma unroll
            for (int q = 0; q < 8; q++) {
                const int pos = (packed >> (q*bits)) & mask;
                sum += wv[q] * xt[((j + q) / n)*m + (pos < m ? pos : m - 1)];
            }
        }
    } else {
        for (int64_t j = threadIdx.x; j < kn; j += WARP_SIZE) {
            sum += sparse_to_f32(w[j]) * nm_input(xt, ir, j, n, m, bits);
        }
    }
    sum = warp_reduce_sum(sum);
    if (threadIdx.x == 0) {
        y[t*y_s1 + r] = sum;
    }
}

// 32-block quantized kept values: each lane one dequantized pair per step
template <ggml_type type>
static __global__ void k_nm_q(const char * vals, const uint8_t * idx, const float * x, float * y,
                              const int64_t kn, const int64_t rows, const size_t vals_nb1, const size_t idx_nb1,
                              const int64_t x_s1, const int64_t y_s1, const int n, const int m, const int bits) {
    const int64_t r = (int64_t) blockIdx.x*blockDim.y + threadIdx.y;
    const int64_t t = blockIdx.y;
    if (r >= rows) {
        return;
    }
    const char * w = vals + r*vals_nb1;
    const uint8_t * ir = idx + r*idx_nb1;
    const float * xt = x + t*x_s1;
    float sum = 0.0f;
    for (int64_t p = threadIdx.x; 2*p < kn; p += WARP_SIZE) {
        int64_t ib, e0, e1;
        int iqs;
        sparse_pair_elements<type>(p, ib, iqs, e0, e1);
        float2 v;
        sparse_dequantize_pair<type>(w, ib, iqs, v);
        sum += v.x * nm_input(xt, ir, e0, n, m, bits) + v.y * nm_input(xt, ir, e1, n, m, bits);
    }
    sum = warp_reduce_sum(sum);
    if (threadIdx.x == 0) {
        y[t*y_s1 + r] = sum;
    }
}

void ggml_cuda_op_mul_mat_nm(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    const ggml_tensor * vals = dst->src[0];
    const ggml_tensor * idx  = dst->src[1];
    const ggml_tensor * x    = dst->src[2];
    const ggml_tensor * perm = dst->src[3];
    const int n = ggml_get_op_params_i32(dst, 0);
    const int m = ggml_get_op_params_i32(dst, 1);
    const int bits = ggml_sparse_nm_index_bits(m);
    const int64_t k    = x->ne[0];
    const int64_t kn   = vals->ne[0];
    const int64_t rows = vals->ne[1];
    const int64_t cols = x->ne[1];
    cudaStream_t stream = ctx.stream();

    const float * xd = (const float *) x->data;
    int64_t x_s1 = x->nb[1] / sizeof(float);
    ggml_cuda_pool_alloc<float> xp(ctx.pool());
    if (perm) {
        xp.alloc((size_t) k * cols);
        const dim3 grid_p((unsigned) ((k + 255) / 256), (unsigned) cols);
        k_nm_permute<<<grid_p, 256, 0, stream>>>(xd, (const int32_t *) perm->data, xp.get(), k, x_s1);
        CUDA_CHECK(cudaGetLastError());
        xd = xp.get();
        x_s1 = k;
    }

    const dim3 block(WARP_SIZE, SPARSE_ROWS_PER_BLOCK);
    const dim3 grid((unsigned) ((rows + SPARSE_ROWS_PER_BLOCK - 1) / SPARSE_ROWS_PER_BLOCK), (unsigned) cols);
    const bool vec = kn % 8 == 0 && sparse_aligned16(vals->data, vals->nb[1]);
    const char * v = (const char *) vals->data;
    const uint8_t * id = (const uint8_t *) idx->data;
    float * y = (float *) dst->data;
    const int64_t y_s1 = dst->nb[1] / sizeof(float);
#define NM_ARGS v, id, xd, y, kn, rows, vals->nb[1], idx->nb[1], x_s1, y_s1, n, m, bits
#define NM_F(T) (vec ? k_nm_f<T, true> : k_nm_f<T, false>)<<<grid, block, 0, stream>>>(NM_ARGS)
#define NM_Q(T) k_nm_q<T><<<grid, block, 0, stream>>>(NM_ARGS)
    switch (vals->type) {
        case GGML_TYPE_F32:  NM_F(float);       break;
        case GGML_TYPE_F16:  NM_F(half);        break;
        case GGML_TYPE_BF16: NM_F(nv_bfloat16); break;
        case GGML_TYPE_Q4_0: NM_Q(GGML_TYPE_Q4_0); break;
        case GGML_TYPE_Q4_1: NM_Q(GGML_TYPE_Q4_1); break;
        case GGML_TYPE_Q5_0: NM_Q(GGML_TYPE_Q5_0); break;
        case GGML_TYPE_Q5_1: NM_Q(GGML_TYPE_Q5_1); break;
        case GGML_TYPE_Q8_0: NM_Q(GGML_TYPE_Q8_0); break;
        default: GGML_ABORT("mul_mat_nm: unsupported type");
    }
#undef NM_F
#undef NM_Q
#undef NM_ARGS
    CUDA_CHECK(cudaGetLastError());
}

// ---------------------------------------------------------------------------------------------

bool ggml_cuda_sparse_supports_op(const ggml_tensor * op) {
    switch (op->op) {
        case GGML_OP_SPARSE_ACT:
            return op->src[0]->type == GGML_TYPE_F32 && op->src[1]->type == GGML_TYPE_F32 &&
                   ggml_is_contiguous(op->src[1]);
        case GGML_OP_MUL_MAT_ROWS: {
            const ggml_tensor * w = op->src[0];
            return op->src[1]->type == GGML_TYPE_F32 && op->src[2]->type == GGML_TYPE_F32 &&
                   op->src[1]->nb[0] == sizeof(float) &&
                   (sparse_is_float(w->type) || sparse_rows_quantized(w->type)) && w->nb[0] == ggml_type_size(w->type);
        }
        case GGML_OP_AXPY_SPARSE: {
            const ggml_tensor * wt = op->src[0];
            if (op->src[1]->type != GGML_TYPE_F32 || op->src[1]->nb[0] != sizeof(float)) {
                return false;
            }
            if (wt->type == GGML_TYPE_I8) {
                const ggml_type type = (ggml_type) ggml_get_op_params_i32(op, 0);
                return (type == GGML_TYPE_Q4_0 || type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q8_0) &&
                       op->ne[0] % 32 == 0 && wt->nb[1] % 4 == 0;
            }
            return (sparse_is_float(wt->type) || sparse_is_q32(wt->type)) &&
                   wt->ne[0] % ggml_blck_size(wt->type) == 0 && wt->nb[0] == ggml_type_size(wt->type);
        }
        case GGML_OP_MUL_MAT_NM: {
            const ggml_tensor * vals = op->src[0];
            return op->src[2]->type == GGML_TYPE_F32 && op->src[2]->nb[0] == sizeof(float) &&
                   (sparse_is_float(vals->type) || sparse_is_q32(vals->type)) &&
                   vals->ne[0] % ggml_blck_size(vals->type) == 0 && vals->nb[0] == ggml_type_size(vals->type);
        }
        default:
            return false;
    }
}
