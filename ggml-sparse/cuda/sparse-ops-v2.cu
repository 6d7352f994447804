// ggufsparse: a rewrite of the row-skipping and input-sparse CUDA products, on with
// GGUFSPARSE_CUDA_V2=1 (docs/cuda.md: written from the first GPU run's per-op timings, compiled
// here, not yet run on a GPU); where a function here returns false the op runs sparse-ops.cu's
// kernels.
//
// Each block first lists the active entries of its own range in shared memory (a ballot per
// warp, a prefix over the block's warps; no extra kernel, no host sync), then works only on them:
// mul_mat_rows: a block looks at 32 rows and its 8 warps share the active ones (before, a warp
//               per row, so a block's warps of inactive rows idled beside the active ones);
//               inactive rows are written 0 while listing. Four of a row's loads in flight.
// axpy_sparse:  plain F32/F16/BF16: the split's active inputs, four rows' loads at a time with
//               no branch per input. Packed Q4_0/Q4_1/Q8_0: the split's columns of 32 inputs
//               that have an active one, with a 32-bit mask of which; a thread reads 16 bytes of
//               a row (not 4), and row groups share a column's active rows.
// Partial sums per split and their fixed-order sum are sparse-ops.cu's, and the row groups add
// up in a fixed order, so results do not depend on scheduling.

#include "sparse-ops.cuh"
#include "sparse-common.cuh"

#include "ggml-sparse.h"

#include <cstdlib>

#define SPARSE_V2_AXPY_THREADS    128   // plain weights: 1024 outputs a block
#define SPARSE_V2_PACKED_THREADS  64    // packed: 2048 (Q4) or 1024 (Q8_0) outputs a block, per row group

bool ggml_cuda_sparse_v2_enabled() {
    static const bool on = [] {
        const char * e = getenv("GGUFSPARSE_CUDA_V2");
        return e != nullptr && atoi(e) != 0;
    }();
    return on;
}

// ---------------------------------------------------------------------------------------------
// the active list of a block's range, in shared memory

// the exclusive prefix of each warp's count in the block, and the block's total (all threads)
static __device__ __forceinline__ int sparse_v2_block_offset(int warp_count, int & total) {
    __shared__ int counts[32];
    __shared__ int block_total;
    const int tid  = threadIdx.y*blockDim.x + threadIdx.x;
    const int lane = tid % WARP_SIZE;
    const int warp = tid / WARP_SIZE;
    const int n_warps = (blockDim.x*blockDim.y) / WARP_SIZE;
    if (lane == 0) {
        counts[warp] = warp_count;
    }
    __syncthreads();
    if (warp == 0) {
        const int v = lane < n_warps ? counts[lane] : 0;
        int inclusive = v;
#pragma unroll
        for (int d = 1; d < WARP_SIZE; d *= 2) {
            const int o = __shfl_up_sync(0xffffffff, inclusive, d);
            if (lane >= d) {
                inclusive += o;
            }
        }
        if (lane < n_warps) {
            counts[lane] = inclusive - v;
        }
        if (lane == WARP_SIZE - 1) {
            block_total = inclusive;
        }
    }
    __syncthreads();
    const int offset = counts[warp];
    total = block_total;
    __syncthreads();  // counts and block_total are rewritten by the next call
    return offset;
}

// list[0 .. count) = the i in [i0, i1) whose flag is set, in order, made by the whole block
// (blockDim.x a multiple of 32); `flag(i)` is called once per i by one thread. Returns the count
// to every thread, with the list complete.
template <typename F>
static __device__ __forceinline__ int sparse_v2_block_list(int64_t i0, int64_t i1, int32_t * list, F flag) {
    const int tid  = threadIdx.y*blockDim.x + threadIdx.x;
    const int lane = tid % WARP_SIZE;
    const int n_threads = blockDim.x*blockDim.y;
    int running = 0;
    for (int64_t base = i0; base < i1; base += n_threads) {
        const int64_t i = base + tid;
        const bool on = i < i1 && flag(i);
        const unsigned ballot = __ballot_sync(0xffffffff, on);
        int total;
        const int offset = sparse_v2_block_offset(__popc(ballot), total);
        if (on) {
            list[running + offset + __popc(ballot & ((1u << lane) - 1))] = (int32_t) (i - i0);
        }
        running += total;
    }
    __syncthreads();
    return running;
}

