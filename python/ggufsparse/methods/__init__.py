"""Sparsity methods: each turns calibration statistics into thresholds or masks, nothing else.

Every FFN activation method is one function `ffn_thresholds(stats, sparsity) -> Thresholds`; the
selective attention thresholds of CHESS are `attention.input_threshold`; the N:M weight methods
are in `nm`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ggufsparse.format.nm_pattern import Pattern, parse_pattern  # noqa: F401 (the N:M methods' pattern)

# A channel that never fires on calibration data gets this threshold: never active.
NEVER = np.float32(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Thresholds:
    theta: np.ndarray  # float32, one per FFN channel: channel i is active iff |act(gate)_i| > theta_i
    sparsity: float  # fraction of channel activations at or below theta on the calibration tokens


FFN_METHODS = ("chess", "cats")
# thresholds on projection inputs (methods/teal.py): every projection, or CHESS's FFN + TEAL attention
TEAL_METHODS = ("teal", "chess+teal")
TEAL_ALLOCATIONS = ("greedy", "uniform")
# N:M weight pruning (methods/nm.py): the score each method ranks weights by
NM_METHODS = ("magnitude", "wanda", "esparse")
# CHESS's FFN channel and q/output input thresholds calibrated on an E-Sparse N:M-pruned model
NM_COMBINED_METHODS = ("chess+esparse",)
CHESS_NORMS = ("l2", "l1")
# a ReLU-family checkpoint's own zeros (ProSparse): no calibration, the activation's threshold
ACTIVATION_METHODS = ("prosparse",)
# N:M: the channel reorderings before choosing, and the pattern (methods/nm.py)
SHUFFLES = ("none", "global", "global+local")
