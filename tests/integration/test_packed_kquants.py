"""The runtime's packer (ggml_sparse_pack_transposed) against the independent reader of the packed
layout, for the K-quants packed as themselves: exact copies of the original super-blocks. Their
quant rows hold spans of 64 outputs, so the outputs are a multiple of 64 (192: three spans)."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from ggufsparse.format import ggml_quant
from ggufsparse.format.transpose import packed_type, transposed
from packed_layout import PER_OUTPUT, dequantize_packed, unpack
from random_blocks import random_weight

pytestmark = [pytest.mark.runtime]

N_IN, N_OUT = 512, 192


@pytest.mark.parametrize("qtype", [T.Q4_K, T.Q5_K, T.Q6_K])
def test_packed_k_quant_holds_the_original_values(qtype, runtime):
    raw = random_weight(qtype, N_OUT, N_IN, seed=int(qtype))
    packed = ggml_quant.pack_transposed(raw, qtype, N_IN, N_OUT)
    assert packed.nbytes == N_IN // 256 * PER_OUTPUT[qtype] * N_OUT
    assert packed.shape == (N_IN // 256, PER_OUTPUT[qtype] * N_OUT)
    values, read_type = dequantize_packed(packed, N_OUT)
    assert read_type == qtype
    np.testing.assert_array_equal(values, gguf.dequantize(raw, qtype))
    blocks, _ = unpack(packed, N_OUT)
    np.testing.assert_array_equal(blocks, raw)


@pytest.mark.parametrize("qtype", [T.Q4_K, T.Q5_K, T.Q6_K])
def test_transposed_packs_whole_super_blocks(qtype, runtime):
    raw = random_weight(qtype, N_OUT, N_IN, seed=int(qtype) + 1)
    data, out_type = transposed(raw, qtype)
    assert out_type == T.I8
    np.testing.assert_array_equal(data, ggml_quant.pack_transposed(raw, qtype, N_IN, N_OUT))
    assert ggml_quant.packed_column_size(qtype, N_OUT) == PER_OUTPUT[qtype] * N_OUT
    assert ggml_quant.packed_column_inputs(qtype) == 256


@pytest.mark.parametrize(("qtype", "fallback"), [(T.Q4_K, T.Q4_1), (T.Q5_K, T.Q8_0), (T.Q6_K, T.Q8_0)])
def test_96_outputs_are_not_packable_as_a_k_quant(qtype, fallback, runtime):
    """The runtime and the converter's rule agree: a K-quant of 96 outputs (not a multiple of 64)
    has no packed column; its copy is its requantised fallback, packed where that is packable."""
    assert ggml_quant.packed_column_size(qtype, 96) == 0
    assert packed_type(qtype, N_IN, 96) == fallback
    raw = random_weight(qtype, 96, N_IN, seed=int(qtype) + 2)
    data, out_type = transposed(raw, qtype)
    assert out_type == T.I8
    blocks, read_type = unpack(data, 96)
    assert read_type == fallback
    np.testing.assert_array_equal(blocks, ggml_quant.quantize(gguf.dequantize(raw, qtype), fallback).view(np.uint8))
