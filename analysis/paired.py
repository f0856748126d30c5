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
too narrow (simulated, 95%: t covers 0.94-0.96 for normal log ratios from 4 images up, 0.92-0.94 for
skewed (gamma) ones below 20 images; the bootstrap 0.79 at 4 images, 0.86 at 6, 0.90 at 10;
tests/test_paired.py). The percentile bootstrap resampling images (each image's pair moving together)
stays beside it as `boot_low` / `boot_high`; with at most `exact_max` images its distribution is
enumerated exactly (every multiset of images with its multinomial weight).

Beside the interval, an exact sign-flip (permutation) test of "no difference" (the log ratios symmetric
about 0; exact for any symmetric distribution, no normality), two-sided, and Holm's step-down over every
group of one call (the (network, budget) family): a group's `direction` reads "numerator higher" /
"numerator lower" only when its Holm-adjusted p-value is at most 1 - confidence. With m images the
smallest possible two-sided p is 2 / 2^m (0.031 with 6 images), so a family of K groups can show a
direction only when 2 / 2^m <= alpha / K; `min_p` says it per group. Images without a usable pair are never
dropped silently: `dropped` counts them and `dropped_reasons` says why (gain <= 0 or not finite on one
side, or one side missing). With unit="volume" (or "subject") the per-image log ratios are averaged per
volume and the volume is the unit of the t interval and of the test.
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
from survey.analysis.units import UNIT_COLUMNS

#: Default grouping; the columns a table lacks are dropped.
BY = ("network", "domain", "budget")
IMAGE = ("dataset", "image_id")
#: the drop reason of a pair whose search did not level off or whose reference solve missed its tolerance
NOT_LEVELLED = "a search did not level off or a reference solve missed its tolerance"
#: up to this many units the sign-flip test enumerates all 2^m sign patterns; above, Monte Carlo.
SIGN_FLIP_EXACT_MAX = 16


def sign_flip_p(logs: np.ndarray, n_mc: int = 20000, seed: int = 0) -> float:
    """Two-sided sign-flip p-value of "the per-unit `logs` are symmetric about 0": the share of sign patterns
    s (all 2^m when m <= SIGN_FLIP_EXACT_MAX, else `n_mc` random ones plus the observed) with
    |mean(s * |logs|)| >= |mean(logs)|. 1.0 with no unit or all logs 0."""
    logs = np.asarray(logs, dtype=float)
    m = logs.size
    if m == 0 or not np.any(logs):
        return 1.0
    observed = abs(logs.mean())
    size = np.abs(logs)
    if m <= SIGN_FLIP_EXACT_MAX:
        patterns = ((np.arange(2**m)[:, None] >> np.arange(m)) & 1) * 2 - 1
        stats_ = np.abs(patterns @ size) / m
        return float(np.mean(stats_ >= observed * (1 - 1e-12)))
    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, 2, size=(n_mc, m)) * 2 - 1
    hits = np.sum(np.abs(patterns @ size) / m >= observed * (1 - 1e-12))
    return float((hits + 1) / (n_mc + 1))


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
                  seed: int = 0, exact_max: int = 0, unit: str = "image") -> list[dict[str, Any]]:
    """One dict per group of `by`: images (paired), units (the clusters: images, or volumes with unit="volume"),
    unit, ratio (geometric mean over units), ci_low, ci_high (the primary t interval, NaN with one unit),
    boot_low, boot_high (the unit bootstrap), p_sign_flip (exact two-sided), p_t (Student's t, two-sided),
    p_holm (sign-flip p Holm-adjusted over the groups of this call), family_size, min_p (the smallest
    sign-flip p these units allow), direction ("numerator higher", "numerator lower" or "no difference
    shown", after Holm), dropped (images of the group without a usable pair) and dropped_reasons (reason ->
    count), median, share_above_1, numerator / denominator medians of `value`, and the labels.

    frame: rows with the `by` columns, image_id (dataset too when present; volume_id / subject_id for those
    units), `attacked` and `value`. An image counts only when both `numerator` and `denominator` have a
    positive finite value there and, when the frame has the budget search's `levelled_off` / `solver_converged`,
    both searches levelled off there and no reference solve missed its tolerance; every other image of the group
    is counted in `dropped` with its reason (`not_levelled`: those left out for the search or the solve).
    """
    if unit not in UNIT_COLUMNS:
        raise ValueError(f"unknown unit {unit!r}; choose one of {', '.join(UNIT_COLUMNS)}")
    by = [c for c in by if c in frame.columns]
    image = [c for c in IMAGE if c in frame.columns]
    unit_col = UNIT_COLUMNS[unit]
    if unit != "image":
        if unit_col not in frame.columns or frame[unit_col].isna().any():
            raise ValueError(f"unit {unit!r}: the rows do not carry {unit_col}")
        image = [*image, unit_col]
    sides = frame[frame["attacked"].isin([numerator, denominator])].copy()
    values = pd.to_numeric(sides[value], errors="coerce").astype(float)
    sides["_usable"] = np.isfinite(values) & (values > 0)
    sides["_value"] = values.where(sides["_usable"])
    keys = [*by, *image]
    worst = sides.groupby([*keys, "attacked"], dropna=False)["_value"].max().unstack("attacked")
    usable = sides.groupby([*keys, "attacked"], dropna=False)["_usable"].any().unstack("attacked")
    out: list[dict[str, Any]] = []
    for side in (numerator, denominator):
        if side not in worst:
            worst[side], usable[side] = np.nan, np.nan
    present = usable.notna()
    settled = pd.Series(True, index=worst.index)
    flags = [c for c in ("levelled_off", "solver_converged") if c in sides.columns]
    if flags:  # a pair counts only where both searches levelled off and every reference solve converged
        ok = pd.concat([sides[c].astype(object).where(sides[c].notna(), True).astype(bool) for c in flags],
                       axis=1).all(axis=1)
        level = sides.assign(_ok=ok).groupby([*keys, "attacked"], dropna=False)["_ok"].all().unstack("attacked")
        level = level.reindex(index=worst.index, columns=[numerator, denominator])
        settled = level.fillna(True).astype(bool).all(axis=1)
    reasons = np.select([~present[numerator], ~present[denominator],
                         ~usable[numerator].fillna(False).astype(bool), ~usable[denominator].fillna(False).astype(bool),
                         ~settled],
                        [f"no {numerator} row", f"no {denominator} row", f"{numerator} {value} <= 0 or not finite",
                         f"{denominator} {value} <= 0 or not finite", NOT_LEVELLED], default="")
    worst = worst.assign(_reason=reasons)
    groups = worst.groupby(level=list(range(len(by))), dropna=False) if by else [((), worst)]
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        dropped = part[part["_reason"] != ""]
        part = part[part["_reason"] == ""]
        if part.empty:   # every pair left out: the group is still shown, with no estimate and its reasons
            out.append({**dict(zip(by, key)), "numerator": numerator, "denominator": denominator, "value": value,
                        "images": 0, "units": 0, "unit": unit, "ratio": math.nan, "ci_low": math.nan,
                        "ci_high": math.nan, "interval": "t", "boot_low": math.nan, "boot_high": math.nan,
                        "p_sign_flip": 1.0, "p_t": math.nan, "min_p": 1.0, "dropped": int(len(dropped)),
                        "not_levelled": int((dropped["_reason"] == NOT_LEVELLED).sum()),
                        "dropped_reasons": {str(r): int(n) for r, n in dropped["_reason"].value_counts().items()},
                        "median": math.nan, "share_above_1": math.nan, f"{numerator}_median": math.nan,
                        f"{denominator}_median": math.nan, "confidence": confidence, "n_boot": 0, "seed": seed})
            continue
        ratios = (part[numerator] / part[denominator]).to_numpy(dtype=float)
        logs = np.log(ratios)
        if unit != "image":   # one value per volume: the mean of its images' log ratios
            logs = pd.Series(logs, index=part.index.get_level_values(unit_col)).groupby(level=0).mean().to_numpy()
        low, high = t_interval(logs, confidence)
        m = logs.size
        # one unit: no spread to resample (the t interval is NaN too)
        boot_low, boot_high = bootstrap_interval(logs, confidence, n_boot, seed, exact_max) if m > 1 else (
            math.nan, math.nan)
        sd = float(logs.std(ddof=1)) if m > 1 else math.nan
        p_t = (float(2 * stats.t.sf(abs(logs.mean()) / (sd / math.sqrt(m)), m - 1)) if m > 1 and sd > 0
               else 1.0 if m > 1 and not np.any(logs) else 0.0 if m > 1 else math.nan)
        out.append({**dict(zip(by, key)), "numerator": numerator, "denominator": denominator, "value": value,
                    "images": int(ratios.size), "units": int(m), "unit": unit, "ratio": float(np.exp(logs.mean())),
                    "ci_low": float(np.exp(low)), "ci_high": float(np.exp(high)), "interval": "t",
                    "boot_low": float(np.exp(boot_low)), "boot_high": float(np.exp(boot_high)),
                    "p_sign_flip": sign_flip_p(logs, seed=seed), "p_t": p_t, "min_p": min(1.0, 2.0 / 2**m),
                    "dropped": int(len(dropped)), "not_levelled": int((dropped["_reason"] == NOT_LEVELLED).sum()),
                    "dropped_reasons": {str(r): int(n) for r, n in dropped["_reason"].value_counts().items()},
                    "median": float(np.median(ratios)), "share_above_1": float((ratios > 1).mean()),
                    f"{numerator}_median": float(part[numerator].median()),
                    f"{denominator}_median": float(part[denominator].median()),
                    "confidence": confidence, "n_boot": 0 if m <= exact_max else n_boot, "seed": seed})
    from survey.analysis.decisions import holm

    adjusted = holm([r["p_sign_flip"] for r in out], 1 - confidence)[0] if out else []
    for r, p in zip(out, adjusted):
        shown = p <= 1 - confidence and r["images"] > 0
        r.update(p_holm=float(p), family_size=len(out),
                 direction=("numerator higher" if r["ratio"] > 1 else "numerator lower") if shown
                 else "no difference shown")
    return out


