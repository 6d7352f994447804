"""An N:M pattern (keep N of every M consecutive inputs of a weight row): what the N:M methods choose,
what the packed copies store (nm_pack.py) and what `ggufsparse.nm.pattern` records."""

from __future__ import annotations

from dataclasses import dataclass

from ggufsparse.errors import UserError


@dataclass(frozen=True)
class Pattern:
    n: int
    m: int

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def density(self) -> float:
        return self.n / self.m


def parse_pattern(text: str) -> Pattern:
    try:
        n, m = (int(v) for v in text.split(":"))
    except ValueError:
        raise UserError(f"--nm {text}: give N:M, e.g. 2:4") from None
    if not 1 <= n < m <= 16:
        raise UserError(f"--nm {text}: need 1 <= N < M <= 16")
    return Pattern(n, m)
