// ggufsparse: axpy_sparse on packed transposed weights (see ggml-sparse.h and sparse-packed.c)
#pragma once

#include "ggml.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ggml_compute_params;

// GGML_OP_AXPY_SPARSE whose weight is GGML_TYPE_I8 (packed); the weight's type is op param 0
void ggml_sparse_axpy_packed(const struct ggml_compute_params * params, struct ggml_tensor * dst);

// bytes of work buffer with n_tasks threads: h quantized to Q8_0, then each thread's partial sums
size_t ggml_sparse_axpy_packed_work_size(const struct ggml_tensor * node, int n_tasks);

bool ggml_sparse_axpy_packed_supported(const struct ggml_tensor * op);

#ifdef __cplusplus
}
#endif
