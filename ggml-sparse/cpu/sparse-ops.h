// ggufsparse: CPU forwards of the activation-sparsity ops (see docs/sparse-runtime.md)
#pragma once

#include "ggml.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ggml_compute_params;

void ggml_compute_forward_sparse_act(const struct ggml_compute_params * params, struct ggml_tensor * dst);
void ggml_compute_forward_mul_mat_rows(const struct ggml_compute_params * params, struct ggml_tensor * dst);
void ggml_compute_forward_axpy_sparse(const struct ggml_compute_params * params, struct ggml_tensor * dst);
void ggml_compute_forward_mul_mat_nm(const struct ggml_compute_params * params, struct ggml_tensor * dst);
void ggml_compute_forward_nm_expand(const struct ggml_compute_params * params, struct ggml_tensor * dst);

// bytes of work buffer the op needs with n_tasks threads (0 if none)
size_t ggml_sparse_op_work_size(const struct ggml_tensor * node, int n_tasks);

// GGML_SPARSE_SCALAR=1 (read once): every sparse kernel takes its plain-C path, as on a CPU without
// AVX2 or NEON. A handicap for showing that the runtime's choice of kernels falls back to the dense
// products where the sparse ones are slow (llama-sparse-tune.cpp), and a way to test the plain-C
// paths on any machine.
bool ggml_sparse_scalar(void);

// whether the CPU backend computes this node (weight types with to_float / vec_dot)
bool ggml_sparse_op_supported(const struct ggml_tensor * op);

#ifdef __cplusplus
}
#endif
