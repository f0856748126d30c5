"""Paired per-image ratio of worst-case gains, network over reference, with an interval over images.

"The network is less stable than the reference" is a paired claim:
both were searched with the same budget search, budget, iterations, starts and images (`attacks` rows with
search = 'budget', attacked = 'network' / 'reference' / 'H'). Per group (network, domain, budget by default)
and image i (the unit of independence, keyed by dataset and image_id):

    ratio_i = gain_numerator(i) / gain_denominator(i),   gain = the largest over the image's rows (worst case),

and the estimate is the geometric mean exp(mean_i log ratio_i) (ratios are multiplicative: 2x and 0.5x
average to 1x), with the median ratio and the share of images whose ratio exceeds 1.

The primary interval is Student's t on the per-image log ratios, exp(mean +- t_{m-1} sd / sqrt(m)) over m
images: the matched studies have few images (6 here, 24 at full size), where the percentile bootstrap is
too narrow (simulated, normal log ratios, 95%: t covers 0.94-0.96 from 4 images up; the bootstrap 0.79 at
4 images, 0.86 at 6, 0.90 at 10; tests/test_paired.py). The percentile bootstrap resampling images (each
image's pair moving together) stays beside it as `boot_low` / `boot_high`; with at most `exact_max` images
its distribution is enumerated exactly (every multiset of images with its multinomial weight).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from survey.analysis.db import connect, execute, sql_identifier

#: Default grouping; the columns a table lacks are dropped.
BY = ("network", "domain", "budget")
IMAGE = ("dataset", "image_id")


def bootstrap_interval(logs: np.ndarray, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0,
                       exact_max: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean of `logs` under resampling with replacement (inverted-CDF quantiles).

    Exact (enumerating the C(2n - 1, n) multisets with multinomial weights) when n <= exact_max, else
    `n_boot` Monte Carlo resamples from numpy's default generator seeded with `seed`.
    """
    logs = np.asarray(logs, dtype=float)
    n = logs.size
    if n == 0:
        return math.nan, math.nan
    alpha = (1 - confidence) / 2
    if n <= exact_max:
        values, weights = [], []
        log_fact = [math.lgamma(k + 1) for k in range(n + 1)]
        for chosen in itertools.combinations_with_replacement(range(n), n):
            counts = np.bincount(chosen, minlength=n)
            values.append(float(counts @ logs) / n)
            weights.append(math.exp(log_fact[n] - sum(log_fact[c] for c in counts) - n * math.log(n)))
        order = np.argsort(values)
        values, cdf = np.asarray(values)[order], np.cumsum(np.asarray(weights)[order])

        def quantile(q: float) -> float:
            return float(values[min(np.searchsorted(cdf, q - 1e-12), len(values) - 1)])

        return quantile(alpha), quantile(1 - alpha)
    rng = np.random.default_rng(seed)
    means = logs[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    low, high = np.quantile(means, [alpha, 1 - alpha], method="inverted_cdf")
    return float(low), float(high)


def t_interval(logs: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """mean +- t_{m-1} sd / sqrt(m) of the m per-image `logs` (NaN, NaN with fewer than 2 images)."""
    logs = np.asarray(logs, dtype=float)
    m = logs.size
    if m < 2:
        return math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, m - 1)) * float(logs.std(ddof=1)) / math.sqrt(m)
    return float(logs.mean()) - half, float(logs.mean()) + half


