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
    return lib


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
