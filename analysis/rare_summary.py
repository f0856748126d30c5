"""Across images: how the per-image probability of a bad perturbation spreads (the `rare` table).

Each row of `rare` is one image's estimate of P(D >= delta) for one setting (family, severity, threshold,
distance, estimator, target) with its own interval [ci_low, ci_high] (splitting may give only a certified
bound: p None, ci_high = the bound). Per group (the `by` columns plus the setting, which is always kept
apart) and per level L, `rare_distribution` returns:

    images, certified (images with a bound only), the median, quantiles, min and max of the per-image
    value v_i = p_i (ci_high where only a bound was reached: those quantiles are upper bounds), the median
    of log10 v_i; surely_above = #{ci_low_i > L} (the image's own interval puts it above L), possibly_above
    = #{ci_high_i > L} (its interval does not rule it out), point_above = #{v_i > L}; the Clopper-Pearson
    interval over images of each count, and the bracket [low of surely_above, high of possibly_above].

`rare_claims` turns the counts into statements about images in general, with Holm's correction over the
family of (network, severity, threshold, ...) decisions; per-image certificates stay per-image.

The bracket is conservative: it takes the lower end over the images surely above and the upper end over
the images possibly above, so it holds the fraction of the population of images with P(bad) > L whenever
each image's own interval holds its p (each does with probability `confidence`, so a few of many images
may sit on the wrong side; their count is within the surely/possibly gap unless an interval misses).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import duckdb
import numpy as np

from scipy import stats

from survey.analysis.db import QueryError, columns, connect, execute, sql_identifier
from survey.analysis.decisions import holm
from survey.analysis.intervals import clopper_pearson

TABLE = "rare"
#: The columns that make two rows the same question; always part of a group.
SETTING = ("family", "severity", "threshold", "distance", "estimator", "target")
#: Image key (a row per image and setting).
IMAGE = ("network", "dataset", "image_id")
LEVELS = (1e-9, 1e-6, 1e-3)
QUANTILES = (0.5, 0.9, 0.99)   # as `survey estimate --quantiles` by default


def fetch(store, *, where: str | None = None) -> "Any":
    """The rows of `rare` (optionally filtered by the SQL `where`) as a DataFrame."""
    con, owned = (store, False) if isinstance(store, duckdb.DuckDBPyConnection) else (connect(Path(store)), True)
    try:
        columns(con, TABLE)   # ValueError naming the tables when the store has none
        sql = f"SELECT * FROM {sql_identifier(TABLE)}" + (f" WHERE ({where})" if where else "")
        try:
            return execute(con, sql)
        except QueryError as exc:
            raise ValueError(f"rare summary with where={where!r}: {exc}") from None
    finally:
        if owned:
            con.close()


def group_keys(frame, by: Sequence[str]) -> list[str]:
    """`by` (default network, and dataset when there are several) followed by the setting columns."""
    by = list(by) if by else ["network"] + (["dataset"] if "dataset" in frame and frame["dataset"].nunique() > 1
                                            else [])
    missing = [c for c in [*by, *SETTING] if c not in frame.columns]
    if missing:
        raise ValueError(f"column(s) {missing} are not in table {TABLE!r}")
    return list(dict.fromkeys([*by, *SETTING]))


def per_image_value(frame) -> np.ndarray:
    """v_i: the estimate p, or the upper end of the interval where only a certified bound was reached."""
    p = frame["p"].to_numpy(dtype=np.float64, na_value=np.nan)
    high = frame["ci_high"].to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isnan(p), high, p)


def rare_distribution(store, *, by: Sequence[str] = (), where: str | None = None,
                      levels: Sequence[float] = LEVELS, quantiles: Sequence[float] = QUANTILES,
                      confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per group and level, the distribution of per-image P(bad) and the image-level fractions above the
    level (module docstring). store: a store directory or a connection. Rows: the group columns, images,
    certified, min, q<q>, max, median_log10, level, point_above, surely_above, possibly_above, their
    Clopper-Pearson intervals over images (surely_ci_low/high, possibly_ci_low/high), bracket_low,
    bracket_high, confidence, estimand."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if any(not 0.0 <= q <= 1.0 for q in quantiles) or any(not 0.0 <= v < 1.0 for v in levels):
        raise ValueError("quantiles must lie in [0, 1] and levels in [0, 1)")
    frame = fetch(store, where=where)
    if frame.empty:
        return []
    keys = group_keys(frame, by)
    frame = frame.sort_values([*keys, *(c for c in IMAGE if c in frame and c not in keys)], kind="mergesort")
    rows = []
    for key, sub in frame.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        v = per_image_value(sub)
        low = sub["ci_low"].to_numpy(dtype=np.float64, na_value=0.0)
        high = sub["ci_high"].to_numpy(dtype=np.float64, na_value=1.0)
        m = int(v.size)
        positive = v[v > 0]
        summary = {c: _python(x) for c, x in zip(keys, key)}
        summary.update(images=m, certified=int(sub["p"].isna().sum()), min=float(v.min()),
                       **{f"q{q:g}": float(np.quantile(v, q)) for q in quantiles}, max=float(v.max()),
                       median_log10=float(np.median(np.log10(positive))) if positive.size == m else None)
        datasets = ", ".join(sorted({str(d) for d in sub["dataset"]})) if "dataset" in sub else "the data"
        for level in levels:
            counts = {"point_above": int(np.sum(v > level)), "surely_above": int(np.sum(low > level)),
                      "possibly_above": int(np.sum(high > level))}
            s_low, s_high = (float(a) for a in clopper_pearson(counts["surely_above"], m, confidence))
            q_low, q_high = (float(a) for a in clopper_pearson(counts["possibly_above"], m, confidence))
            rows.append({**summary, "level": float(level), **counts, "surely_ci_low": s_low,
                         "surely_ci_high": s_high, "possibly_ci_low": q_low, "possibly_ci_high": q_high,
                         "bracket_low": s_low, "bracket_high": q_high, "confidence": confidence,
                         "estimand": f"over images of {datasets}: fraction of images with P(bad) > {level:g}"})
    return rows


def rare_claims(store, *, level: float = 1e-4, limit: float = 0.5, confidence: float = 0.95,
                where: str | None = None) -> list[dict[str, Any]]:
    """Claims about images in general, one per (network, dataset, setting) group, with Holm's correction over
    the whole family of (network, severity, threshold, ...) decisions.

    Each group's claim: "fewer than `limit` of the images of the dataset have P(bad) > level". Its evidence is
    the count k of images possibly above the level (each image's ci_high > level: an image is counted unless
    its own interval rules it out) among m images at validated settings; the one-sided exact binomial p-value
    of "the fraction is >= limit" is P(Bin(m, limit) <= k); Holm (survey.analysis.decisions.holm) keeps the
    family-wise error at 1 - confidence. Rows: the group columns, images, possibly_above, upper (the one-sided
    Clopper-Pearson bound on the fraction at `confidence`), p_value, p_adjusted, passed (after Holm), family_size,
    claim. Rows below the validated settings are left out (they are not certificates)."""
    if not 0.0 < confidence < 1.0 or not 0.0 < limit < 1.0 or not 0.0 < level < 1.0:
        raise ValueError("confidence, limit and level must lie in (0, 1)")
    frame = fetch(store, where=where)
    if frame.empty:
        return []
    if "validated" in frame.columns:
        frame = frame[frame["validated"].fillna(False).astype(bool)]
    else:
        frame = frame.iloc[0:0]
    if frame.empty:
        return []
    keys = group_keys(frame, ())
    out = []
    for key, sub in frame.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        high = sub["ci_high"].to_numpy(dtype=np.float64, na_value=1.0)
        m, k = int(high.size), int(np.sum(high > level))
        upper = 1.0 if k == m else float(stats.beta.ppf(confidence, k + 1, m - k))
        out.append({**{c: _python(x) for c, x in zip(keys, key)}, "images": m, "possibly_above": k, "upper": upper,
                    "p_value": float(stats.binom.cdf(k, m, limit)), "level": level, "limit": limit,
                    "confidence": confidence,
                    "claim": f"fewer than {limit:g} of the images have P(bad) > {level:g}"})
    adjusted, passed = holm([r["p_value"] for r in out], 1.0 - confidence)
    for r, a, ok in zip(out, adjusted, passed):
        r.update(p_adjusted=float(a), passed=bool(ok), family_size=len(out))
    return out


def _python(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and np.isnan(value) else value


__all__ = ["IMAGE", "LEVELS", "QUANTILES", "SETTING", "TABLE", "fetch", "group_keys", "per_image_value",
           "rare_claims", "rare_distribution"]