// ---------------------------------------------------------------------------------------------
// mul_mat_rows over the active rows

#define SPARSE_V2_ROWS_WARPS 8   // warps of a block
#define SPARSE_V2_ROWS_RANGE 32  // rows a block looks at: at 50% sparsity, two active rows a warp

// the block's active rows of [r0, r1) (the inactive ones' outputs written 0 on the way)
static __device__ __forceinline__ int sparse_v2_rows(const float * mask, float * y, int64_t r0, int64_t r1, int32_t * list) {
    return sparse_v2_block_list(r0, r1, list, [&](int64_t r) {
        const bool on = mask[r] != 0.0f;
        if (!on) {
            y[r] = 0.0f;
        }
        return on;
    });
}

template <ggml_type type>
static __global__ void k_mul_mat_rows_q_v2(const char * w, const block_q8_1 * xq, const float * mask, float * y,
                                           const int blocks_per_row, const size_t w_nb1, const int64_t n,
                                           const int64_t xq_s1, const int64_t mask_s1, const int64_t y_s1) {
    constexpr int qk  = ggml_cuda_type_traits<type>::qk;
    constexpr int qi  = ggml_cuda_type_traits<type>::qi;
    constexpr int vdr = sparse_vec_dot<type>::vdr;
    constexpr int lanes_per_block = qi/vdr;
    constexpr int blocks_per_iter = WARP_SIZE/lanes_per_block;
    __shared__ int32_t list[SPARSE_V2_ROWS_RANGE];

    const int64_t t  = blockIdx.y;
    const int64_t r0 = (int64_t) blockIdx.x*SPARSE_V2_ROWS_RANGE;
    float * yt = y + t*y_s1;
    const int cnt = sparse_v2_rows(mask + t*mask_s1, yt, r0, min(r0 + SPARSE_V2_ROWS_RANGE, n), list);
    const block_q8_1 * x = xq + t*xq_s1;
    const int kqs = vdr * (threadIdx.x % lanes_per_block);
    for (int j = threadIdx.y; j < cnt; j += blockDim.y) {
        const int64_t r = r0 + list[j];
        const void * row = w + r*w_nb1;
        float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        int kbx = threadIdx.x / lanes_per_block;
        for (; kbx + 3*blocks_per_iter < blocks_per_row; kbx += 4*blocks_per_iter) {
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const int kb = kbx + u*blocks_per_iter;
                sum[u] += sparse_vec_dot<type>::dot(row, &x[kb * (qk/QK8_1)], kb, kqs);
            }
        }
        for (; kbx < blocks_per_row; kbx += blocks_per_iter) {
            sum[0] += sparse_vec_dot<type>::dot(row, &x[kbx * (qk/QK8_1)], kbx, kqs);
        }
        const float v = warp_reduce_sum((sum[0] + sum[1]) + (sum[2] + sum[3]));
        if (threadIdx.x == 0) {
            yt[r] = v;
        }
    }
}

// F32, F16, BF16 rows and token 16-byte aligned, k % 8 == 0 (else sparse-ops.cu's kernel runs)
template <typename T>
static __global__ void k_mul_mat_rows_f_v2(const char * w, const float * x, const float * mask, float * y,
                                           const int64_t k, const size_t w_nb1, const int64_t n,
                                           const int64_t x_s1, const int64_t mask_s1, const int64_t y_s1) {
    __shared__ int32_t list[SPARSE_V2_ROWS_RANGE];
    const int64_t t  = blockIdx.y;
    const int64_t r0 = (int64_t) blockIdx.x*SPARSE_V2_ROWS_RANGE;
    float * yt = y + t*y_s1;
    const int cnt = sparse_v2_rows(mask + t*mask_s1, yt, r0, min(r0 + SPARSE_V2_ROWS_RANGE, n), list);
    const float * xt = x + t*x_s1;
    constexpr int64_t step = 8*WARP_SIZE;
    for (int j = threadIdx.y; j < cnt; j += blockDim.y) {
        const int64_t r = r0 + list[j];
        const T * row = (const T *) (w + r*w_nb1);
        float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        int64_t i = 8*threadIdx.x;
        for (; i + 3*step < k; i += 4*step) {
            float wv[4][8];
#pragma unroll
            for (int u = 0; u < 4; u++) {
                sparse_load8(row + i + u*step, wv[u]);
            }
#pragma unroll
            for (int u = 0; u < 4; u++) {
                float xv[8];
                sparse_load8(xt + i + u*step, xv);
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    sum[u] += wv[u][e]*xv[e];
                }
            }
        }
        for (; i < k; i += step) {
            float wv[8], xv[8];
            sparse_load8(row + i, wv);
            sparse_load8(xt + i, xv);
#pragma unroll
            for (int e = 0; e < 8; e++) {
                sum[0] += wv[e]*xv[e];
            }
        }
        const float v = warp_reduce_sum((sum[0] + sum[1]) + (sum[2] + sum[3]));
        if (threadIdx.x == 0) {
            yt[r] = v;
        }
    }
}

