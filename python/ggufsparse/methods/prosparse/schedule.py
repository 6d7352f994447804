"""ProSparse's progressive regularisation factor lambda(t).

Stages i = 1..n end at accumulated steps T_1 < ... < T_n with factors lambda_1..lambda_n. Stage 1
is a warm-up at lambda_1. In stage i > 1, with progress p = (t - T_{i-1}) / (T_i - T_{i-1}),
eta = (sin(-pi/2 + pi * p) + 1) / 2 and lambda(t) = lambda_{i-1} + eta * (lambda_i - lambda_{i-1}):
it leaves lambda_{i-1} and reaches lambda_i with zero slope at both ends (a stage with
lambda_i = lambda_{i-1} holds it). After T_n the factor stays at lambda_n.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from ggufsparse.errors import UserError


@dataclass(frozen=True)
class Stage:
    lam: float  # the factor this stage reaches (the warm-up's constant for the first)
    end: int  # accumulated optimizer steps at the end of the stage


def eta(progress: float) -> float:
    return (math.sin(-math.pi / 2 + math.pi * progress) + 1) / 2


def check(stages: list[Stage]) -> None:
    if not stages:
        raise UserError("a ProSparse schedule needs at least one stage")
    last = 0
    for i, s in enumerate(stages):
        if not (s.lam >= 0 and math.isfinite(s.lam)):
            raise UserError(f"stage {i + 1}: lambda {s.lam} must be a finite number >= 0")
        if s.end <= last:
            raise UserError(f"stage {i + 1} ends at step {s.end}; stages must end at increasing steps above 0")
        last = s.end


def factor(stages: list[Stage], step: int) -> float:
    """lambda at optimizer step `step` (0-based)."""
    if step < stages[0].end:
        return stages[0].lam
    for prev, cur in itertools.pairwise(stages):
        if step < cur.end:
            p = (step - prev.end) / (cur.end - prev.end)
            return prev.lam + eta(p) * (cur.lam - prev.lam)
    return stages[-1].lam


def scaled(shape: list[tuple[float, float]], steps: int) -> list[Stage]:
    """Stages from (lambda, end as a fraction of the run) pairs, for a run of `steps` steps: the
    paper's schedules give the shape, the budget the length."""
    if steps < len(shape):
        raise UserError(f"--steps {steps}: the schedule has {len(shape)} stages; give at least one step each")
    ends, last = [], 0
    for _, frac in shape:
        end = max(last + 1, round(frac * steps))
        ends.append(end)
        last = end
    ends[-1] = max(ends[-1], steps)
    stages = [Stage(float(lam), int(end)) for (lam, _), end in zip(shape, ends)]
    check(stages)
    return stages
