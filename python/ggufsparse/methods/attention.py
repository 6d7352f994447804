"""CHESS selective sparsification (He et al., arXiv 2409.01366, section 3.3).

One tensor-wise threshold on the input of the attention q projection and one on the input of
the output projection: t = Quantile_k(|x|) over calibration tokens and channels; entries with
|x| <= t are dropped. k and v projections keep the dense input.
"""

from __future__ import annotations

import numpy as np

from ggufsparse.calib.stats import CDF, LogHistograms, solve_log


def input_threshold(hist: LogHistograms, sparsity: float) -> tuple[float, float]:
    """(threshold, fraction of calibration inputs at or below it)."""
    if sparsity == 0.0:
        return 0.0, 0.0
    table = CDF(hist.table())
    t = solve_log(lambda x: float(table(x)[0]), sparsity)
    return float(np.float32(t)), float(table(t)[0])