bool ggml_cuda_op_mul_mat_rows_v2(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    const ggml_tensor * w    = dst->src[0];
    const ggml_tensor * x    = dst->src[1];
    const ggml_tensor * mask = dst->src[2];
    const int64_t k = w->ne[0];
    const int64_t n = w->ne[1];
    const int64_t m = x->ne[1];
    const bool is_float = sparse_is_float(w->type);
    if (is_float && !(k % 8 == 0 && sparse_aligned16(w->data, w->nb[1]) && sparse_aligned16(x->data, x->nb[1]))) {
        return false;
    }
    cudaStream_t stream = ctx.stream();
    const dim3 block(WARP_SIZE, SPARSE_V2_ROWS_WARPS);
    const dim3 grid((unsigned) ((n + SPARSE_V2_ROWS_RANGE - 1) / SPARSE_V2_ROWS_RANGE), (unsigned) m);
    const float * md = (const float *) mask->data;
    float * y = (float *) dst->data;
    const int64_t mask_s1 = mask->nb[1] / sizeof(float);
    const int64_t y_s1 = dst->nb[1] / sizeof(float);
    if (is_float) {
#define ROWS_F(T) k_mul_mat_rows_f_v2<T><<<grid, block, 0, stream>>>((const char *) w->data, (const float *) x->data, \
        md, y, k, w->nb[1], n, x->nb[1] / sizeof(float), mask_s1, y_s1)
        switch (w->type) {
            case GGML_TYPE_F32:  ROWS_F(float);       break;
            case GGML_TYPE_F16:  ROWS_F(half);        break;
            case GGML_TYPE_BF16: ROWS_F(nv_bfloat16); break;
            default: GGML_ABORT("mul_mat_rows: unsupported type");
        }
#undef ROWS_F
    } else {
        GGML_ASSERT(sparse_rows_quantized(w->type));
        ggml_cuda_pool_alloc<char> xq(ctx.pool());
        const int64_t xq_s1 = sparse_quantize_tokens(ctx, x, w->type, xq);
        const int blocks_per_row = (int) (k / ggml_blck_size(w->type));
        sparse_for_rows_type(w->type, [&](auto type) {
            k_mul_mat_rows_q_v2<decltype(type)::value><<<grid, block, 0, stream>>>((const char *) w->data,
                (const block_q8_1 *) xq.get(), md, y, blocks_per_row, w->nb[1], n, xq_s1, mask_s1, y_s1);
        });
    }
    CUDA_CHECK(cudaGetLastError());
    return true;
}

// ---------------------------------------------------------------------------------------------
// axpy_sparse over the active inputs of each split

#define SPARSE_V2_MAX_SPLIT 2048  // inputs a split covers at most: its list in shared memory

