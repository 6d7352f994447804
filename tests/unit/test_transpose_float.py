"""The transposed copy of a float weight: exact, and made without the runtime."""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T
from ggufsparse.format.transpose import transposed


def test_float_weights_are_transposed_exactly():
    w = np.random.default_rng(2).normal(size=(64, 96)).astype(np.float16)
    data, out_type = transposed(w, T.F16)
    assert out_type == T.F16
    np.testing.assert_array_equal(data, w.T)
