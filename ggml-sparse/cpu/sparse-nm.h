// ggufsparse: the N:M sparse matrix product on the CPU (see sparse-nm.c and ggml-sparse.h)
#pragma once

#include "ggml.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ggml_compute_params;

// bytes of work buffer with n_tasks threads: per thread the permuted input, the gathered input
// and the gathered input in the weight type's vec_dot_type
size_t ggml_sparse_mul_mat_nm_work_size(const struct ggml_tensor * node, int n_tasks);

bool ggml_sparse_mul_mat_nm_supported(const struct ggml_tensor * op);

#ifdef __cplusplus
}
#endif
