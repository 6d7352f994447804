"""Transposed copies: packed ones hold the original blocks exactly; K-quants are requantised to a
packable type along their rows; shapes that cannot be packed get a plain transposed copy (float
weights: tests/unit/test_transpose_float.py)."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from ggufsparse.format import ggml_quant
from ggufsparse.format.transpose import transposed
from packed_layout import unpack

pytestmark = [pytest.mark.runtime]


def _weight(qtype, n_out: int, n_in: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ggml_quant.quantize(rng.normal(0, 0.05, (n_out, n_in)).astype(np.float32), qtype)


@pytest.mark.parametrize("qtype", [T.Q4_0, T.Q4_1, T.Q8_0])
def test_packed_copy_holds_the_original_blocks(qtype, runtime):
    raw = _weight(qtype, n_out=96, n_in=160)
    data, out_type = transposed(raw, qtype)
    assert out_type == T.I8
    assert data.shape == (160 // 32, ggml_quant.packed_column_size(qtype, 96))
    blocks, read_type = unpack(data, n_out=96)
    assert read_type == qtype
    np.testing.assert_array_equal(blocks, raw.view(np.uint8))


@pytest.mark.parametrize("qtype", [T.Q4_K, T.Q5_K, T.Q6_K])
def test_packed_k_quant_copy_holds_the_original_super_blocks(qtype, runtime):
    raw = _weight(qtype, n_out=64, n_in=512, seed=2)
    data, out_type = transposed(raw, qtype)
    assert out_type == T.I8
    assert data.shape == (512 // 256, ggml_quant.packed_column_size(qtype, 64))
    blocks, read_type = unpack(data, n_out=64)
    assert read_type == qtype
    np.testing.assert_array_equal(blocks, raw.view(np.uint8))


@pytest.mark.parametrize(("qtype", "packed_as"), [(T.Q3_K, T.Q4_0), (T.Q2_K, T.Q4_0)])
def test_k_quant_is_requantised_along_its_rows_and_packed(qtype, packed_as, runtime):
    raw = _weight(qtype, n_out=64, n_in=512, seed=1)
    data, out_type = transposed(raw, qtype)
    assert out_type == T.I8
    blocks, read_type = unpack(data, n_out=64)
    assert read_type == packed_as
    original = gguf.dequantize(raw, qtype)
    back = gguf.dequantize(blocks, packed_as)
    # the packed type is at least as precise as the source: errors of one requantisation step
    step = np.abs(original).max() / (127 if packed_as == T.Q8_0 else 7)
    assert np.abs(back - original).max() < step
    assert np.corrcoef(back.ravel(), original.ravel())[0, 1] > 0.99


def test_outputs_not_a_multiple_of_32_get_an_f16_transposed_copy(runtime):
    raw = _weight(T.Q8_0, n_out=48, n_in=64)
    data, out_type = transposed(raw, T.Q8_0)
    assert out_type == T.F16  # no 32-wide block divides the 48 outputs of a row
    np.testing.assert_allclose(data.astype(np.float32), gguf.dequantize(raw, T.Q8_0).T, rtol=1e-3, atol=1e-4)


def test_unpackable_type_gets_a_requantised_row_copy(runtime):
    raw = _weight(T.IQ4_NL, n_out=64, n_in=96)  # no packed layout, no fallback
    data, out_type = transposed(raw, T.IQ4_NL)
    assert out_type == T.IQ4_NL
    back = gguf.dequantize(data, out_type)
    original = gguf.dequantize(raw, T.IQ4_NL)
    assert back.shape == (96, 64)
    assert np.abs(back - original.T).max() < np.abs(original).max() / 7


def test_q5_0_is_requantised_along_its_rows_to_q8_0_and_packed(runtime):
    """llama-quantize's K mixes fall back to Q5_0 where 256 does not divide a row: the copy is
    Q8_0 along the original rows (within 1/16 of a Q5 step), not Q5_0 along the transposed ones."""
    raw = _weight(T.Q5_0, n_out=64, n_in=96)
    data, out_type = transposed(raw, T.Q5_0)
    assert out_type == T.I8
    blocks, read_type = unpack(data, n_out=64)
    assert read_type == T.Q8_0
    original = gguf.dequantize(raw, T.Q5_0)
    back = gguf.dequantize(blocks, T.Q8_0)
    step = np.abs(original).max(axis=1, keepdims=True) / 15  # a Q5_0 step, per row at most
    assert np.all(np.abs(back - original) <= step / 16 + 1e-6)


