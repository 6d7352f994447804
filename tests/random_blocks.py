"""Random but valid raw ggml weights, for types gguf-py cannot quantize (the K-quants) as well as
those it can: random bytes in the block structs of ggml-common.h, with finite f16 scales."""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T

# byte offsets of the f16 fields in one block (ggml-common.h):
#   block_q4_0 {d, qs[16]}, block_q4_1 {d, m, qs[16]}, block_q8_0 {d, qs[32]}
#   block_q4_K {d, dmin, scales[12], qs[128]}, block_q5_K {d, dmin, scales[12], qh[32], qs[128]}
#   block_q6_K {ql[128], qh[64], int8 scales[16], d}
F16_FIELDS = {T.Q4_0: (0,), T.Q4_1: (0, 2), T.Q8_0: (0,), T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,)}


def random_weight(qtype, n_out: int, n_in: int, seed: int = 0) -> np.ndarray:
    """uint8 (n_out, row bytes): n_out rows of n_in values in ggml type qtype."""
    qtype = T(qtype)
    block, size = GGML_QUANT_SIZES[qtype]
    assert n_in % block == 0, (n_in, qtype)
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (n_out * n_in // block, size), dtype=np.uint8)
    for at in F16_FIELDS[qtype]:
        # scales of either sign and several magnitudes, as (rarely) in real weights
        value = rng.uniform(0.5, 1.0, len(blocks)) * 10.0 ** rng.integers(-4, -1, len(blocks))
        value *= rng.choice([-1.0, 1.0], len(blocks), p=[0.1, 0.9])
        blocks[:, at: at + 2] = value.astype(np.float16).reshape(-1, 1).view(np.uint8)
    return blocks.reshape(n_out, -1)
