"""Probabilities of bad outcomes with confidence intervals, from the store.

For a table, a "bad" SQL predicate, an optional `where` filter and `by` group columns, each group
gets n (units counted), k (bad units), p = k / n and three intervals:
    clopper-pearson  exact binomial (beta quantiles); conservative;
    wilson           score interval; close to nominal coverage, never outside [0, 1];
    bootstrap        percentile interval from resampling clusters (images) with replacement, so
                     draws that are correlated within an image do not pass for independent ones.
With k = 0 the first two give the one-sided upper bound (Clopper-Pearson: 1 - alpha^(1/n)) and the
row carries the rule of three 3/n as a check; with k = n, the mirrored one-sided lower bound.

Counting units (`per`):
    row    every row is a trial; bootstrap clusters are images, (network, dataset, image_id).
    image  an image is bad when any of its rows is (bool_or): e.g. attacks, "some perturbation with
           r_rel <= eps moves the output by >= delta".
    curve  sweeps: one curve (x = value, the level on the row's axis; y = psnr by default) per image;
           the predicate sees the per-image summary columns slope (OLS dy/dx), y_start, y_end,
           y_peak, x_peak, points, e.g. "slope < 0" or "y_end < y_peak" (the quality falls as samples grow).

The SQL does the grouping (DuckDB, per-cluster counts k_i, n_i fetched once); the bootstrap is
vectorised numpy over those counts, so 10^7 rows cost about one scan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import duckdb
import numpy as np
import pandas as pd
from scipy import stats

from survey.analysis.db import QueryError, columns, connect, execute, sql_identifier

METHODS = ("clopper-pearson", "wilson", "bootstrap")
PER = ("row", "image", "curve")
#: the image key; columns missing from a table are left out.
DEFAULT_CLUSTER = ("network", "dataset", "image_id")
#: keys of every row `estimate` returns, after the group columns.
FIXED_KEYS = ("n", "k", "p", "ci_low", "ci_high", "method", "confidence", "interval", "rule_of_three",
              "clusters", "note")
CURVE_COLUMNS = ("slope", "y_start", "y_end", "y_peak", "x_peak", "points")
#: bootstrap work is done in chunks of at most this many resampled cluster indices.
_CHUNK_CELLS = 1 << 22


# -- intervals on counts (vectorised over arrays of k and n) -------------------------------------

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


def clopper_pearson(k, n, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact interval (low, high) for k successes in n trials.

    Two-sided (alpha/2 in each tail) when 0 < k < n; one-sided when k = 0 (upper bound
    1 - alpha^(1/n), low 0) or k = n (lower bound alpha^(1/n), high 1).
    """
    alpha = _alpha(confidence)
    k, n = _counts(k, n)
    tail = np.where((k == 0) | (k == n), alpha, alpha / 2)
    with np.errstate(invalid="ignore"):
        low = np.where(k == 0, 0.0, stats.beta.ppf(tail, np.maximum(k, 1), n - k + 1))
        high = np.where(k == n, 1.0, stats.beta.ppf(1 - tail, k + 1, np.maximum(n - k, 1)))
    return low, high


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


# -- SQL over the store -------------------------------------------------------------------------

def _open(store):
    if isinstance(store, duckdb.DuckDBPyConnection):
        return store, False
    return connect(Path(store)), True


def _check_columns(kind: str, names: Sequence[str], known: Sequence[str], table: str) -> list[str]:
    names = list(names)
    missing = [c for c in names if c not in known]
    if missing:
        raise ValueError(f"{kind} column(s) {missing} are not in table {table!r}; its columns: {list(known)}")
    return names


def _cluster_columns(cluster: Sequence[str] | None, known: Sequence[str], table: str) -> list[str]:
    if cluster is None:
        return [c for c in DEFAULT_CLUSTER if c in known] if "image_id" in known else []
    return _check_columns("cluster", cluster, known, table)


def _keys(by: Sequence[str], cluster: Sequence[str]) -> list[str]:
    return list(dict.fromkeys([*by, *cluster]))


def _counts_sql(table: str, bad: str, where: str | None, by: list[str], cluster: list[str], per: str,
                x: str, y: str) -> str:
    """SQL returning one row per (group, cluster): the group columns, n_i and k_i."""
    keys = _keys(by, cluster)
    key_sql = ", ".join(sql_identifier(c) for c in keys)
    select_keys = f"{key_sql}, " if keys else ""
    group = f" GROUP BY {key_sql}" if keys else ""
    src = f"(SELECT * FROM {sql_identifier(table)} WHERE ({where}))" if where else sql_identifier(table)
    if per == "row":
        return (f"SELECT {select_keys}count(*) FILTER (WHERE ({bad}) IS NOT NULL) AS n_i, "
                f"count(*) FILTER (WHERE ({bad})) AS k_i FROM {src} AS t{group}")
    if per == "image":
        return (f"SELECT {select_keys}CAST(bool_or({bad}) IS NOT NULL AS BIGINT) AS n_i, "
                f"CAST(coalesce(bool_or({bad}), false) AS BIGINT) AS k_i FROM {src} AS t{group}")
    xs, ys = sql_identifier(x), sql_identifier(y)
    points = (f"SELECT {key_sql}, {xs} AS x, avg({ys}) AS y FROM {src} AS t "
              f"WHERE {xs} IS NOT NULL AND {ys} IS NOT NULL GROUP BY {key_sql}, {xs}")
    curves = (f"SELECT {key_sql}, regr_slope(y, x) AS slope, arg_min(y, x) AS y_start, arg_max(y, x) AS y_end, "
              f"max(y) AS y_peak, arg_max(x, y) AS x_peak, count(*) AS points FROM points "
              f"GROUP BY {key_sql} HAVING count(*) >= 2")
    return (f"WITH points AS ({points}), curves AS ({curves}) "
            f"SELECT {key_sql}, CAST(({bad}) IS NOT NULL AS BIGINT) AS n_i, "
            f"CAST(coalesce(({bad}), false) AS BIGINT) AS k_i FROM curves")


