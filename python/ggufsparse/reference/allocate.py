"""Choose a sparsity level per site that minimises the predicted KL at a parameter budget.

The predicted KL is the sum of the sites' own terms (sensitivity.Sensitivity), so the problem
separates: for a price lam per skipped weight, each site takes the level minimising
kl_n(level) - lam * params_n * level, and the smallest lam whose choices skip at least the
budget is found by bisection (Lagrangian relaxation; exact on the lower convex hull of each
site's curve, which is where a sum of convex-ish costs wants to be), then topped up greedily.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ggufsparse.reference.sensitivity import Sensitivity


@dataclass(frozen=True)
class Allocation:
    levels: np.ndarray  # grid index per site
    predicted_kl: float
    uniform_kl: float  # predicted KL of the uniform levels with the same budget


def lagrangian(table: Sensitivity, uniform: np.ndarray, iterations: int = 200) -> Allocation:
    """uniform: grid index per site of the plain method's levels; they fix the budget."""
    params = np.array([s.params for s in table.sites], dtype=np.float64)
    grid = table.grid
    budget = float((params * grid[uniform]).sum())
    # scale prices to the table so the bisection range is the same for every model
    unit = max(float(table.kl.max()), 1e-30) / max(float(params.max()), 1.0)

    def choose(lam: float) -> np.ndarray:
        return np.argmin(table.kl - lam * unit * params[:, None] * grid[None, :], axis=1)

    def skipped(levels: np.ndarray) -> float:
        return float((params * grid[levels]).sum())

    lo, hi = 0.0, 1.0
    while skipped(choose(hi)) < budget - 1e-9 and hi < 1e12:
        hi *= 2
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if skipped(choose(mid)) < budget - 1e-9:
            lo = mid
        else:
            hi = mid
    # below the budget at lo: fill the rest one grid step at a time, cheapest KL per weight first,
    # so the result overshoots the budget by at most one step of one site
    levels = choose(lo)
    top = len(grid) - 1
    while skipped(levels) < budget - 1e-9 and (levels < top).any():
        up = np.minimum(levels + 1, top)
        rows = np.arange(len(levels))
        cost = (table.kl[rows, up] - table.kl[rows, levels]) / np.maximum(params * (grid[up] - grid[levels]), 1e-30)
        n = int(np.argmin(np.where(levels < top, cost, np.inf)))
        levels[n] += 1
    return Allocation(levels, table.predicted_kl(levels), table.predicted_kl(uniform))