// plain F32/F16/BF16 transposed weight, outputs 16-byte aligned in whole vectors of 8: each
// thread 8 consecutive outputs over its split's active inputs
template <typename T>
static __global__ void k_axpy_f_v2(const char * wt, const float * h, float * part, const int64_t n, const int64_t k,
                                   const size_t wt_nb1, const int64_t h_s1, const int64_t per_split) {
    __shared__ int32_t list[SPARSE_V2_MAX_SPLIT];
    const int64_t t  = blockIdx.z;
    const int64_t s  = blockIdx.y;
    const int64_t i0 = s*per_split;
    const float * ht = h + t*h_s1 + i0;
    const int cnt = sparse_v2_block_list(i0, min(i0 + per_split, k), list,
                                         [&](int64_t i) { return ht[i - i0] != 0.0f; });
    const int64_t o = 8*((int64_t) blockIdx.x*blockDim.x + threadIdx.x);
    if (o >= n) {
        return;
    }
    const char * w0 = wt + i0*wt_nb1;
    float acc[8] = {0.0f};
    int j = 0;
    for (; j + 3 < cnt; j += 4) {
        float wv[4][8];
        float hv[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int32_t i = list[j + u];
            hv[u] = ht[i];
            sparse_load8((const T *) (w0 + i*wt_nb1) + o, wv[u]);
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
#pragma unroll
            for (int e = 0; e < 8; e++) {
                acc[e] += hv[u]*wv[u][e];
            }
        }
    }
    for (; j < cnt; j++) {
        const int32_t i = list[j];
        float wv[8];
        sparse_load8((const T *) (w0 + i*wt_nb1) + o, wv);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            acc[e] += ht[i]*wv[e];
        }
    }
    float * p = part + (t*gridDim.y + s)*n + o;
#pragma unroll
    for (int e = 0; e < 8; e++) {
        p[e] = acc[e];
    }
}

// packed Q4_0 / Q4_1 / Q8_0 (ggml-sparse.h: per column of 32 inputs, the n scales d as f16, for
// Q4_1 the n minimums, then 32 rows of quants; Q4: byte 16g + b of a row holds output 32g + b in
// its low nibble and 32g + b + 16 in its high one). The split's columns with an active input are
// listed with a 32-bit mask of which. A thread reads 16 bytes of a row: Q4 the 32 outputs
// 32g .. 32g + 31 of its group g, Q8_0 16 outputs; the block's row groups (threadIdx.y) take
// every SPARSE_V2_PACKED_GROUPS-th active row of a column (a row of 4096 Q4 outputs is only
// 2 KiB: more loads in flight without more partial sums), and add up at the end.
#define SPARSE_V2_PACKED_GROUPS  4
#define SPARSE_V2_PACKED_SPLIT   512  // columns a split covers at most