def _python(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _in_key_order(frame, keys: list[str]):
    """`frame` sorted by its key columns (stable; missing values last), with a fresh index."""
    return frame.sort_values(keys, kind="mergesort", na_position="last").reset_index(drop=True) if keys else frame


def _group_index(frame, by: list[str]) -> tuple[np.ndarray, list[tuple]]:
    """Integer group id (0..G-1, groups in sorted order) per row of `frame`, and each group's values."""
    if not by:
        return np.zeros(len(frame), dtype=np.int64), [()]
    ids = frame.groupby(by, sort=True, dropna=False).ngroup().to_numpy(dtype=np.int64)
    _, first = np.unique(ids, return_index=True)
    values = frame[by].to_numpy(dtype=object)
    return ids, [tuple(values[i]) for i in first]


def estimate(store, table: str, bad: str | None = None, *, where: str | None = None,
             by: Sequence[str] = (), per: str = "row", confidence: float = 0.95, n_boot: int = 2000,
             seed: int = 0, cluster: Sequence[str] | None = None, x: str = "value",
             y: str = "psnr") -> list[dict[str, Any]]:
    """Per group of `by`, the probability that `bad` holds, with three intervals (one row per method).

    store: the store directory, or a connection from `survey.analysis.db.connect`.
    bad / where: SQL boolean expressions over the table's columns; `where` filters rows before any
        per-image aggregation; for per="curve", `bad` is over the curve columns slope, y_start, y_end,
        y_peak, x_peak, points (default "slope < 0"). Units where `bad` is NULL are not counted.
    per: "row", "image" (bad if any of the image's rows is) or "curve" (see the module docstring).
    cluster: the columns naming a bootstrap cluster (default network, dataset, image_id where the
        table has image_id; () resamples rows independently).
    Returns dicts with the `by` columns then FIXED_KEYS: n, k, p, ci_low, ci_high, method,
    confidence, interval ("two-sided", "one-sided upper", "one-sided lower"), rule_of_three (3/n when
    k = 0, 1 - 3/n when k = n, else None), clusters (bootstrap clusters in the group), note.
    """
    if per not in PER:
        raise ValueError(f"per must be one of {PER}, got {per!r}")
    if bad is None:
        if per != "curve":
            raise ValueError("give the `bad` predicate (a SQL boolean expression over the table's columns)")
        bad = "slope < 0"
    if not str(bad).strip():
        raise ValueError("the `bad` predicate is empty")
    _alpha(confidence)
    by = list(by)
    clash = [c for c in by if c in FIXED_KEYS]
    if clash:
        raise ValueError(f"group column(s) {clash} clash with the output keys {FIXED_KEYS}")
    con, owned = _open(store)
    try:
        known = columns(con, table)
        _check_columns("group", by, known, table)
        clusters = _cluster_columns(cluster, known, table)
        if per in ("image", "curve"):
            if not clusters:
                raise ValueError(f"per={per!r} needs image columns: table {table!r} has no image_id; pass cluster=")
            if per == "curve":
                _check_columns("curve", [x, y], known, table)
        sql = _counts_sql(table, bad, where, by, clusters, per, x, y)
        try:
            frame = execute(con, sql, store=store if owned else None)
        except QueryError as exc:
            raise ValueError(f"estimate on {table!r} with bad={bad!r} where={where!r}: {exc}") from None
    finally:
        if owned:
            con.close()
    # a fixed order of clusters: the bootstrap (seeded) then does not depend on how the rows lie in fragments
    frame = _in_key_order(frame[frame["n_i"] > 0], [c for c in frame.columns if c not in ("n_i", "k_i")])
    return _rows_from_counts(frame, by, confidence, n_boot, seed, iid=not clusters)


def _rows_from_counts(frame, by: list[str], confidence: float, n_boot: int, seed: int,
                      iid: bool) -> list[dict[str, Any]]:
    if frame.empty:
        return []
    ids, keys = _group_index(frame, by)
    k_i = frame["k_i"].to_numpy(dtype=np.float64)
    n_i = frame["n_i"].to_numpy(dtype=np.float64)
    n_groups = len(keys)
    k = np.bincount(ids, weights=k_i, minlength=n_groups)
    n = np.bincount(ids, weights=n_i, minlength=n_groups)
    m = np.bincount(ids, minlength=n_groups)
    intervals = {"clopper-pearson": clopper_pearson(k, n, confidence), "wilson": wilson(k, n, confidence)}
    if iid:
        intervals["bootstrap"] = iid_bootstrap(k, n, confidence=confidence, n_boot=n_boot, seed=seed)
    else:
        intervals["bootstrap"] = cluster_bootstrap(k_i, n_i, ids, confidence=confidence, n_boot=n_boot, seed=seed)
    rows = []
    for g, key in enumerate(keys):
        kg, ng = int(k[g]), int(n[g])
        side = "one-sided upper" if kg == 0 else "one-sided lower" if kg == ng else "two-sided"
        check = 3.0 / ng if kg == 0 else 1.0 - 3.0 / ng if kg == ng else None
        for method in METHODS:
            low, high = (float(a[g]) for a in intervals[method])
            interval, note = side, None
            if method == "bootstrap":
                interval = "two-sided"
                if kg == 0:
                    low, high, note = 0.0, None, "no bad units: resampling cannot bound p; use clopper-pearson"
                elif kg == ng:
                    low, high, note = None, 1.0, "all units bad: resampling cannot bound p; use clopper-pearson"
                elif m[g] == 1 and not iid:
                    note = "one cluster: the bootstrap interval is degenerate"
            row = {c: _python(v) for c, v in zip(by, key)}
            row.update(n=ng, k=kg, p=kg / ng, ci_low=_python(low), ci_high=_python(high), method=method,
                       confidence=confidence, interval=interval, rule_of_three=check,
                       clusters=ng if iid else int(m[g]), note=note)
            rows.append(row)
    return rows


def sweep_slopes(store, *, table: str = "sweeps", by: Sequence[str] = (), where: str | None = None,
                 x: str = "value", y: str = "psnr", confidence: float = 0.95, n_boot: int = 2000,
                 seed: int = 0, cluster: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Mean per-image OLS slope of `y` against `x` (sweeps' `value`: the sampling ratio, view count or noise
    level of the row's axis; dB per unit ratio for psnr against a ratio sweep).

    One curve per (by..., network, dataset, image_id); repeated points at one x are averaged; curves
    with fewer than two x values are left out. The interval is a percentile bootstrap over curves.
    Returns dicts: the `by` columns, n (curves), slope, ci_low, ci_high, method ("bootstrap"),
    confidence, falling (fraction of curves with slope < 0).
    """
    alpha = _alpha(confidence)
    by = list(by)
    con, owned = _open(store)
    try:
        known = columns(con, table)
        _check_columns("group", by, known, table)
        _check_columns("curve", [x, y], known, table)
        clusters = _cluster_columns(cluster, known, table)
        if not clusters:
            raise ValueError(f"sweep_slopes needs image columns: table {table!r} has no image_id; pass cluster=")
        keys = _keys(by, clusters)
        key_sql = ", ".join(sql_identifier(c) for c in keys)
        src = f"(SELECT * FROM {sql_identifier(table)} WHERE ({where}))" if where else sql_identifier(table)
        xs, ys = sql_identifier(x), sql_identifier(y)
        sql = (f"WITH points AS (SELECT {key_sql}, {xs} AS x, avg({ys}) AS y FROM {src} AS t "
               f"WHERE {xs} IS NOT NULL AND {ys} IS NOT NULL GROUP BY {key_sql}, {xs}) "
               f"SELECT {key_sql}, regr_slope(y, x) AS slope FROM points GROUP BY {key_sql} HAVING count(*) >= 2")
        try:
            frame = execute(con, sql)
        except QueryError as exc:
            raise ValueError(f"sweep_slopes on {table!r} where={where!r}: {exc}") from None
    finally:
        if owned:
            con.close()
    frame = _in_key_order(frame[frame["slope"].notna()], keys)
    if frame.empty:
        return []
    ids, group_keys = _group_index(frame, by)
    slopes = frame["slope"].to_numpy(dtype=np.float64)
    rows = []
    for g, key in enumerate(group_keys):
        s = slopes[ids == g]
        rng = np.random.default_rng([seed, g])
        means = np.concatenate([s[rng.integers(0, s.size, size=(stop - start, s.size))].mean(axis=1)
                                for start, stop in _chunks(n_boot, s.size)])
        low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
        row = {c: _python(v) for c, v in zip(by, key)}
        row.update(n=int(s.size), slope=float(s.mean()), ci_low=float(low), ci_high=float(high),
                   method="bootstrap", confidence=confidence, falling=float(np.mean(s < 0)))
        rows.append(row)
    return rows


__all__ = ["CURVE_COLUMNS", "DEFAULT_CLUSTER", "FIXED_KEYS", "METHODS", "PER", "cluster_bootstrap",
           "clopper_pearson", "estimate", "iid_bootstrap", "rule_of_three", "sweep_slopes", "wilson"]
