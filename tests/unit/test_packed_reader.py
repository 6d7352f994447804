"""The reader of packed transposed weights (tests/integration/packed_layout.py) against gguf-py,
without the runtime: random raw weights, packed by a second packer written here from the byte
rules of docs/format.md ("Packed transposed weights"); and which weights get packed, and as what."""

from __future__ import annotations

import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T
from ggufsparse.format.transpose import PACKABLE, packed_type
from random_blocks import random_weight

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from packed_layout import PER_OUTPUT, dequantize_packed, unpack
from packed_layout import packed_type as read_packed_type


def _blocks(raw, qtype):
    """(n_out, n_blocks, block bytes) of a raw weight."""
    return raw.reshape(raw.shape[0], -1, GGML_QUANT_SIZES[qtype][1])


def _f16(b, at):
    return np.ascontiguousarray(b[..., at: at + 2]).view(np.float16)[..., 0]


def _decode(raw, qtype):
    """The fields of each block (output j, block c), read with ggml's own per-value rules:
    d, dmin (j, c) f16; sc, mn (j, c, 8) (Q6_K: sc (j, c, 16) int8); q (j, c, inputs) the
    quantized values (Q4_0, Q8_0: as stored, Q8_0 int8; the K-quants: 4, 5 or 6 bits)."""
    b = _blocks(raw, qtype)
    n_out, n_blocks = b.shape[:2]
    if qtype == T.Q8_0:
        return {"d": _f16(b, 0), "q": b[..., 2:].view(np.int8)}
    if qtype in (T.Q4_0, T.Q4_1):
        qs = b[..., -16:]
        q = np.concatenate([qs & 15, qs >> 4], axis=2)  # input l low nibble, l+16 high
        f = {"d": _f16(b, 0), "q": q}
        if qtype == T.Q4_1:
            f["m"] = _f16(b, 2)
        return f
    q = np.zeros((n_out, n_blocks, 256), dtype=np.uint8)
    if qtype == T.Q6_K:
        ql, qh, sc = b[..., :128], b[..., 128:192], b[..., 192:208].view(np.int8)
        for i in range(256):
            half, quarter, l = i // 128, (i % 128) // 32, i % 32
            low4 = (ql[..., 64 * half + l + 32 * (quarter & 1)] >> (4 if quarter >= 2 else 0)) & 15
            high2 = (qh[..., 32 * half + l] >> (2 * quarter)) & 3
            q[..., i] = low4 | (high2 << 4)
            assert 8 * half + 2 * quarter + l // 16 == i // 16  # the scale index
        return {"d": _f16(b, 208), "sc": sc, "q": q}
    s = b[..., 4:16]  # get_scale_min_k4
    sc = np.zeros((n_out, n_blocks, 8), dtype=np.uint8)
    mn = np.zeros_like(sc)
    for j in range(8):
        if j < 4:
            sc[..., j], mn[..., j] = s[..., j] & 63, s[..., j + 4] & 63
        else:
            sc[..., j] = (s[..., j + 4] & 0xF) | ((s[..., j - 4] >> 6) << 4)
            mn[..., j] = (s[..., j + 4] >> 4) | ((s[..., j] >> 6) << 4)
    qs = b[..., -128:]
    for i in range(256):
        sub, l = i // 32, i % 32
        q[..., i] = (qs[..., 32 * (sub // 2) + l] >> (4 * (sub % 2))) & 15
        if qtype == T.Q5_K:
            q[..., i] |= ((b[..., 16 + l] >> sub) & 1) << 4
    return {"d": _f16(b, 0), "dmin": _f16(b, 2), "sc": sc, "mn": mn, "q": q}


def _values(f, qtype):
    """float32 (n_out, n_in) from the decoded fields, in gguf-py's order of float operations."""
    d = f["d"].astype(np.float32)[..., None]
    if qtype == T.Q6_K:
        scale = np.repeat(d * f["sc"].astype(np.float32), 16, axis=2)
        w = scale * (f["q"].astype(np.float32) - 32)
    elif qtype in (T.Q4_K, T.Q5_K):
        scale = np.repeat(d * f["sc"].astype(np.float32), 32, axis=2)
        dm = np.repeat(f["dmin"].astype(np.float32)[..., None] * f["mn"].astype(np.float32), 32, axis=2)
        w = scale * f["q"].astype(np.float32) - dm
    else:
        return None  # gguf-py's own dequantization is used for these
    return w.reshape(w.shape[0], -1)


def _pack(raw, qtype, n_in, n_out):
    """The packed layout, byte by byte as docs/format.md describes it."""
    f = _decode(raw, qtype)
    n_cols = n_in // PACKABLE[qtype]
    out = np.zeros((n_cols, PER_OUTPUT[qtype] * n_out), dtype=np.uint8)
    n = n_out

    def put_f16(c, at, values):  # values (n,) f16 of column c at byte `at`
        out[c, at: at + 2 * n] = values.astype(np.float16).view(np.uint8)

    def put_nibbles(c, at, q, span):  # q (inputs, n) 4-bit: rows of n/2 bytes, span/2 per span
        half = span // 2
        for j in range(n):
            g, k = j // span, j % span
            byte = at + half * g + k % half + np.arange(q.shape[0]) * (n // 2)
            out[c, byte] |= (q[:, j] & 15) << (4 if k >= half else 0)

    for c in range(n_cols):
        d = f["d"][:, c]
        put_f16(c, 0, d)
        q = f["q"][:, c, :].T  # (inputs of the column, n)
        if qtype == T.Q8_0:
            out[c, 2 * n:] = q.view(np.uint8).reshape(-1)
        elif qtype in (T.Q4_0, T.Q4_1):
            at = 2 * n
            if qtype == T.Q4_1:
                put_f16(c, at, f["m"][:, c])
                at += 2 * n
            put_nibbles(c, at, q, 32)
        elif qtype == T.Q6_K:
            out[c, 2 * n: 18 * n] = f["sc"][:, c, :].T.reshape(-1).view(np.uint8)  # sc[16][n]
            put_nibbles(c, 18 * n, q & 15, 64)
            high = q >> 4
            for j in range(n):  # 16 bytes per 64 outputs: output k at bits 2*(k/16), +1 of byte k%16
                g, k = j // 64, j % 64
                byte = 146 * n + 16 * g + k % 16 + np.arange(256) * (n // 4)
                out[c, byte] |= high[:, j] << (2 * (k // 16))
        else:
            put_f16(c, 2 * n, f["dmin"][:, c])
            out[c, 4 * n: 12 * n] = f["sc"][:, c, :].T.reshape(-1)  # sc[8][n]
            out[c, 12 * n: 20 * n] = f["mn"][:, c, :].T.reshape(-1)
            put_nibbles(c, 20 * n, q & 15, 64)
            if qtype == T.Q5_K:
                for j in range(n):
                    byte = 148 * n + j // 8 + np.arange(256) * (n // 8)
                    out[c, byte] |= (q[:, j] >> 4) << (j % 8)
    return out.view(np.int8)


K_TYPES = [T.Q4_K, T.Q5_K, T.Q6_K]
ALL_TYPES = [T.Q4_0, T.Q4_1, T.Q8_0, *K_TYPES]


@pytest.mark.parametrize("qtype", K_TYPES)
def test_the_per_value_rules_read_what_gguf_py_dequantizes(qtype):
    """ggml's bit rules that the packer below follows, checked against gguf-py (the ground truth)."""
    raw = random_weight(qtype, n_out=32, n_in=512, seed=3)
    np.testing.assert_array_equal(_values(_decode(raw, qtype), qtype), gguf.dequantize(raw, qtype))


# the K-quants need a multiple of 64 outputs (spans of 64 in their quant rows), the others of 32
CASES = [(q, 512, 96) for q in ALL_TYPES if q not in K_TYPES] + [
    (q, 256, 32) for q in ALL_TYPES if q not in K_TYPES] + [
    (q, 512, 192) for q in ALL_TYPES] + [(q, 256, 64) for q in ALL_TYPES]


@pytest.mark.parametrize(("qtype", "n_in", "n_out"), CASES)
def test_reader_gives_gguf_py_values_and_the_original_blocks(qtype, n_in, n_out):
    raw = random_weight(qtype, n_out, n_in, seed=n_out + int(qtype))
    packed = _pack(raw, qtype, n_in, n_out)
    assert packed.shape == (n_in // PACKABLE[qtype], PER_OUTPUT[qtype] * n_out)
    values, read_type = dequantize_packed(packed, n_out)
    assert read_type == qtype
    assert values.dtype == np.float32 and values.shape == (n_out, n_in)
    np.testing.assert_array_equal(values, gguf.dequantize(raw, qtype))
    blocks, unpacked_type = unpack(packed, n_out)
    assert unpacked_type == qtype
    np.testing.assert_array_equal(blocks, raw)


def test_reader_refuses_a_column_size_of_no_type():
    with pytest.raises(ValueError, match="no packed type"):
        dequantize_packed(np.zeros((2, 100 * 32), dtype=np.int8), 32)


@pytest.mark.parametrize("qtype", K_TYPES)
def test_k_quants_need_a_multiple_of_64_outputs(qtype):
    """96 outputs: a whole number of 32-output spans but not of 64, so neither the reader nor the
    converter's rule takes a K-quant packed as itself (the runtime's column size is 0 there)."""
    assert read_packed_type(PER_OUTPUT[qtype] * 64, 64) == qtype
    with pytest.raises(ValueError, match="no packed type"):
        read_packed_type(PER_OUTPUT[qtype] * 96, 96)
    with pytest.raises(ValueError, match="no packed type"):
        unpack(np.zeros((2, PER_OUTPUT[qtype] * 96), dtype=np.int8), 96)
    assert packed_type(qtype, 1536, 96) != qtype


@pytest.mark.parametrize(("source", "n_in", "n_out", "want"), [
    (T.Q4_K, 1536, 1536, T.Q4_K),
    (T.Q6_K, 8960, 1536, T.Q6_K),  # Qwen2.5-1.5B's ffn_down: 35 super-blocks per row
    (T.Q5_K, 1536, 256, T.Q5_K),
    (T.Q4_K, 576, 1536, T.Q4_1),  # rows of 576 are not whole super-blocks: requantised fallback
    (T.Q6_K, 640, 2048, T.Q8_0),
    (T.Q5_K, 640, 2048, T.Q8_0),
    (T.Q3_K, 1536, 1536, T.Q4_0),  # Q2_K and Q3_K are always requantised
    (T.Q2_K, 1536, 1536, T.Q4_0),
    (T.Q4_K, 1536, 48, None),  # outputs not a multiple of 32
    (T.Q4_K, 1536, 96, T.Q4_1),  # a K-quant needs a multiple of 64 outputs: requantised fallback
    (T.Q6_K, 1536, 96, T.Q8_0),
    (T.Q5_K, 1536, 96, T.Q8_0),
    (T.Q5_0, 576, 576, T.Q8_0),  # llama-quantize's fallback where 256 does not divide a row
    (T.Q5_1, 576, 1536, T.Q8_0),
    (T.Q4_K, 1536, 64, T.Q4_K),
    (T.Q3_K, 1536, 96, T.Q4_0),  # Q4_0 needs only a multiple of 32
    (T.Q8_0, 64, 48, None),
    (T.Q4_0, 96, 64, T.Q4_0),
    (T.F16, 1536, 1536, None),
    (T.F32, 1536, 1536, None),
])
def test_packed_type(source, n_in, n_out, want):
    assert packed_type(source, n_in, n_out) == want