template <ggml_type type>
static __global__ void k_axpy_packed_v2(const char * wt, const float * h, float * part, const int64_t n,
                                        const int64_t n_cols, const size_t col_nb, const int64_t h_s1,
                                        const int64_t per_split) {
    constexpr bool q4 = type != GGML_TYPE_Q8_0;
    constexpr int  V  = q4 ? 32 : 16;
    constexpr int  G  = SPARSE_V2_PACKED_GROUPS;
    constexpr int  n_scales = type == GGML_TYPE_Q4_1 ? 2 : 1;
    __shared__ int32_t  list[SPARSE_V2_PACKED_SPLIT];
    __shared__ uint32_t bits[SPARSE_V2_PACKED_SPLIT];
    __shared__ float    sums[G - 1][SPARSE_V2_PACKED_THREADS][V + 1];  // groups 1.. for group 0 to add
    const int64_t t  = blockIdx.z;
    const int64_t s  = blockIdx.y;
    const int64_t c0 = s*per_split;
    const int64_t c1 = min(c0 + per_split, n_cols);
    const float * ht = h + t*h_s1 + 32*c0;
    const int tid = threadIdx.y*blockDim.x + threadIdx.x;
    // one thread a column: which of its 32 inputs are active
    for (int64_t c = tid; c < c1 - c0; c += blockDim.x*blockDim.y) {
        uint32_t b = 0;
        for (int e = 0; e < 32; e += 8) {
            float hv[8];
            sparse_load8(ht + 32*c + e, hv);
#pragma unroll
            for (int u = 0; u < 8; u++) {
                b |= (uint32_t) (hv[u] != 0.0f) << (e + u);
            }
        }
        bits[c] = b;
    }
    __syncthreads();
    const int cnt = sparse_v2_block_list(c0, c1, list, [&](int64_t c) { return bits[c - c0] != 0; });

    const int64_t lane = (int64_t) blockIdx.x*blockDim.x + threadIdx.x;  // 16 quant bytes of a row each
    const int64_t qrow = q4 ? n/2 : n;                                   // bytes of one input row
    const bool in_row = 16*lane < qrow;
    const int64_t o0 = q4 ? 32*lane : 16*lane;  // this thread's first output
    float acc[V] = {0.0f};
    for (int j = 0; in_row && j < cnt; j++) {
        const int64_t c = list[j];  // within the split
        // this group's share of the column's active rows: every G-th, from the threadIdx.y-th
        uint32_t active = 0;
        int rank = 0;
        for (uint32_t b = bits[c]; b != 0; b &= b - 1, rank++) {
            if (rank % G == (int) threadIdx.y) {
                active |= b & (~b + 1);
            }
        }
        if (active == 0) {
            continue;
        }
        const char * col = wt + (c0 + c)*col_nb;
        const char * q = col + n_scales*2*n + 16*lane;
        const float * hc = ht + 32*c;
        float sq[V] = {0.0f};
        float hsum = 0.0f;
        while (active != 0) {
            // two active rows at a time, both loads issued before either is used
            const int i0 = __ffs(active) - 1;
            active &= active - 1;
            const int i1 = active != 0 ? __ffs(active) - 1 : -1;
            if (i1 >= 0) {
                active &= active - 1;
            }
            const int4 q0 = *(const int4 *) (q + i0*qrow);
            const int4 q1 = i1 >= 0 ? *(const int4 *) (q + i1*qrow) : make_int4(0, 0, 0, 0);
            const float h0 = hc[i0];
            const float h1 = i1 >= 0 ? hc[i1] : 0.0f;
            hsum += h0 + h1;
            const int w0[4] = {q0.x, q0.y, q0.z, q0.w};
            const int w1[4] = {q1.x, q1.y, q1.z, q1.w};
#pragma unroll
            for (int b = 0; b < 16; b++) {
                const int v0 = (w0[b/4] >> (8*(b%4))) & 0xFF;
                const int v1 = (w1[b/4] >> (8*(b%4))) & 0xFF;
                if constexpr (q4) {
                    sq[b]      += h0*(float) (v0 & 0x0F) + h1*(float) (v1 & 0x0F);
                    sq[b + 16] += h0*(float) (v0 >> 4)   + h1*(float) (v1 >> 4);
                } else {
                    sq[b] += h0*(float) (int8_t) v0 + h1*(float) (int8_t) v1;
                }
            }
        }
        // the column's scales of this thread's outputs: V halves, 16-byte aligned
        float d[V];
        const half * dcol = (const half *) col + o0;
#pragma unroll
        for (int e = 0; e < V; e += 8) {
            sparse_load8(dcol + e, d + e);
        }
        if constexpr (type == GGML_TYPE_Q4_1) {
            float mn[V];
            const half * mcol = (const half *) (col + 2*n) + o0;
#pragma unroll
            for (int e = 0; e < V; e += 8) {
                sparse_load8(mcol + e, mn + e);
            }
#pragma unroll
            for (int e = 0; e < V; e++) {
                acc[e] += d[e]*sq[e] + mn[e]*hsum;
            }
        } else {
#pragma unroll
            for (int e = 0; e < V; e++) {
                acc[e] += type == GGML_TYPE_Q4_0 ? d[e]*(sq[e] - 8.0f*hsum) : d[e]*sq[e];
            }
        }
    }
    // group 0 adds the other groups' sums in a fixed order and writes the split's partial sums
    if (threadIdx.y > 0) {
#pragma unroll
        for (int e = 0; e < V; e++) {
            sums[threadIdx.y - 1][threadIdx.x][e] = acc[e];
        }
    }
    __syncthreads();
    if (threadIdx.y > 0 || !in_row) {
        return;
    }
    for (int g = 0; g < G - 1; g++) {
#pragma unroll
        for (int e = 0; e < V; e++) {
            acc[e] += sums[g][threadIdx.x][e];
        }
    }
    float * p = part + (t*gridDim.y + s)*n + o0;
#pragma unroll
    for (int e = 0; e < V; e++) {
        p[e] = acc[e];
    }
}

