"""The CUDA sparse ops compile with nvcc where no GPU is (they run on one: scripts/gpu-check.sh)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from ggufsparse.runtime import source

# the few cuBLAS names that ggml-cuda's common header uses, for a toolkit installed without
# cuBLAS; the sparse ops call none of them
_CUBLAS_STUB = """#pragma once
typedef struct cublasContext * cublasHandle_t;
typedef enum { CUBLAS_STATUS_SUCCESS = 0 } cublasStatus_t;
typedef enum { CUBLAS_DEFAULT_MATH = 0, CUBLAS_TF32_TENSOR_OP_MATH = 3 } cublasMath_t;
static inline const char * cublasGetStatusString(cublasStatus_t) { return ""; }
cublasStatus_t cublasCreate(cublasHandle_t *);
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t);
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t);
"""


@pytest.mark.runtime
def test_sparse_cuda_kernels_compile(runtime, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("no nvcc on PATH: the CUDA toolkit is not installed")
    tree = Path(runtime.work) / "src" / source.LLAMA_DIR / "ggml" / "src" / "ggml-cuda"
    includes = ["-I", str(tree.parent.parent / "include"), "-I", str(tree.parent), "-I", str(tree)]
    if not (Path(nvcc).resolve().parent.parent / "include" / "cublas_v2.h").exists():
        (tmp_path / "cublas_v2.h").write_text(_CUBLAS_STUB)
        includes += ["-isystem", str(tmp_path)]
    # every op the CUDA backend dispatches to is defined, in one implementation
    assert sorted(p.name for p in (tree / "ggml-sparse").glob("*.cu")) == ["sparse-ops.cu"]
    wanted = {"sparse-ops.cu": ("ggml_cuda_op_sparse_act", "ggml_cuda_op_mul_mat_rows", "ggml_cuda_op_axpy_sparse",
                                "ggml_cuda_op_mul_mat_nm", "ggml_cuda_sparse_supports_op")}
    for source_name, names in wanted.items():
        kernels = tree / "ggml-sparse" / source_name
        assert kernels.is_file(), f"{kernels}: the patched tree lacks the CUDA sparse ops"
        obj = tmp_path / f"{source_name}.o"
        cmd = [nvcc, "-std=c++17", "-arch=sm_80", "-O1", "--expt-relaxed-constexpr", "-DGGML_USE_CUDA", *includes,
               "-c", str(kernels), "-o", str(obj)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        symbols = subprocess.run(["nm", "-C", str(obj)], capture_output=True, text=True, check=True).stdout
        for name in names:
            assert f" T {name}(" in symbols, name
