"""N:M packed copies without the runtime: packing and unpacking, the positions' bit layout, the kept values' type,
the storage a recipe chooses."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from ggufsparse.format import nm_pack
from ggufsparse.methods.nm import Pattern, nm_mask

T = gguf.GGMLQuantizationType


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (3, 16), (1, 2)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_pack_then_unpack_gives_the_masked_weight(n, m, shuffle):
    rng = np.random.default_rng(100 * n + m)
    rows, k = 7, 12 * m
    w = rng.standard_normal((rows, k)).astype(np.float32)
    perm = rng.permutation(k) if shuffle else None
    mask = nm_mask(np.abs(w), Pattern(n, m), perm)
    packed = nm_pack.pack(w * mask, mask, perm, Pattern(n, m))
    assert packed.kept.shape == (rows, k // m * n)
    assert packed.idx.shape == (rows, nm_pack.index_row_bytes(k, Pattern(n, m)))
    np.testing.assert_array_equal(nm_pack.unpack(packed.kept, packed.idx, packed.perm, k, Pattern(n, m)), w * mask)


def test_positions_are_little_endian_fields_along_the_row():
    # 2:4, inputs 1 and 3 of group 0, 0 and 2 of group 1: fields 1, 3, 0, 2 from bit 0 up
    mask = np.array([[0, 1, 0, 1, 1, 0, 1, 0]], dtype=bool)
    packed = nm_pack.pack(np.arange(8, dtype=np.float32)[None] * mask, mask, None, Pattern(2, 4))
    assert packed.idx.tolist() == [[0b10_00_11_01]]
    assert packed.kept.tolist() == [[1, 3, 4, 6]]
    # 1:8 has 4-bit fields: input 5 of group 0, input 2 of group 1
    mask = np.zeros((1, 16), dtype=bool)
    mask[0, [5, 10]] = True
    assert nm_pack.pack(mask.astype(np.float32), mask, None, Pattern(1, 8)).idx.tolist() == [[0x25]]


def test_a_mask_that_is_not_n_of_m_is_refused():
    mask = np.array([[1, 1, 1, 0]], dtype=bool)
    with pytest.raises(ValueError, match="2:4"):
        nm_pack.pack(mask.astype(np.float32), mask, None, Pattern(2, 4))


def test_kept_values_stay_in_a_type_with_a_fast_path_or_become_q8_0():
    assert nm_pack.packed_type(T.F16, 288) == T.F16
    assert nm_pack.packed_type(T.Q8_0, 288) == T.Q8_0
    assert nm_pack.packed_type(T.Q4_0, 288) == T.Q4_0
    assert nm_pack.packed_type(T.Q4_1, 288) == T.Q8_0
    assert nm_pack.packed_type(T.Q4_K, 1024) == T.Q8_0
    assert nm_pack.packed_type(T.Q8_0, 40) == T.F16  # no whole 32-blocks


def test_chess_on_esparse_refuses_packed_only_storage():
    from ggufsparse.errors import UserError
    from ggufsparse.pipeline.recipe import NMSection, Recipe

    assert Recipe(method="esparse").storage == "packed"
    assert Recipe(method="chess+esparse").storage == "masked+packed"
    with pytest.raises(UserError, match="masked\\+packed"):
        Recipe(method="chess+esparse", nm=NMSection(storage="packed")).validate()