// entries (inputs or columns) per split: enough splits to fill the GPU on one token, but at
// least min_per entries each so the partial sums stay small against the weights read
static int64_t sparse_v2_per_split(int64_t entries, int64_t blocks_out, int64_t m, int nsm, int64_t min_per,
                                   int64_t max_per) {
    const int64_t want = std::max<int64_t>(1, (4*nsm + blocks_out*m - 1) / (blocks_out*m));
    const int64_t per  = std::max<int64_t>(min_per, (entries + want - 1) / want);
    return std::min<int64_t>(std::min<int64_t>(per, max_per), entries);
}

bool ggml_cuda_op_axpy_sparse_v2(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    const ggml_tensor * wt = dst->src[0];
    const ggml_tensor * h  = dst->src[1];
    const int64_t n = dst->ne[0];
    const int64_t k = h->ne[0];
    const int64_t m = h->ne[1];
    const int64_t h_s1 = h->nb[1] / sizeof(float);
    const int nsm = ggml_cuda_info().devices[ctx.device].nsm;
    cudaStream_t stream = ctx.stream();
    const float * hd = (const float *) h->data;
    const char * w = (const char *) wt->data;
    const bool packed = wt->type == GGML_TYPE_I8;
    const ggml_type type = packed ? (ggml_type) ggml_get_op_params_i32(dst, 0) : wt->type;
    dim3 block;
    int64_t entries, per, blocks_out;  // inputs (plain) or columns of 32 inputs (packed), per split
    if (packed) {
        // 16-byte loads of quants, scales and activations
        if (k % 32 != 0 || n % 32 != 0 || wt->nb[1] % 16 != 0 || (uintptr_t) wt->data % 16 != 0 ||
                !sparse_aligned16(h->data, h->nb[1])) {
            return false;
        }
        const int64_t qrow = type == GGML_TYPE_Q8_0 ? n : n/2;
        block   = dim3(SPARSE_V2_PACKED_THREADS, SPARSE_V2_PACKED_GROUPS);
        entries = k / 32;
        blocks_out = (qrow/16 + block.x - 1) / block.x;
        per     = sparse_v2_per_split(entries, blocks_out, m, nsm, 4, SPARSE_V2_PACKED_SPLIT);
    } else {
        if (!sparse_is_float(type) || n % 8 != 0 || !sparse_aligned16(wt->data, wt->nb[1])) {
            return false;  // plain 32-block quants and unaligned rows: sparse-ops.cu's kernels
        }
        block   = dim3(SPARSE_V2_AXPY_THREADS);
        entries = k;
        blocks_out = (n/8 + block.x - 1) / block.x;
        per     = sparse_v2_per_split(entries, blocks_out, m, nsm, 64, SPARSE_V2_MAX_SPLIT);
    }
    const int n_splits = (int) ((entries + per - 1) / per);
    ggml_cuda_pool_alloc<float> part(ctx.pool(), (size_t) m * n_splits * n);
    const dim3 grid((unsigned) blocks_out, (unsigned) n_splits, (unsigned) m);
#define AXPY_PACKED(T) k_axpy_packed_v2<T><<<grid, block, 0, stream>>>(w, hd, part.get(), n, entries, wt->nb[1], h_s1, per)
#define AXPY_F(T)      k_axpy_f_v2<T><<<grid, block, 0, stream>>>(w, hd, part.get(), n, k, wt->nb[1], h_s1, per)
    if (packed) {
        switch (type) {
            case GGML_TYPE_Q4_0: AXPY_PACKED(GGML_TYPE_Q4_0); break;
            case GGML_TYPE_Q4_1: AXPY_PACKED(GGML_TYPE_Q4_1); break;
            case GGML_TYPE_Q8_0: AXPY_PACKED(GGML_TYPE_Q8_0); break;
            default: GGML_ABORT("axpy_sparse: unsupported packed type");
        }
    } else {
        switch (type) {
            case GGML_TYPE_F32:  AXPY_F(float);       break;
            case GGML_TYPE_F16:  AXPY_F(half);        break;
            case GGML_TYPE_BF16: AXPY_F(nv_bfloat16); break;
            default: GGML_ABORT("axpy_sparse: unsupported type");
        }
    }
#undef AXPY_PACKED
#undef AXPY_F
    CUDA_CHECK(cudaGetLastError());
    sparse_sum_splits(part.get(), dst, n_splits, stream);
    return true;
}
