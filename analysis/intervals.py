"""Confidence intervals for a probability of a bad outcome, vectorised over groups.

The unit of independence is the image. Two situations:

* independent trials (one row per image, per-image counting, or rows that really are independent):
  the exact binomial interval (Clopper-Pearson) on k of n is valid and is the one to report;
* rows that share an image (ball draws, insertions at several sizes): the estimand is the mean over
  the population of images of each image's P(bad); `cluster_exact` (Korn-Graubard on per-image
  proportions, degrading to the image-level exact bound at the edges) is the one to report.

Why `cluster_exact` (simulation table and settings: docs/INTERVALS.md): over images drawn from a
known population (per-image p ~ Beta with intra-image correlation 0..1; 10, 20, 48 images; p from 0 to
1) its 95% interval covered at least 94% everywhere, while the cluster-robust t interval (down to 69%)
and the percentile image bootstrap (down to 1%) fall well below nominal when p is small and images
differ (skewed per-image proportions), and pooled Clopper-Pearson (rows as independent trials) covers
0-48% once images differ. It is exact in both limits: Clopper-Pearson on all rows when images do
not differ, Clopper-Pearson on m images when each image is all-bad or all-good, and
1 - alpha^(1/m) / alpha^(1/m) at k = 0 / k = n.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

#: bootstrap work is done in chunks of at most this many resampled cluster indices.
_CHUNK_CELLS = 1 << 22


def _alpha(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return 1.0 - confidence


def _counts(k, n) -> tuple[np.ndarray, np.ndarray]:
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
        raise ValueError("counts must satisfy 0 <= k <= n and n >= 1")
    return k, n


# -- independent trials -----------------------------------------------------------------------------

def beta_bounds(x, n, tail_low, tail_high) -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson bounds for a (possibly fractional) count x of n: low has tail_low below it, high
    tail_high above it; low = 0 at x = 0 and high = 1 at x = n. Arrays broadcast."""
    x, n = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(n, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(x <= 0, 0.0, stats.beta.ppf(tail_low, np.maximum(x, 1e-12), n - x + 1))
        high = np.where(x >= n, 1.0, stats.beta.ppf(1 - np.asarray(tail_high), x + 1, np.maximum(n - x, 1e-12)))
    return low, high


def clopper_pearson(k, n, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact interval (low, high) for k successes in n trials.

    Two-sided (alpha/2 in each tail) when 0 < k < n; one-sided when k = 0 (upper bound
    1 - alpha^(1/n), low 0) or k = n (lower bound alpha^(1/n), high 1).
    """
    alpha = _alpha(confidence)
    k, n = _counts(k, n)
    tail = np.where((k == 0) | (k == n), alpha, alpha / 2)
    return beta_bounds(k, n, tail, tail)


def wilson(k, n, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (low, high); one-sided (z at 1 - alpha) when k = 0 or k = n."""
    alpha = _alpha(confidence)
    k, n = _counts(k, n)
    one_sided = (k == 0) | (k == n)
    z = np.where(one_sided, stats.norm.ppf(1 - alpha), stats.norm.ppf(1 - alpha / 2))
    p = k / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z / denom * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    low = np.where(k == 0, 0.0, np.clip(centre - half, 0.0, 1.0))
    high = np.where(k == n, 1.0, np.clip(centre + half, 0.0, 1.0))
    return low, high


def rule_of_three(n) -> np.ndarray:
    """3 / n: the approximate 95% upper bound on p after n trials without a bad one."""
    return 3.0 / np.asarray(n, dtype=np.float64)


# -- rows that share an image -----------------------------------------------------------------------

def image_moments(k_i, n_i, groups=None) -> dict[str, np.ndarray]:
    """Per group, from per-image counts k_i of n_i (arrays (C,); groups (C,) ids 0..G-1, None: one group):
    m (images), mean (mean of the per-image proportions k_i / n_i: the estimand's estimate),
    var_mean (s^2 / m, the between-image variance of that mean; images as independent draws) and
    n_indep (m^2 / sum(1 / n_i): the trials that would give the same variance were all rows
    independent; sum n_i when every image has the same rows) and df (degrees of freedom of var_mean:
    min(images with a bad row, images with a good row) - 1, within [1, m - 1]: when only j images show
    a bad row, the spread of the proportions is learned from those j; with df = m - 1 the interval
    undercovers small p with images that differ, docs/INTERVALS.md). Each (G,)."""
    k_i, n_i = _counts(k_i, n_i)
    groups = np.zeros(k_i.shape, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    size = int(groups.max()) + 1 if groups.size else 0
    y = k_i / n_i
    m = np.bincount(groups, minlength=size).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(groups, weights=y, minlength=size) / m
        dev = np.bincount(groups, weights=(y - mean[groups]) ** 2, minlength=size)
        var_mean = np.where(m > 1, dev / np.maximum(m - 1, 1) / m, np.nan)
        n_indep = m**2 / np.bincount(groups, weights=1.0 / n_i, minlength=size)
    some_bad = np.bincount(groups, weights=k_i > 0, minlength=size)
    some_good = np.bincount(groups, weights=k_i < n_i, minlength=size)
    df = np.clip(np.minimum(some_bad, some_good) - 1, 1, np.maximum(m - 1, 1))
    return {"m": m, "mean": mean, "var_mean": var_mean, "n_indep": n_indep, "df": df}


def cluster_exact_n(mean, var_mean, m, n_indep, df, tail: float) -> np.ndarray:
    """Korn-Graubard effective number of trials behind a bound with `tail` probability beyond it.

    n_eff = mean (1 - mean) / var_mean (the design effect) capped at n_indep (never narrower than all rows
    independent), times (z / t_df)^2 at the tail's quantile (few images: the variance is itself estimated;
    df from `image_moments`), at least m (never wider than the exact bound on m all-or-nothing images, the
    largest variance proportions in [0, 1] can have). m where mean is 0 or 1 (the image-level exact
    bound); n_indep (times the factor) where the images do not differ at all (var_mean = 0, 0 < mean < 1).
    """
    mean, var_mean, m, n_indep, df = (np.asarray(a, dtype=np.float64) for a in (mean, var_mean, m, n_indep, df))
    edge = (mean <= 0) | (mean >= 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        n_eff = np.where(var_mean > 0, mean * (1 - mean) / var_mean, np.inf)
        n_eff = np.minimum(np.nan_to_num(n_eff, nan=0.0, posinf=np.inf), np.maximum(n_indep, m))
        n_eff = n_eff * (stats.norm.ppf(1 - tail) / stats.t.ppf(1 - tail, np.maximum(df, 1))) ** 2
    return np.where(edge, m, np.maximum(n_eff, m))


def cluster_exact(mean, var_mean, m, n_indep, df, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interval (low, high, n_eff) for the population mean of per-image P(bad), from `image_moments`.

    Clopper-Pearson on x = mean * n_eff of n_eff trials (`cluster_exact_n`); one-sided at mean = 0
    (high = 1 - alpha^(1/m)) and mean = 1 (low = alpha^(1/m)), as `clopper_pearson` is at k = 0, n.
    """
    alpha = _alpha(confidence)
    mean = np.asarray(mean, dtype=np.float64)
    edge = (mean <= 0) | (mean >= 1)
    n_two = cluster_exact_n(mean, var_mean, m, n_indep, df, alpha / 2)
    n_one = cluster_exact_n(mean, var_mean, m, n_indep, df, alpha)
    n_eff = np.where(edge, n_one, n_two)
    tail = np.where(edge, alpha, alpha / 2)
    low, high = beta_bounds(mean * n_eff, n_eff, tail, tail)
    return low, high, n_eff


def cluster_exact_upper(mean, var_mean, m, n_indep, df, confidence: float = 0.95) -> np.ndarray:
    """One-sided upper bound at `confidence` for the population mean of per-image P(bad)."""
    alpha = _alpha(confidence)
    n_eff = cluster_exact_n(mean, var_mean, m, n_indep, df, alpha)
    return beta_bounds(np.asarray(mean) * n_eff, n_eff, alpha, alpha)[1]


def design_n(mean, var_mean, m, n_indep) -> np.ndarray:
    """mean (1 - mean) / var_mean within [m, n_indep] (m at mean 0 or 1): `cluster_exact_n` before the
    small-sample factor, which only shrinks it; what estimate rows carry as n_eff for `effective_upper`."""
    return cluster_exact_n(mean, var_mean, m, n_indep, np.inf, 0.25)


def effective_upper(point, n_eff, df, m, confidence: float = 0.95) -> np.ndarray:
    """One-sided upper bound at `confidence` from an estimate row's point, n_eff, df and clusters (m).

    df None / nan / inf: Clopper-Pearson on point * n_eff of n_eff (exact for k of n). Else cluster-exact:
    n_eff (z / t_df)^2 at 1 - confidence, at least m. confidence may be an array (one per row)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    if not np.all((confidence > 0) & (confidence < 1)):
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    alpha = 1.0 - confidence
    point, n_eff, m = (np.asarray(a, dtype=np.float64) for a in (point, n_eff, m))
    df = np.asarray(np.nan if df is None else df, dtype=np.float64)
    factor = np.where(np.isfinite(df), (stats.norm.ppf(1 - alpha) / stats.t.ppf(1 - alpha, np.where(
        np.isfinite(df), np.maximum(df, 1), 1))) ** 2, 1.0)
    n = np.where(np.isfinite(df), np.maximum(n_eff * factor, m), n_eff)
    return beta_bounds(point * n, n, alpha, alpha)[1]


def p_value(point, n_eff, df, m, limit) -> np.ndarray:
    """One-sided p-value of "P(bad) >= limit" against "P(bad) < limit": the smallest alpha at which
    `effective_upper` at 1 - alpha is below limit (bisection on log alpha; 1 when it never is)."""
    point, n_eff, m, limit = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (point, n_eff, m, limit)))
    df = np.broadcast_to(np.asarray(np.nan if df is None else df, dtype=np.float64), point.shape)
    lo, hi = np.full(point.shape, np.log(1e-15)), np.full(point.shape, np.log(1 - 1e-9))
    below = lambda a: effective_upper(point, n_eff, df, m, 1 - np.exp(a)) < limit  # noqa: E731
    never = ~below(hi)
    for _ in range(60):
        mid = (lo + hi) / 2
        ok = below(mid)
        hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid)
    return np.where(never, 1.0, np.exp(hi))


def effective_lower(point, n_eff, df, m, confidence: float = 0.95) -> np.ndarray:
    """One-sided lower bound at `confidence`, the mirror of `effective_upper` (0 where point is 0)."""
    point = np.asarray(point, dtype=np.float64)
    return 1.0 - effective_upper(1.0 - point, n_eff, df, m, confidence)


def p_value_above(point, n_eff, df, m, limit) -> np.ndarray:
    """One-sided p-value of "P(bad) <= limit" against "P(bad) > limit" (evidence of harm): the smallest
    alpha at which `effective_lower` at 1 - alpha is above limit (1 when it never is)."""
    point, limit = np.asarray(point, dtype=np.float64), np.asarray(limit, dtype=np.float64)
    return p_value(1.0 - point, n_eff, df, m, 1.0 - limit)


def cluster_t(mean, var_mean, m, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Cluster-robust t interval mean +- t_{m-1} sqrt(var_mean), clipped to [0, 1]. Secondary: it assumes
    the mean of per-image proportions is near normal, which fails for small p and few images (skew);
    it has zero width when every image is all-good (use `cluster_exact`)."""
    alpha = _alpha(confidence)
    m = np.asarray(m, dtype=np.float64)
    half = stats.t.ppf(1 - alpha / 2, np.maximum(m - 1, 1)) * np.sqrt(np.nan_to_num(var_mean))
    return np.clip(mean - half, 0, 1), np.clip(mean + half, 0, 1)


# -- resampling -----------------------------------------------------------------------------------

def _chunks(n_boot: int, m: int) -> list[tuple[int, int]]:
    """[start, stop) slices of the n_boot resamples, each at most _CHUNK_CELLS indices."""
    step = max(1, _CHUNK_CELLS // m)
    return [(start, min(n_boot, start + step)) for start in range(0, n_boot, step)]


def _resampled_sums(k: np.ndarray, n: np.ndarray, n_boot: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sums of k and of n over n_boot resamples of the m clusters with replacement, each (n_boot,).

    Clusters with equal (k, n) are interchangeable, so when there are few distinct pairs (fixed
    draws per image, as the ball test makes them) the resample is a multinomial over the distinct
    pairs: O(n_boot x distinct) instead of O(n_boot x m).
    """
    m = k.size
    ki, ni = k.astype(np.int64), n.astype(np.int64)
    pairs, counts = np.unique(np.stack([ki, ni], axis=1), axis=0, return_counts=True)
    if 8 * len(pairs) <= m:
        weights = rng.multinomial(m, counts / m, size=n_boot)
        return (weights @ pairs[:, 0]).astype(np.float64), (weights @ pairs[:, 1]).astype(np.float64)
    # one gather instead of two: pack (k, n) into one int64 while the sums of n fit in 32 bits
    packed = (ki << 32) + ni if m * int(ni.max()) < 2**32 else None
    k_sum, n_sum = np.empty(n_boot), np.empty(n_boot)
    for start, stop in _chunks(n_boot, m):
        idx = rng.integers(0, m, size=(stop - start, m))
        if packed is not None:
            total = packed[idx].sum(axis=1)
            k_sum[start:stop], n_sum[start:stop] = total >> 32, total & 0xFFFFFFFF
        else:
            k_sum[start:stop], n_sum[start:stop] = ki[idx].sum(axis=1), ni[idx].sum(axis=1)
    return k_sum, n_sum


def cluster_bootstrap(k, n, groups=None, *, confidence: float = 0.95, n_boot: int = 2000,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval for p = sum k / sum n, resampling clusters with replacement within each group.

    k, n: (C,) bad and total counts per cluster; groups: (C,) integer group ids 0..G-1 (None: one
    group). Returns (low, high), each (G,). Clusters of one trial each (all n = 1) and groups of a
    single cluster take exact shortcuts (binomial draws; a degenerate interval). Seeded per group.
    Secondary: with few clusters (10-50) the percentile interval is too narrow (docs/INTERVALS.md).
    """
    alpha = _alpha(confidence)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    k, n = _counts(k, n)
    groups = np.zeros(k.shape, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    if groups.shape != k.shape:
        raise ValueError(f"groups has shape {groups.shape}, counts have {k.shape}")
    n_groups = int(groups.max()) + 1 if groups.size else 0
    order = np.argsort(groups, kind="stable")
    bounds = np.searchsorted(groups[order], np.arange(n_groups + 1))
    low, high = np.empty(n_groups), np.empty(n_groups)
    quantiles = [alpha / 2, 1 - alpha / 2]
    for g in range(n_groups):
        members = order[bounds[g]:bounds[g + 1]]
        if members.size == 0:
            low[g] = high[g] = np.nan
            continue
        kg, ng = k[members], n[members]
        rng = np.random.default_rng([seed, g])
        m = members.size
        if np.all(ng == 1):
            p_star = rng.binomial(m, kg.sum() / m, size=n_boot) / m
        elif m == 1:
            p_star = np.full(n_boot, kg[0] / ng[0])
        else:
            k_sum, n_sum = _resampled_sums(kg, ng, n_boot, rng)
            p_star = k_sum / n_sum
        low[g], high[g] = np.quantile(p_star, quantiles)
    return low, high


def iid_bootstrap(k, n, *, confidence: float = 0.95, n_boot: int = 2000,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval resampling independent trials: binomial draws Binomial(n, k/n) / n."""
    alpha = _alpha(confidence)
    k, n = _counts(k, n)
    rng = np.random.default_rng(seed)
    draws = rng.binomial(n.astype(np.int64)[:, None], (k / n)[:, None], size=(k.size, n_boot)) / n[:, None]
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2], axis=1)
    return low, high


__all__ = ["beta_bounds", "clopper_pearson", "cluster_bootstrap", "cluster_exact", "cluster_exact_n",
           "cluster_exact_upper", "cluster_t", "design_n", "effective_lower", "effective_upper", "iid_bootstrap", "image_moments",
           "p_value", "p_value_above", "rule_of_three", "wilson"]
