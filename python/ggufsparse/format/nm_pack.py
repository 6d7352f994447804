"""Packed N:M copies of pruned weights, in the layout the runtime's N:M product reads.

For a weight with k inputs pruned to N of every M (docs/format.md, "N:M packed copies"):
- kept values: per row, group by group in the permuted input order, the N kept values in
  ascending position (k*N/M per row), in the weight type of `packed_type`;
- positions: each kept value's position inside its group of M, `index_bits(M)` bits each,
  little-endian along the row (kept value j at bits [j*b, j*b+b));
- permutation: permuted input c is original input perm[c] (absent: identity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ggufsparse.format.gguf_io import dequantize_rows
from ggufsparse.format.nm_pattern import Pattern

T = GGMLQuantizationType

# the types the runtime's N:M product has fast paths for (2:4), kept as they are
_KEEP = (T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0)


def index_bits(m: int) -> int:
    return 1 if m <= 2 else 2 if m <= 4 else 4


def index_row_bytes(k: int, pattern: Pattern) -> int:
    return (k // pattern.m * pattern.n * index_bits(pattern.m) + 7) // 8


def packed_type(source, kept_per_row: int) -> GGMLQuantizationType:
    """The kept values' type: the source's where the runtime has a fast path for it, else Q8_0
    (at least as precise as any other quantized type); F16 when a 32-block does not fit the row."""
    source = T(source)
    qtype = source if source in _KEEP else T.Q8_0
    if kept_per_row % GGML_QUANT_SIZES[qtype][0] != 0:
        return T.F16
    return qtype


@dataclass
class Packed:
    kept: np.ndarray  # float32 (rows, k*N/M)
    idx: np.ndarray  # uint8 (rows, index_row_bytes)
    perm: np.ndarray | None  # int32 (k,)


def pack(values: np.ndarray, mask: np.ndarray, perm: np.ndarray | None, pattern: Pattern) -> Packed:
    """values, mask: (rows, k), original input order; mask keeps exactly N of every M permuted inputs."""
    rows, k = values.shape
    n, m = pattern.n, pattern.m
    order = np.arange(k) if perm is None else np.asarray(perm)
    # in the permuted order (no copy without a permutation: these are the large arrays)
    mask_p = mask if perm is None else mask[:, order]
    values_p = values if perm is None else values[:, order]
    keep = mask_p.reshape(rows, k // m, m)
    if not (keep.sum(axis=-1) == n).all():
        raise ValueError(f"the mask does not keep exactly {pattern} in the permuted order")
    # with exactly N kept per group, row-major order lists each group's kept values and their
    # positions ascending, group after group
    pos = np.nonzero(keep.reshape(-1, m))[1].reshape(rows, -1)
    kept = values_p[mask_p].reshape(rows, -1)
    bits = index_bits(m)
    per_byte = 8 // bits
    flat = pos.reshape(rows, -1).astype(np.uint16)
    flat = np.pad(flat, ((0, 0), (0, (-flat.shape[1]) % per_byte)))
    shifts = (np.arange(per_byte, dtype=np.uint16) * bits)[None, None, :]
    idx = (flat.reshape(rows, -1, per_byte) << shifts).sum(axis=-1).astype(np.uint8)
    assert idx.shape[1] == index_row_bytes(k, pattern)
    return Packed(kept.astype(np.float32), idx, None if perm is None else order.astype(np.int32))


def positions(idx: np.ndarray, kept_per_row: int, m: int) -> np.ndarray:
    """(rows, kept_per_row) positions inside their groups, read back from the packed index."""
    bits = index_bits(m)
    per_byte = 8 // bits
    shifts = (np.arange(per_byte, dtype=np.uint8) * bits)[None, None, :]
    fields = (idx[:, :, None] >> shifts) & ((1 << bits) - 1)
    return fields.reshape(idx.shape[0], -1)[:, :kept_per_row].astype(np.int64)


def unpack(kept: np.ndarray, idx: np.ndarray, perm: np.ndarray | None, k: int, pattern: Pattern) -> np.ndarray:
    """The masked dense weight (rows, k) in original input order that a packed copy stands for."""
    rows, kn = kept.shape
    pos = positions(idx, kn, pattern.m)
    group = np.arange(kn) // pattern.n
    dense = np.zeros((rows, k), dtype=np.float32)
    permuted = group[None, :] * pattern.m + pos
    order = np.arange(k) if perm is None else np.asarray(perm)
    np.put_along_axis(dense, order[permuted], kept, axis=1)
    return dense


def quantize_kept(kept: np.ndarray, qtype) -> np.ndarray:
    """The kept values in the gguf-py numpy layout of qtype (ggml's own quantizer for blocks)."""
    qtype = T(qtype)
    if qtype == T.F32:
        return kept.astype(np.float32)
    if qtype == T.F16:
        return kept.astype(np.float16)
    from ggufsparse.format import ggml_quant

    return ggml_quant.quantize(kept, qtype)


def blocks_expand(qtype, pattern: Pattern) -> bool:
    """Whether kept values of qtype become dense blocks of the same type exactly: Q8_0 and Q4_0
    where N divides M and 32 (every 32 kept values then come from exactly M/N dense blocks, which
    take their scale). The runtime's ggml_nm_expand follows the same rule for packed-only files."""
    return T(qtype) in (T.Q8_0, T.Q4_0) and pattern.m % pattern.n == 0 and 32 % pattern.n == 0


def runtime_expands(qtype, pattern: Pattern) -> bool:
    """Whether the runtime can expand kept values of qtype to a dense weight for prompts (files
    stored packed only): F32, F16 and BF16 always, Q8_0 and Q4_0 as `blocks_expand`."""
    return T(qtype) in (T.F32, T.F16, T.BF16) or blocks_expand(qtype, pattern)


def expandable(qtype, perm: np.ndarray | None, pattern: Pattern) -> bool:
    """Whether `expand_blocks` can write the zeroed weight (original input order) in the kept
    values' own blocks: `blocks_expand` without a permutation."""
    return perm is None and blocks_expand(qtype, pattern)


def expand_blocks(data: np.ndarray, idx: np.ndarray, k: int, pattern: Pattern, qtype) -> np.ndarray:
    """The zeroed weight (rows, k) as qtype bytes, exactly the packed blocks' values: every dense
    block takes the scale of the packed block its kept values come from, and zeros elsewhere (an
    exact rearrangement of the same quantized values, no rounding)."""
    qtype = T(qtype)
    rows = data.shape[0]
    kn = k // pattern.m * pattern.n
    blocks = data.reshape(rows, kn // 32, -1)
    scale = blocks[:, :, :2].copy().view(np.float16)[:, :, 0]
    if qtype == T.Q8_0:
        q = blocks[:, :, 2:].view(np.int8).reshape(rows, kn).astype(np.int16)
    else:  # Q4_0: low nibbles hold values 0-15 of a block, high nibbles 16-31, offset by 8
        nib = blocks[:, :, 2:]
        q = np.concatenate([nib & 0x0F, nib >> 4], axis=-1).reshape(rows, kn).astype(np.int16) - 8
    pos = positions(idx, kn, pattern.m)
    cols = (np.arange(kn) // pattern.n)[None, :] * pattern.m + pos
    dense = np.zeros((rows, k), dtype=np.int16)
    np.put_along_axis(dense, cols, q, axis=1)
    dense = dense.reshape(rows, k // 32, 32)
    dense_scale = scale[:, (np.arange(k // 32) * pattern.n) // pattern.m]
    if qtype == T.Q8_0:
        body = dense.astype(np.int8).view(np.uint8)
    else:
        u = (dense + 8).astype(np.uint8)
        body = u[:, :, :16] | (u[:, :, 16:] << 4)
    out = np.concatenate([dense_scale[:, :, None].astype(np.float16).view(np.uint8).reshape(rows, k // 32, 2), body],
                         axis=-1)
    return np.ascontiguousarray(out.reshape(rows, -1))


def kept_as_stored(data: np.ndarray, qtype) -> np.ndarray:
    """float32 values of stored kept values (what the runtime multiplies)."""
    return dequantize_rows(data, T(qtype)).astype(np.float32)
