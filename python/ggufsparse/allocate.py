"""Choose a sparsity level per site that minimises the predicted KL at a parameter budget.

Greedy on the predicted KL of sensitivity.Contributions (cross-site terms included): from every
site dense, repeatedly raise by one grid step the site whose step adds the least predicted KL per
weight skipped, until the skipped weights reach the budget; then exchange passes move one step
from one site to another while that lowers the predicted KL without going under the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ggufsparse.sensitivity import Contributions


@dataclass(frozen=True)
class Allocation:
    levels: np.ndarray  # grid index per site
    predicted_kl: float
    uniform_kl: float  # predicted KL of the uniform levels with the same budget

    def fractions(self, grid: np.ndarray) -> np.ndarray:
        return grid[self.levels]


def _step_costs(c: Contributions, levels: np.ndarray, z: torch.Tensor, direction: int) -> torch.Tensor:
    """Change of predicted KL if each site moved one grid step (inf where it cannot)."""
    top = len(c.grid) - 1
    out = torch.full((len(levels),), float("inf"), dtype=torch.float64)
    for n, j in enumerate(levels):
        k = j + direction
        if 0 <= k <= top:
            d = (c.values[n][k] - c.values[n][j]).double()
            out[n] = float((2 * z * d + d * d).mean()) / 2
    return out


def greedy(c: Contributions, uniform: np.ndarray, max_exchanges: int = 1000) -> Allocation:
    """uniform: grid index per site of the plain method's levels; they fix the budget."""
    params = np.array([s.params for s in c.sites], dtype=np.float64)
    steps = np.diff(c.grid)
    budget = float((params * c.grid[uniform]).sum())
    levels = np.zeros(len(c.sites), dtype=np.int64)
    z = c.z(levels).double()
    skipped = 0.0
    while skipped < budget - 1e-9:
        cost = _step_costs(c, levels, z, +1).numpy()
        gain = np.where(levels < len(c.grid) - 1, params * steps[np.minimum(levels, len(steps) - 1)], 0.0)
        n = int(np.argmin(np.where(gain > 0, cost / np.maximum(gain, 1e-30), np.inf)))
        if not np.isfinite(cost[n]):
            break  # every site at the top level
        z += (c.values[n][levels[n] + 1] - c.values[n][levels[n]]).double()
        skipped += gain[n]
        levels[n] += 1
    for _ in range(max_exchanges):
        down = _step_costs(c, levels, z, -1).numpy()  # usually negative: KL saved
        up = _step_costs(c, levels, z, +1).numpy()
        freed = np.where(levels > 0, params * steps[np.maximum(levels - 1, 0)], 0.0)
        taken = np.where(levels < len(c.grid) - 1, params * steps[np.minimum(levels, len(steps) - 1)], np.inf)
        # lower site a, raise site b; the budget must still be met, and a != b
        ok = (skipped - freed[:, None] + taken[None, :] >= budget - 1e-9) & ~np.eye(len(levels), dtype=bool)
        delta = np.where(ok, down[:, None] + up[None, :], np.inf)
        a, b = np.unravel_index(int(np.argmin(delta)), delta.shape)
        if not delta[a, b] < -1e-12 * max(1.0, c.predicted_kl(levels)):
            break
        trial = levels.copy()
        trial[a] -= 1
        trial[b] += 1
        z_trial = c.z(trial).double()
        # the pair's cost above ignored the two moves' cross term: keep the exchange only if it pays
        if float((z_trial ** 2).mean()) >= float((z ** 2).mean()):
            break
        levels, z = trial, z_trial
        skipped += taken[b] - freed[a]
    return Allocation(levels, c.predicted_kl(levels), c.predicted_kl(uniform))
