"""CATS (Lee et al., arXiv 2404.08763): one threshold per layer on |act(gate(x))|.

theta = Quantile_k(|a_gate|) over all calibration tokens and channels of the layer (CATS, eq. 3);
every channel shares it.
"""

from __future__ import annotations

import numpy as np

from ggufsparse.calib.stats import CDF, FFNStats, solve_log
from ggufsparse.methods import Thresholds


def ffn_thresholds(stats: FFNStats, sparsity: float) -> Thresholds:
    n_ff = stats.n_ff
    if sparsity == 0.0:
        return Thresholds(np.zeros(n_ff, dtype=np.float32), 0.0)
    merged = CDF(stats.gate_hist.table().sum(axis=0, keepdims=True))
    theta = solve_log(lambda t: float(merged(t)[0]), sparsity)
    reached = float(merged(theta)[0])
    return Thresholds(np.full(n_ff, theta, dtype=np.float32), reached)
