"""ggml's own quantizers, called through ctypes on the runtime's libggml-base.

Requantising with ggml itself (not a Python re-implementation) keeps the bytes exactly what
llama-quantize would write for the same float rows.
"""

from __future__ import annotations

import ctypes
import sys
from functools import cache
from pathlib import Path

import numpy as np

from ggufsparse.errors import UserError


@cache
def _library() -> ctypes.CDLL:
    from ggufsparse.runtime.locate import require_active

    bin_dir = Path(require_active().bin_dir)
    name = "libggml-base.dylib" if sys.platform == "darwin" else "libggml-base.so"
    path = bin_dir / name
    if not path.exists():
        raise UserError(f"{path} is missing; run: ggufsparse build-runtime")
    lib = ctypes.CDLL(str(path))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_sparse_packed_column_size.restype = ctypes.c_size_t
    lib.ggml_sparse_packed_column_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_sparse_packed_column_inputs.restype = ctypes.c_int64
    lib.ggml_sparse_packed_column_inputs.argtypes = [ctypes.c_int]
    lib.ggml_sparse_pack_transposed.restype = ctypes.c_size_t
    lib.ggml_sparse_pack_transposed.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                                ctypes.c_void_p]
    lib.ggml_sparse_nm_expandable.restype = ctypes.c_bool
    lib.ggml_sparse_nm_expandable.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    return lib


def nm_expandable(qtype, n: int, m: int) -> bool:
    """Whether the runtime's ggml_nm_expand expands kept values of qtype at n:m."""
    return bool(_library().ggml_sparse_nm_expandable(int(qtype), n, m))


def requires_imatrix(qtype) -> bool:
    return bool(_library().ggml_quantize_requires_imatrix(int(qtype)))


def quantize(rows: np.ndarray, qtype) -> np.ndarray:
    """float32 (n_rows, n_per_row) -> uint8 (n_rows, row bytes) in ggml type qtype."""
    lib = _library()
    src = np.ascontiguousarray(rows, dtype=np.float32)
    n_rows, n_per_row = src.shape
    row_bytes = lib.ggml_row_size(int(qtype), n_per_row)
    dst = np.empty((n_rows, row_bytes), dtype=np.uint8)
    written = lib.ggml_quantize_chunk(int(qtype), src.ctypes.data, dst.ctypes.data, 0, n_rows, n_per_row, None)
    if written != dst.nbytes:
        raise RuntimeError(f"ggml_quantize_chunk wrote {written} bytes, expected {dst.nbytes}")
    return dst


def packed_column_size(qtype, n_out: int) -> int:
    """Bytes of one packed column of a transposed `qtype` weight; 0 if it cannot be packed."""
    return int(_library().ggml_sparse_packed_column_size(int(qtype), n_out))


def packed_column_inputs(qtype) -> int:
    """Inputs of one packed column of a `qtype` weight (32, 256 for K-quants); 0 if unpackable."""
    return int(_library().ggml_sparse_packed_column_inputs(int(qtype)))


def pack_transposed(raw: np.ndarray, qtype, n_in: int, n_out: int) -> np.ndarray:
    """The runtime's packed transposed copy (layout in docs/format.md) of a `qtype` weight whose
    raw bytes are `raw` (n_out rows of n_in values) -> int8 (n_in/column inputs, column bytes)."""
    lib = _library()
    col = packed_column_size(qtype, n_out)
    inputs = packed_column_inputs(qtype)
    if col == 0 or inputs == 0 or n_in % inputs != 0:
        raise ValueError(f"a {n_in}x{n_out} {qtype} weight cannot be packed")
    src = np.ascontiguousarray(raw).view(np.uint8)
    dst = np.empty((n_in // inputs, col), dtype=np.int8)
    written = lib.ggml_sparse_pack_transposed(int(qtype), src.ctypes.data, n_in, n_out, dst.ctypes.data)
    if written != dst.nbytes:
        raise RuntimeError(f"ggml_sparse_pack_transposed wrote {written} bytes, expected {dst.nbytes}")
    return dst
