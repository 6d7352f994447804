"""CHESS channel-wise thresholding (He et al., arXiv 2409.01366, section 3.2).

The error of dropping channel i of the FFN for one token is ~ (a_gate_i * a_up_i)^2; replacing
a_up_i^2 by its calibration mean m_i gives the score a_gate_i^2 * m_i (paper, eq. 7-9).
  l2 (the paper and its first code):  m_i = E[a_up_i^2],  tau = Quantile_k(a_gate_i^2 * m_i),
                                      theta_i = sqrt(tau / m_i)
  l1 (the authors' later code):       m_i = E|a_up_i|,    tau = Quantile_k(|a_gate_i| * m_i),
                                      theta_i = tau / m_i
The quantile runs over all calibration tokens and channels of the layer. Every channel has the
same token count, so the fraction of scores <= tau is the mean over channels of
P(|a_gate_i| <= theta_i(tau)), which the per-channel histograms give; tau is found by bisection.
"""

from __future__ import annotations

import numpy as np

from ggufsparse.calib.stats import CDF, FFNStats, solve_log
from ggufsparse.methods import NEVER, Thresholds


def _theta(tau: float, m: np.ndarray, norm: str) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.sqrt(tau / m) if norm == "l2" else tau / m


def ffn_thresholds(stats: FFNStats, sparsity: float, norm: str = "l2") -> Thresholds:
    n_ff = stats.n_ff
    if sparsity == 0.0:
        return Thresholds(np.zeros(n_ff, dtype=np.float32), 0.0)
    sums = stats.up_sq_sum if norm == "l2" else stats.up_abs_sum
    m = sums.numpy() / max(stats.tokens, 1)
    table = CDF(stats.gate_hist.table())
    live = m > 0

    def fraction(tau: float) -> float:
        theta = np.where(live, _theta(tau, np.where(live, m, 1.0), norm), np.inf)
        return float(table(theta).mean())

    # the score spans the product of the two ranges: search wide
    tau = solve_log(fraction, sparsity, lo=1e-30, hi=1e30, iterations=120)
    theta = np.where(live, _theta(tau, np.where(live, m, 1.0), norm), np.inf)
    reached = float(table(theta).mean())
    theta32 = np.where(np.isfinite(theta) & (theta < NEVER), theta, NEVER).astype(np.float32)
    return Thresholds(theta32, reached)
