"""A second cut at the down projection's input, after CHESS's or CATS's channel thresholds.

The gate's thresholds decide which channels are computed at all (a row of ffn_up and a column of
ffn_down each). Of the channels they keep, many products h_i = act(gate_i) * up_i are still small,
because up_i is; one tensor-wise threshold on |h| (as TEAL's on down's input) lets ffn_down skip
those columns too. At the same weights skipped, a lower gate level plus this cut loses less than
the gate level alone (docs/allocation.md): the cut ranks by the product itself, the gate by
|act(gate)| with up's mean in its place.

t is the level-quantile of |h| over the calibration tokens and channels, the gate's zeros
included (they are zero at down's input too), so `level` is the fraction of ffn_down's inputs that
are zero on calibration text; it is at least the gate's own level.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _products(mlp, inputs: list[torch.Tensor], theta: np.ndarray) -> torch.Tensor:
    """|h| for every calibration token and channel, with the gate's thresholds applied: [tokens * n_ff]."""
    th = torch.from_numpy(np.asarray(theta, dtype=np.float32))
    out = []
    with torch.inference_mode():
        for x in inputs:
            a = mlp.act_fn(mlp.gate_proj(x))
            h = torch.where(a.abs() > th.to(a.dtype), a * mlp.up_proj(x), torch.zeros_like(a))
            out.append(h.abs().float().reshape(-1))
    return torch.cat(out)


def down_input_threshold(mlp, inputs: list[torch.Tensor], theta: np.ndarray, level: float) -> tuple[float, float]:
    """(threshold t on |h| at ffn_down's input, fraction of calibration entries of h at or below t).

    mlp: the layer's FFN module (gate_proj, up_proj, act_fn); inputs: its calibration inputs;
    theta: the layer's channel thresholds (channel i kept iff |act(gate_i)| > theta_i).
    """
    h = _products(mlp, inputs, theta)
    if level <= 0.0 or h.numel() == 0:
        return 0.0, float((h == 0).float().mean()) if h.numel() else 0.0
    k = min(h.numel(), max(1, math.ceil(level * h.numel())))
    t = float(np.float32(torch.kthvalue(h, k).values))
    return t, float((h <= t).float().mean())
