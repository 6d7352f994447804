"""Per-layer allocation on made-up sensitivities: the Lagrangian optimum, the budget in weights."""

from __future__ import annotations

import numpy as np
import pytest
from ggufsparse.reference import allocate
from ggufsparse.reference.sensitivity import Sensitivity, Site

GRID = np.round(np.arange(0, 0.951, 0.025), 6)
HALF = int(np.flatnonzero(GRID == 0.5)[0])


def quadratic_sites(costs: list[float], params: list[int]) -> Sensitivity:
    """Sites whose predicted KL at level x is cost * x^2."""
    kl = np.array([c * GRID ** 2 for c in costs])
    return Sensitivity([Site(k, "ffn", p) for k, p in enumerate(params)], GRID, kl)


def test_allocation_reaches_the_lagrangian_optimum():
    # minimise x1^2 + 3 x2^2 with x1 + x2 = 1: x1 = 3/4, x2 = 1/4
    table = quadratic_sites([1.0, 3.0], [100, 100])
    chosen = allocate.lagrangian(table, np.array([HALF, HALF]))
    assert list(GRID[chosen.levels]) == [0.75, 0.25]
    assert chosen.predicted_kl == pytest.approx(0.75)
    assert chosen.uniform_kl == pytest.approx(1.0)


def test_budget_counts_weights_not_sites():
    # equal costs, the second site three times larger: minimise x1^2 + x2^2 with x1 + 3 x2 = 2
    table = quadratic_sites([1.0, 1.0], [100, 300])
    chosen = allocate.lagrangian(table, np.array([HALF, HALF]))
    x = GRID[chosen.levels]
    assert abs(x[0] - 0.2) <= 0.025 and abs(x[1] - 0.6) <= 0.025
    assert 200 - 1e-6 <= 100 * x[0] + 300 * x[1] <= 200 + 300 * 0.025


def test_a_site_that_costs_nothing_takes_the_top_level():
    table = quadratic_sites([0.0, 1.0, 1.0], [100, 100, 100])
    chosen = allocate.lagrangian(table, np.array([HALF, HALF, HALF]))
    x = GRID[chosen.levels]
    assert x[0] == GRID[-1] and x[1] == x[2] and x.sum() >= 1.5 - 1e-9
