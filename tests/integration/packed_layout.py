"""Read packed transposed weights back, following docs/format.md ("Packed transposed weights")
independently of the C code that writes them: `unpack` gives the original ggml blocks,
`dequantize_packed` the weight's values, computed from the packed layout itself."""

from __future__ import annotations

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

# bytes per output in one packed column: scales (2 bytes each), then 32 inputs' quants; for the
# K-quants the column is one 256-input super-block
PER_OUTPUT = {T.Q4_0: 18, T.Q4_1: 20, T.Q8_0: 34, T.Q4_K: 148, T.Q5_K: 180, T.Q6_K: 210}
COLUMN_INPUTS = {T.Q4_0: 32, T.Q4_1: 32, T.Q8_0: 32, T.Q4_K: 256, T.Q5_K: 256, T.Q6_K: 256}
K_QUANTS = (T.Q4_K, T.Q5_K, T.Q6_K)
# outputs per span of the quant rows: the K-quants' nibble and high-bit rows hold 64, the others 32
SPAN = {T.Q4_0: 32, T.Q4_1: 32, T.Q8_0: 32, T.Q4_K: 64, T.Q5_K: 64, T.Q6_K: 64}


def packed_type(column_bytes: int, n_out: int) -> T:
    found = [t for t, b in PER_OUTPUT.items() if b * n_out == column_bytes and n_out % SPAN[t] == 0]
    if not found:
        raise ValueError(f"no packed type has {column_bytes}-byte columns of {n_out} outputs"
                         " (the K-quants need a multiple of 64)")
    return found[0]


def _columns(packed: np.ndarray, n_out: int) -> tuple[np.ndarray, T]:
    if n_out % 32 != 0:
        raise ValueError(f"{n_out} outputs: a packed weight has a multiple of 32")
    cols = np.ascontiguousarray(np.asarray(packed).view(np.uint8))
    return cols, packed_type(cols.shape[1], n_out)


