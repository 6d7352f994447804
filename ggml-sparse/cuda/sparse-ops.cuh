// ggufsparse: CUDA forwards of the sparse ops; the same results as ggml-sparse/cpu (see
// docs/cuda.md). Copied to ggml/src/ggml-cuda/ggml-sparse/ and dispatched by ggml-cuda.cu.
#pragma once

#include "../common.cuh"

void ggml_cuda_op_sparse_act(ggml_backend_cuda_context & ctx, ggml_tensor * dst);
void ggml_cuda_op_mul_mat_rows(ggml_backend_cuda_context & ctx, ggml_tensor * dst);
void ggml_cuda_op_axpy_sparse(ggml_backend_cuda_context & ctx, ggml_tensor * dst);
void ggml_cuda_op_mul_mat_nm(ggml_backend_cuda_context & ctx, ggml_tensor * dst);

// whether the kernels above compute this node (its op and weight type); false for other ops
bool ggml_cuda_sparse_supports_op(const ggml_tensor * op);
