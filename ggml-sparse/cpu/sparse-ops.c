// ggufsparse: CPU forwards of the activation-sparsity ops.
//
// sparse_act:   y = act(a) where |act(a)| > thr, else 0           (rows split over elements)
// mul_mat_rows: y[r,t] = mask[r,t] != 0 ? dot(w[r], x[:,t]) : 0   (rows split across threads)
// axpy_sparse:  y[:,t] = sum_{i: h[i,t] != 0} h[i,t] * wt[i,:]     (output split across threads)
//
// Every weight type goes through the type traits (vec_dot, to_float), as ggml_mul_mat does.

#include "sparse-ops.h"

#include "ggml-cpu.h"
#include "ggml-cpu-impl.h"
#include "ggml-impl.h"
#include "vec.h"

#include <string.h>

#define SPARSE_CACHE_LINE 64

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

    for (int64_t r = 0; r < nrows; r++) {
        const int64_t i3 = r / (a->ne[1] * a->ne[2]);
        const int64_t i2 = (r / a->ne[1]) % a->ne[2];
        const int64_t i1r = r % a->ne[1];
        const float * x = (const float *) ((const char *) a->data + i1r*a->nb[1] + i2*a->nb[2] + i3*a->nb[3]);
        float       * y = (float *) ((char *) dst->data + i1r*dst->nb[1] + i2*dst->nb[2] + i3*dst->nb[3]);
        for (int64_t i = i0; i < i1; i++) {
            const float v = sparse_act_apply(kind, x[i]);
            const float th = per_channel ? t[i] : t[0];
            y[i] = fabsf(v) > th ? v : 0.0f;
        }
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
    for (int64_t t = 0; t < m; t++) {
        const float * mk = (const float *) ((const char *) mask->data + t*mask->nb[1]);
        float       * y  = (float *) ((char *) dst->data + t*dst->nb[1]);
        for (int64_t r = r0; r < r1; r++) {
            if (mk[r] != 0.0f) {
                traits->vec_dot(k, y + r, 0, (const char *) w->data + r*w->nb[1], 0, xq + t*xq_row, 0, 1);
            } else {
                y[r] = 0.0f;
            }
        }
    }
}

void ggml_compute_forward_axpy_sparse(const struct ggml_compute_params * params, struct ggml_tensor * dst) {
    const struct ggml_tensor * wt = dst->src[0];
    const struct ggml_tensor * h  = dst->src[1];

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

    for (int64_t t = 0; t < m; t++) {
        const float * hv = (const float *) ((const char *) h->data + t*h->nb[1]);
        float       * y  = (float *) ((char *) dst->data + t*dst->nb[1]) + j0;
        memset(y, 0, len * sizeof(float));
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
        case GGML_OP_AXPY_SPARSE:
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
        case GGML_OP_AXPY_SPARSE:
            return op->src[1]->type == GGML_TYPE_F32 &&
                   (op->src[0]->type == GGML_TYPE_F32 || ggml_get_type_traits(op->src[0]->type)->to_float != NULL) &&
                   op->src[0]->ne[0] % ggml_blck_size(op->src[0]->type) == 0;
        default:
            return false;
    }
}