def _nibbles(rows: np.ndarray, n_out: int, span: int = 32) -> np.ndarray:
    """(..., n_out/2) bytes -> (..., n_out) values: span/2 bytes per span of outputs, byte k
    holding output k of the span in its low nibble and output k+span/2 in its high nibble
    (span 32: Q4_0, Q4_1; 64: the K-quants)."""
    nib = rows.reshape(*rows.shape[:-1], n_out // span, span // 2)
    return np.concatenate([nib & 0x0F, nib >> 4], axis=-1).reshape(*rows.shape[:-1], n_out)


def _f16(part: np.ndarray) -> np.ndarray:
    """(columns, 2n) bytes -> (columns, n) float16."""
    return np.ascontiguousarray(part).view(np.float16)


def _k_fields(cols: np.ndarray, qtype: T, n: int) -> dict[str, np.ndarray]:
    """The parts of K-quant columns, in column order c: d, dmin (c, n) f16; sc, mn (c, 8, n) uint8
    (Q6_K: sc (c, 16, n) int8); q (c, 256 inputs, n) uint8, the whole quantized value."""
    n_cols = cols.shape[0]
    if qtype == T.Q6_K:
        sc = cols[:, 2 * n: 18 * n].view(np.int8).reshape(n_cols, 16, n)
        low = _nibbles(cols[:, 18 * n: 146 * n].reshape(n_cols, 256, n // 2), n, 64)
        # 16 bytes per 64 outputs: output k at bits 2*(k/16) .. 2*(k/16)+1 of byte k%16
        hb = cols[:, 146 * n: 210 * n].reshape(n_cols, 256, n // 64, 1, 16)
        high = (hb >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(4, 1)) & 3  # (c, i, g, k/16, k%16)
        q = low | (high.reshape(n_cols, 256, n) << 4)
        return {"d": _f16(cols[:, : 2 * n]), "sc": sc, "q": q}
    q = _nibbles(cols[:, 20 * n: 148 * n].reshape(n_cols, 256, n // 2), n, 64)
    if qtype == T.Q5_K:
        # n/8 bytes per input: output j at bit j%8 of byte j/8
        bits = np.unpackbits(cols[:, 148 * n: 180 * n].reshape(n_cols, 256, n // 8), axis=2, bitorder="little")
        q = q | (bits << 4)
    return {"d": _f16(cols[:, : 2 * n]), "dmin": _f16(cols[:, 2 * n: 4 * n]),
            "sc": cols[:, 4 * n: 12 * n].reshape(n_cols, 8, n),
            "mn": cols[:, 12 * n: 20 * n].reshape(n_cols, 8, n), "q": q}


def _k_blocks(f: dict[str, np.ndarray], qtype: T, n: int) -> np.ndarray:
    """ggml super-blocks (n, columns, block bytes) from the parts of K-quant columns."""
    q = f["q"].transpose(2, 0, 1)  # (j, c, i)
    n_cols = q.shape[1]

    def f16(x):  # (c, n) f16 -> (n, c, 2) bytes
        return x.T.copy().view(np.uint8).reshape(n, n_cols, 2)

    if qtype == T.Q6_K:
        low = (q & 0x0F).reshape(n, n_cols, 2, 2, 64)  # (j, c, half, input/64 in the half, 64)
        ql = low[:, :, :, 0] | (low[:, :, :, 1] << 4)  # byte 64h+b: inputs 128h+b, 128h+64+b
        high = (q >> 4).reshape(n, n_cols, 2, 4, 32)  # (j, c, half, quarter, l)
        qh = np.bitwise_or.reduce(high << np.array([0, 2, 4, 6], dtype=np.uint8).reshape(4, 1), axis=3)
        sc = f["sc"].transpose(2, 0, 1).view(np.uint8)
        parts = [ql.reshape(n, n_cols, 128), qh.reshape(n, n_cols, 64), sc, f16(f["d"])]
        return np.concatenate(parts, axis=2)
    sc = f["sc"].transpose(2, 0, 1)  # (j, c, 8)
    mn = f["mn"].transpose(2, 0, 1)
    # the 12 scale bytes of get_scale_min_k4: 6-bit values, the top 2 bits of sub-blocks 4..7
    # in the top bits of bytes 0..7, their low 4 bits in bytes 8..11
    scales = np.concatenate([
        (sc[..., :4] & 63) | ((sc[..., 4:] >> 4) << 6),
        (mn[..., :4] & 63) | ((mn[..., 4:] >> 4) << 6),
        (sc[..., 4:] & 15) | ((mn[..., 4:] & 15) << 4),
    ], axis=2)
    low = (q & 0x0F).reshape(n, n_cols, 4, 2, 32)  # sub-blocks 2t (low nibble) and 2t+1 (high)
    qs = (low[:, :, :, 0] | (low[:, :, :, 1] << 4)).reshape(n, n_cols, 128)
    parts = [f16(f["d"]), f16(f["dmin"]), scales]
    if qtype == T.Q5_K:
        fifth = (q >> 4).reshape(n, n_cols, 8, 32)  # input 32s+l: bit s of qh[l]
        parts.append(np.bitwise_or.reduce(fifth << np.arange(8, dtype=np.uint8).reshape(8, 1), axis=2))
    return np.concatenate([*parts, qs], axis=2)


def unpack(packed: np.ndarray, n_out: int) -> tuple[np.ndarray, T]:
    """(raw ggml blocks of the original weight, n_out rows of n_in values, its type) from a packed
    copy laid out as (n_in/column inputs columns, column bytes)."""
    cols, qtype = _columns(packed, n_out)
    n_cols = cols.shape[0]
    if qtype in K_QUANTS:
        return _k_blocks(_k_fields(cols, qtype, n_out), qtype, n_out).reshape(n_out, -1), qtype
    n_scales = 2 if qtype == T.Q4_1 else 1
    scales = cols[:, : 2 * n_scales * n_out].reshape(n_cols, n_scales, n_out, 2)  # (c, d/m, j, bytes)
    quants = cols[:, 2 * n_scales * n_out:]
    if qtype == T.Q8_0:
        values = quants.reshape(n_cols, 32, n_out)  # (c, input i, output j)
        qs = values.transpose(2, 0, 1)  # (j, c, 32): one byte per input
    else:
        values = _nibbles(quants.reshape(n_cols, 32, n_out // 2), n_out)  # (c, i, j)
        v = values.transpose(2, 0, 1)  # (j, c, i)
        qs = v[:, :, :16] | (v[:, :, 16:] << 4)  # the Q4 block's own nibble order
    head = scales.transpose(2, 0, 1, 3).reshape(n_out, n_cols, 2 * n_scales)
    blocks = np.concatenate([head, qs.astype(np.uint8)], axis=2)  # (j, c, block bytes)
    return blocks.reshape(n_out, -1), qtype


def dequantize_packed(packed: np.ndarray, n_out: int) -> tuple[np.ndarray, T]:
    """(the weight's values, float32 (n_out, n_in), its type) from a packed copy. The K-quants'
    values are computed from the packed parts, in float32 in the order gguf-py uses, so they equal
    gguf-py's dequantization of the original blocks exactly."""
    cols, qtype = _columns(packed, n_out)
    if qtype not in K_QUANTS:
        blocks, qtype = unpack(cols, n_out)
        return gguf.dequantize(blocks, qtype).reshape(n_out, -1), qtype
    f = _k_fields(cols, qtype, n_out)
    d = f["d"].astype(np.float32)[:, None, :]  # (c, 1, j)
    scale = d * f["sc"].astype(np.float32)  # (c, sub-block or group, j)
    if qtype == T.Q6_K:
        # scale group g = inputs 16g .. 16g+15
        w = np.repeat(scale, 16, axis=1) * (f["q"].astype(np.float32) - 32)
    else:
        # sub-block s = inputs 32s .. 32s+31
        dm = f["dmin"].astype(np.float32)[:, None, :] * f["mn"].astype(np.float32)
        w = np.repeat(scale, 32, axis=1) * f["q"].astype(np.float32) - np.repeat(dm, 32, axis=1)
    return np.ascontiguousarray(w.transpose(2, 0, 1).reshape(n_out, -1)), qtype
