"""Paired tests of two methods on the same trials: McNemar's exact test on paired binary outcomes, and its
cluster-valid forms when trials share an image or volume (`clustered_paired`: the per-cluster paired
difference with a t interval and an exact sign-flip test; Obuchowski's clustered McNemar beside it).

Network and reference see the same insertions, so their recovered / lost outcomes are paired: only the
discordant pairs (one recovered, the other lost) carry information about which is better. Under the
null of equal recovery probabilities each discordant pair goes either way with probability 1/2, so the
count b of (network lost, reference recovered) among the n = b + c discordant pairs is Binomial(n, 1/2).
"""

from __future__ import annotations

import math
from math import comb
from typing import Iterable, NamedTuple

import numpy as np


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




# -- clustered paired binary outcomes ------------------------------------------------------------

class ClusteredPaired(NamedTuple):
    """A paired comparison of two methods' binary successes on the same trials, trials grouped in clusters
    (images, volumes): clusters (K), pairs, first / second (success shares over clusters: mean of each
    cluster's share), difference (mean over clusters of the per-cluster difference of shares), ci_low,
    ci_high (`bounded_difference_interval`), p_sign_flip (exact two-sided
    sign-flip test on the per-cluster differences: valid with any number of clusters), p_obuchowski
    (Obuchowski's clustered McNemar, chi-square with one degree of freedom: approximate, needs many
    clusters), b, c (discordant pair counts), p_pooled (the plain exact McNemar counting every pair as
    independent: too small when pairs share a cluster), min_p (the smallest sign-flip p K clusters allow)."""

    clusters: int
    pairs: int
    first: float
    second: float
    difference: float
    ci_low: float
    ci_high: float
    p_sign_flip: float
    p_obuchowski: float
    b: int
    c: int
    p_pooled: float
    min_p: float


def bounded_difference_interval(d, confidence: float = 0.95) -> tuple[float, float]:
    """Interval for the population mean of per-cluster differences d (K,) of shares, each in [-1, 1]: the t
    interval on K - 1 degrees of freedom clipped to [-1, 1]; the whole [-1, 1] when 2 / 2^K exceeds
    1 - confidence (so few clusters cannot exclude any difference); and where the differences do not vary
    (the t interval would have no width) the exact Clopper-Pearson interval on K all-or-nothing clusters
    of the mapped mean (d + 1) / 2, the widest any bounded data with that mean allow."""
    from scipy import stats

    from survey.analysis.intervals import beta_bounds

    d = np.asarray(d, dtype=float)
    m = d.size
    if m == 0:
        return math.nan, math.nan
    if 2.0 / 2**m > 1 - confidence:
        return -1.0, 1.0
    sd = float(d.std(ddof=1))
    if sd <= 1e-12:
        alpha = 1 - confidence
        low, high = beta_bounds((d.mean() + 1) / 2 * m, m, alpha / 2, alpha / 2)
        return float(2 * low - 1), float(2 * high - 1)
    half = float(stats.t.ppf(0.5 + confidence / 2, m - 1)) * sd / math.sqrt(m)
    return max(-1.0, float(d.mean()) - half), min(1.0, float(d.mean()) + half)


def obuchowski_mcnemar(b_k, c_k) -> float:
    """Two-sided p of Obuchowski's (1998) clustered McNemar test from per-cluster discordant counts
    b_k (first only) and c_k (second only), (K,): X^2 = (B - C)^2 / (K / (K - 1) sum_k (d_k - (B - C) / K)^2),
    d_k = b_k - c_k, referred to chi-square(1); 1.0 when no cluster has a discordant pair."""
    from scipy import stats

    b_k, c_k = (np.asarray(a, dtype=float) for a in (b_k, c_k))
    d = b_k - c_k
    k = d.size
    total = d.sum()
    if k < 2:
        return math.nan
    var = k / (k - 1) * np.sum((d - total / k) ** 2)
    if var <= 0:
        return 1.0 if total == 0 else 0.0
    return float(stats.chi2.sf(total**2 / var, 1))


def clustered_paired(first, second, clusters, confidence: float = 0.95) -> ClusteredPaired:
    """Paired binary outcomes (True = success) of two methods on the same trials, `clusters` naming each
    trial's unit of independence (see `ClusteredPaired`)."""
    from survey.analysis.paired import sign_flip_p

    a, b_ = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    if a.size == 0 or a.shape != b_.shape:
        raise ValueError("clustered_paired needs two outcome arrays of one length, at least one pair")
    _, k = np.unique(np.asarray(clusters), return_inverse=True)
    size = np.bincount(k).astype(float)
    share_a, share_b = np.bincount(k, weights=a) / size, np.bincount(k, weights=b_) / size
    only_a, only_b = np.bincount(k, weights=a & ~b_), np.bincount(k, weights=b_ & ~a)
    d = share_a - share_b
    m = d.size
    low, high = bounded_difference_interval(d, confidence)
    b, c = int(only_a.sum()), int(only_b.sum())
    return ClusteredPaired(int(m), int(a.size), float(share_a.mean()), float(share_b.mean()), float(d.mean()),
                           low, high, sign_flip_p(d), obuchowski_mcnemar(only_a, only_b),
                           b, c, mcnemar_exact(b, c), min(1.0, 2.0 / 2**m))


__all__ = ["ClusteredPaired", "McNemar", "bounded_difference_interval", "clustered_paired", "mcnemar", "mcnemar_exact", "obuchowski_mcnemar"]