def paired_gain_ratio(store, *, table: str = "attacks", numerator: str = "network", denominator: str = "reference",
                      value: str = "gain", by: Sequence[str] = BY, where: str | None = "search = 'budget'",
                      confidence: float = 0.95, n_boot: int = 2000, seed: int = 0,
                      unit: str = "image") -> list[dict[str, Any]]:
    """`paired_ratios` over the store's `table` (a directory, or a connection from `survey.analysis.db.connect`):
    the rows matching `where` (budget-search rows by default); [] when the table lacks the columns; a `unit`
    the rows do not carry raises ValueError naming the units present."""
    con, own = (store, False) if not isinstance(store, (str, Path)) else (connect(Path(store)), True)
    try:
        cols = set(execute(con, f"DESCRIBE {sql_identifier(table)}")["column_name"])
        if not {"attacked", value, "image_id"} <= cols or (where and "search" in where and "search" not in cols):
            return []
        if unit not in UNIT_COLUMNS:
            raise ValueError(f"unknown cluster unit {unit!r}; choose one of {', '.join(UNIT_COLUMNS)}")
        if UNIT_COLUMNS[unit] not in cols:
            present = [u for u, c in UNIT_COLUMNS.items() if c in cols]
            raise ValueError(f"cluster unit {unit!r}: the rows of {table!r} do not carry {UNIT_COLUMNS[unit]} "
                             f"(units present: {', '.join(present)})")
        wanted = [c for c in (*by, *IMAGE, *([UNIT_COLUMNS[unit]] if unit != "image" else []), "attacked", value,
                              "levelled_off", "solver_converged") if c in cols]
        sql = f"SELECT {', '.join(sql_identifier(c) for c in wanted)} FROM {sql_identifier(table)}"
        frame = execute(con, sql + (f" WHERE {where}" if where else ""))
    finally:
        if own:
            con.close()
    if frame.empty:
        return []
    return paired_ratios(frame, numerator=numerator, denominator=denominator, value=value, by=by,
                         confidence=confidence, n_boot=n_boot, seed=seed, unit=unit)



