"""Paired tests of two methods on the same trials: McNemar's exact test on paired binary outcomes.

Network and reference see the same insertions, so their recovered / lost outcomes are paired: only the
discordant pairs (one recovered, the other lost) carry information about which is better. Under the
null of equal recovery probabilities each discordant pair goes either way with probability 1/2, so the
count b of (network lost, reference recovered) among the n = b + c discordant pairs is Binomial(n, 1/2).
"""

from __future__ import annotations

from math import comb
from typing import Iterable, NamedTuple


class McNemar(NamedTuple):
    """b: pairs where only the first method succeeded; c: only the second; n = b + c discordant pairs;
    p_value: exact two-sided p (1.0 when n = 0)."""

    b: int
    c: int
    n: int
    p_value: float


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b and c:
    min(1, 2 P(X <= min(b, c))) with X ~ Binomial(b + c, 1/2); 1.0 when there is no discordant pair."""
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def mcnemar(first: Iterable[bool], second: Iterable[bool]) -> McNemar:
    """McNemar's exact test on paired outcomes (True = success) of two methods on the same trials."""
    pairs = [(bool(a), bool(b)) for a, b in zip(first, second, strict=True)]
    b = sum(1 for a, o in pairs if a and not o)
    c = sum(1 for a, o in pairs if o and not a)
    return McNemar(b, c, b + c, mcnemar_exact(b, c))


__all__ = ["McNemar", "mcnemar", "mcnemar_exact"]