def paired_ratios(frame: pd.DataFrame, *, numerator: str = "network", denominator: str = "reference",
                  value: str = "gain", by: Sequence[str] = BY, confidence: float = 0.95, n_boot: int = 2000,
                  seed: int = 0, exact_max: int = 0) -> list[dict[str, Any]]:
    """One dict per group of `by`: images (paired), ratio (geometric mean), ci_low, ci_high (the primary t
    interval, NaN with one image), boot_low, boot_high (the image bootstrap), median, share_above_1,
    numerator / denominator medians of `value`, and the labels.

    frame: rows with the `by` columns, image_id (dataset too when present), `attacked` and `value`; an
    image counts in a group only when both `numerator` and `denominator` have a positive finite value there,
    and, when the frame has the budget search's `levelled_off` / `solver_converged`, only when both searches
    levelled off there and no reference solve missed its tolerance (`not_levelled`: the pairs left out).
    """
    by = [c for c in by if c in frame.columns]
    image = [c for c in IMAGE if c in frame.columns]
    keep = frame[frame["attacked"].isin([numerator, denominator])]
    keep = keep[np.isfinite(keep[value].astype(float)) & (keep[value].astype(float) > 0)]
    worst = keep.groupby([*by, *image, "attacked"], dropna=False)[value].max().unstack("attacked")
    out: list[dict[str, Any]] = []
    if numerator not in worst or denominator not in worst:
        return out
    worst = worst.dropna(subset=[numerator, denominator])
    unlevelled = worst.iloc[:, :0].assign(n=0)["n"]
    flags = [c for c in ("levelled_off", "solver_converged") if c in keep.columns]
    if flags:  # a pair counts only where both searches levelled off and every reference solve converged
        ok = pd.concat([keep[c].astype(object).where(keep[c].notna(), True).astype(bool) for c in flags],
                       axis=1).all(axis=1)
        level = keep.assign(ok=ok).groupby([*by, *image, "attacked"], dropna=False)["ok"].all().unstack("attacked")
        both = level.reindex(worst.index)[[numerator, denominator]].fillna(False).all(axis=1)
        unlevelled = (~both).astype(int)
        worst = worst[both]
    groups = worst.groupby(level=list(range(len(by))), dropna=False) if by else [((), worst)]
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        ratios = (part[numerator] / part[denominator]).to_numpy(dtype=float)
        logs = np.log(ratios)
        low, high = t_interval(logs, confidence)
        boot_low, boot_high = bootstrap_interval(logs, confidence, n_boot, seed, exact_max)
        left_out = int(unlevelled.xs(key, drop_level=False, level=list(range(len(by)))).sum()) if by and len(
            unlevelled) else int(unlevelled.sum())
        out.append({**dict(zip(by, key)), "numerator": numerator, "denominator": denominator, "value": value,
                    "images": int(ratios.size), "not_levelled": left_out, "ratio": float(np.exp(logs.mean())),
                    "ci_low": float(np.exp(low)), "ci_high": float(np.exp(high)), "interval": "t",
                    "boot_low": float(np.exp(boot_low)), "boot_high": float(np.exp(boot_high)),
                    "median": float(np.median(ratios)), "share_above_1": float((ratios > 1).mean()),
                    f"{numerator}_median": float(part[numerator].median()),
                    f"{denominator}_median": float(part[denominator].median()),
                    "confidence": confidence, "n_boot": 0 if ratios.size <= exact_max else n_boot, "seed": seed})
    return out


def paired_gain_ratio(store, *, table: str = "attacks", numerator: str = "network", denominator: str = "reference",
                      value: str = "gain", by: Sequence[str] = BY, where: str | None = "search = 'budget'",
                      confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """`paired_ratios` over the store's `table` (a directory, or a connection from `survey.analysis.db.connect`):
    the rows matching `where` (budget-search rows by default); [] when the table lacks the columns."""
    con, own = (store, False) if not isinstance(store, (str, Path)) else (connect(Path(store)), True)
    try:
        cols = set(execute(con, f"DESCRIBE {sql_identifier(table)}")["column_name"])
        if not {"attacked", value, "image_id"} <= cols or (where and "search" in where and "search" not in cols):
            return []
        wanted = [c for c in (*by, *IMAGE, "attacked", value, "levelled_off", "solver_converged") if c in cols]
        sql = f"SELECT {', '.join(sql_identifier(c) for c in wanted)} FROM {sql_identifier(table)}"
        frame = execute(con, sql + (f" WHERE {where}" if where else ""))
    finally:
        if own:
            con.close()
    if frame.empty:
        return []
    return paired_ratios(frame, numerator=numerator, denominator=denominator, value=value, by=by,
                         confidence=confidence, n_boot=n_boot, seed=seed)


__all__ = ["BY", "bootstrap_interval", "paired_gain_ratio", "paired_ratios", "t_interval"]