#: The ball's linearised point gain over its centre's gain, for a draw v nearly orthogonal to the worst case r
#: at radius c = ||v|| / ||r||: ||r + v|| = ||r|| sqrt(1 + c^2) while the output moves by about ||J r|| (the
#: worst direction dominates), so point_gain ~ centre_gain / sqrt(1 + c^2) (0.970 at c = 1/4).
def linearised_point_gain(centre_gain, radius):
    """centre_gain / sqrt(1 + radius^2): the point gain a linear map's ball would give (radius relative to r)."""
    return np.asarray(centre_gain, dtype=float) / np.sqrt(1.0 + np.asarray(radius, dtype=float) ** 2)


BALL_SIDES = {"network": ("point_gain", "center_gain"), "H": ("h_point_gain", "h_center_gain"),
              "reference": ("ref_point_gain", "ref_center_gain")}


def paired_ball(store, *, threshold: float = 2.0, by: Sequence[str] = ("network", "dataset", "radius"),
                where: str | None = "center = 'worst-case' AND radius_kind = 'relative-r'", confidence: float = 0.95,
                unit: str = "image") -> list[dict[str, Any]]:
    """Per group of `by` and per comparison (network - reference, network - H): per unit (image, or volume)
    the paired difference of P(point gain >= threshold) over that unit's draws (the reference on its own
    draws), with its mean, interval (survey.analysis.paired_tests.bounded_difference_interval: t, or wider
    where few units or no spread) and exact sign-flip p (Holm over every row of the call); and per side
    what the ball adds beyond its centre: the share of units whose P(bad point) is exactly the linearised
    prediction 1{centre_gain / sqrt(1 + c^2) >= threshold} (0 or 1), i.e. the ball said nothing the centre's
    gain had not. Row keys: the `by` columns, comparison, centres ("own" / "network's": scored on the
    network's points, a transferred number), units, unit, network_p, other_p (means over units), difference,
    ci_low, ci_high, p_sign_flip, p_holm, direction, network_as_centre / other_as_centre (the shares above),
    dropped (units without the other side's draws)."""
    from survey.analysis.paired_tests import bounded_difference_interval

    con, own = (store, False) if not isinstance(store, (str, Path)) else (connect(Path(store)), True)
    try:
        cols = set(execute(con, f"DESCRIBE {sql_identifier('ball')}")["column_name"])
        needed = {"point_gain", "center_gain", "radius", "image_id"}
        if not needed <= cols:
            return []
        by = [c for c in by if c in cols]
        unit_col = UNIT_COLUMNS.get(unit)
        if unit_col is None or unit_col not in cols:
            present = [u for u, c in UNIT_COLUMNS.items() if c in cols]
            raise ValueError(f"cluster unit {unit!r}: the ball rows do not carry {unit_col or unit} "
                             f"(units present: {', '.join(present)})")
        wanted = [c for c in (*by, "dataset", "image_id", unit_col, "centres",
                              *(c for pair in BALL_SIDES.values() for c in pair)) if c in cols]
        wanted = list(dict.fromkeys(wanted))
        frame = execute(con, f"SELECT {', '.join(sql_identifier(c) for c in wanted)} FROM ball"
                             + (f" WHERE {where}" if where else ""))
    finally:
        if own:
            con.close()
    if frame.empty:
        return []
    if "centres" not in frame:
        frame["centres"] = "network's"
    key = [*by, "centres"]
    image = [c for c in ("dataset", "image_id") if c in frame.columns]
    per_image = []
    for side, (point, centre) in BALL_SIDES.items():
        if point not in frame or centre not in frame:
            continue
        part = frame[frame[point].notna() & frame[centre].notna()]
        if part.empty:
            continue
        g = part.assign(_bad=part[point] >= threshold,
                        _pred=linearised_point_gain(part[centre], part["radius"]) >= threshold)
        agg = g.groupby(list(dict.fromkeys([*key, *image, unit_col])), dropna=False).agg(
            p=("_bad", "mean"), predicted=("_pred", "first")).reset_index()
        agg["side"] = side
        per_image.append(agg)
    if not per_image:
        return []
    table = pd.concat(per_image)
    # one value per unit: the mean over its images
    table = table.assign(agree=(table["p"] == table["predicted"].astype(float)).astype(float))
    units = table.groupby([*key, unit_col, "side"], dropna=False).agg(p=("p", "mean"),
                                                                        agree=("agree", "mean")).reset_index()
    wide = units.pivot_table(index=[*key, unit_col], columns="side", values=["p", "agree"], dropna=False)
    out = []
    for group, part in wide.groupby(level=list(range(len(key))), dropna=False):
        group = group if isinstance(group, tuple) else (group,)
        for other in ("reference", "H"):
            if ("p", other) not in part or ("p", "network") not in part:
                continue
            both = part[[("p", "network"), ("p", other), ("agree", "network"), ("agree", other)]].dropna(
                subset=[("p", "network"), ("p", other)])
            dropped = int(part[("p", "network")].notna().sum() - len(both))
            if both.empty:
                continue
            diff = (both[("p", "network")] - both[("p", other)]).to_numpy(dtype=float)
            low, high = bounded_difference_interval(diff, confidence)
            out.append({**dict(zip(key, group)), "comparison": f"network - {other}", "threshold": threshold,
                        "units": int(diff.size), "unit": unit, "network_p": float(both[("p", "network")].mean()),
                        "other_p": float(both[("p", other)].mean()), "difference": float(diff.mean()),
                        "ci_low": low, "ci_high": high, "p_sign_flip": sign_flip_p(diff),
                        "network_as_centre": float(both[("agree", "network")].mean()),
                        "other_as_centre": float(both[("agree", other)].mean()), "dropped": dropped,
                        "confidence": confidence})
    from survey.analysis.decisions import holm

    adjusted = holm([r["p_sign_flip"] for r in out], 1 - confidence)[0] if out else []
    for r, p in zip(out, adjusted):
        shown = p <= 1 - confidence
        r.update(p_holm=float(p), direction=("network more often bad" if r["difference"] > 0 else
                                             "network less often bad") if shown else "no difference shown")
    return out


__all__ = ["BALL_SIDES", "BY", "bootstrap_interval", "linearised_point_gain", "paired_ball", "paired_gain_ratio",
           "paired_ratios", "sign_flip_p", "t_interval"]
