"""Read packed transposed weights back into ordinary ggml blocks, following docs/format.md
("Packed transposed weights") independently of the C code that writes them."""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T

# bytes per output in one packed column: scales (2 bytes each), then 32 inputs' quants
PER_OUTPUT = {T.Q4_0: 18, T.Q4_1: 20, T.Q8_0: 34}


def packed_type(column_bytes: int, n_out: int) -> T:
    return next(t for t, b in PER_OUTPUT.items() if b * n_out == column_bytes)


def unpack(packed: np.ndarray, n_out: int) -> tuple[np.ndarray, T]:
    """(raw ggml blocks of the original weight, n_out rows of n_in values, its type) from a packed
    copy laid out as (n_in/32 columns, column bytes)."""
    cols = np.asarray(packed).view(np.uint8)
    qtype = packed_type(cols.shape[1], n_out)
    n_cols = cols.shape[0]
    n_scales = 2 if qtype == T.Q4_1 else 1
    scales = cols[:, : 2 * n_scales * n_out].reshape(n_cols, n_scales, n_out, 2)  # (c, d/m, j, bytes)
    quants = cols[:, 2 * n_scales * n_out:]
    if qtype == T.Q8_0:
        values = quants.reshape(n_cols, 32, n_out)  # (c, input i, output j)
        qs = values.transpose(2, 0, 1)  # (j, c, 32): one byte per input
    else:
        nib = quants.reshape(n_cols, 32, n_out // 32, 16)  # (c, i, group, k)
        # low nibble: output 32g+k, high nibble: output 32g+k+16
        values = np.concatenate([nib & 0x0F, nib >> 4], axis=3).reshape(n_cols, 32, n_out)
        v = values.transpose(2, 0, 1)  # (j, c, i)
        qs = v[:, :, :16] | (v[:, :, 16:] << 4)  # the Q4 block's own nibble order
    head = scales.transpose(2, 0, 1, 3).reshape(n_out, n_cols, 2 * n_scales)
    blocks = np.concatenate([head, qs.astype(np.uint8)], axis=2)  # (j, c, block bytes)
    return blocks.reshape(n_out, -1), qtype
