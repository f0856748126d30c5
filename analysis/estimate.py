"""Probabilities of bad outcomes with confidence intervals, from the store.

For a table, a "bad" SQL predicate, an optional `where` filter and `by` group columns, each group
gets n (units counted), k (bad units), p = k / n and four intervals, one of them marked primary
(`primary` True, listed first; every row names it in `primary_method`): the one to report.
    cluster-exact    the population of images: the mean over images of each image's P(bad)
                     (Korn-Graubard on per-image proportions, image-level exact bound at the edges;
                     survey.analysis.intervals). Primary when rows share an image.
    clopper-pearson  exact binomial on k of n; valid when rows are independent trials. Primary when
                     they are: one row per image, per-image counting, or no image columns.
    wilson           score interval; approximate; assumes independent rows.
    bootstrap        percentile interval resampling images; too narrow with few images; no bound at
                     k = 0 or k = n.
With k = 0 the intervals are one-sided upper bounds (Clopper-Pearson: 1 - alpha^(1/n); cluster-exact:
1 - alpha^(1/m) over m images) and the row carries the rule of three 3/n as a check; with k = n, the
mirrored one-sided lower bound. Each row also states its estimand (`estimand`, the population it
speaks for), its assumption, its point estimate and the one-sided upper bound at `confidence` that
decisions use (survey.analysis.decisions). Why this choice, with the simulation: docs/INTERVALS.md.

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
from survey.analysis.units import UNIT_COLUMNS, carried_units, resolve_unit, single_unit
from survey.analysis.intervals import (_CHUNK_CELLS, _alpha, _chunks, _counts, _resampled_sums,  # noqa: F401
                                       beta_bounds, clopper_pearson, cluster_bootstrap, cluster_exact,
                                       design_n, effective_upper, iid_bootstrap, image_moments, rule_of_three, wilson)

#: the methods, in the order rows list them when cluster-exact is primary (else clopper-pearson first).
METHODS = ("cluster-exact", "clopper-pearson", "wilson", "bootstrap")
PER = ("row", "image", "curve")
#: the image key; columns missing from a table are left out.
DEFAULT_CLUSTER = ("network", "dataset", "image_id")

#: keys of every row `estimate` returns, after the group columns.
FIXED_KEYS = ("n", "k", "p", "ci_low", "ci_high", "method", "confidence", "interval", "rule_of_three",
              "clusters", "note", "primary", "primary_method", "point", "upper_bound", "n_eff", "df",
              "estimand", "assumption", "unit")
CURVE_COLUMNS = ("slope", "y_start", "y_end", "y_peak", "x_peak", "points")
#: what each method assumes, stated on its rows.
ASSUMPTIONS = {
    "cluster-exact": "images are independent draws from the population of images; rows within an image may be "
                     "correlated (Korn-Graubard on per-image proportions; image-level exact bound at the edges)",
    "clopper-pearson": "rows are independent trials: exact for one row per image or per-image counting; too narrow "
                       "when rows share an image",
    "wilson": "rows are independent trials; approximate (score interval)",
    "bootstrap": "images resampled with replacement (percentile interval): too narrow with few images (10-50); "
                 "no bound at k = 0 or k = n",
}


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


def _cluster_columns(cluster: Sequence[str] | None, known: Sequence[str], table: str,
                     unit: str = "image") -> list[str]:
    if cluster is None:
        if "image_id" not in known:
            return []
        return [c for c in DEFAULT_CLUSTER if c in known and c != "image_id"] + [UNIT_COLUMNS[unit]]
    return _check_columns("cluster", cluster, known, table)


def _keys(by: Sequence[str], cluster: Sequence[str]) -> list[str]:
    return list(dict.fromkeys([*by, *cluster]))


def _counts_sql(table: str, bad: str, where: str | None, by: list[str], cluster: list[str], per: str,
                x: str, y: str, image_cluster: list[str] | None = None) -> str:
    """SQL returning one row per (group, cluster): the group columns, n_i and k_i. With `image_cluster` (the
    image key, when the cluster is a coarser unit) and per "image" / "curve", images are counted first and
    their counts summed per cluster: k_i bad images of n_i in the cluster."""
    if image_cluster is not None and per != "row":
        inner = _counts_sql(table, bad, where, by, _keys(image_cluster, cluster), per, x, y)
        keys = _keys(by, cluster)
        key_sql = ", ".join(sql_identifier(c) for c in keys)
        return (f"SELECT {key_sql}, CAST(sum(n_i) AS BIGINT) AS n_i, CAST(sum(k_i) AS BIGINT) AS k_i "
                f"FROM ({inner}) AS images GROUP BY {key_sql}")
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
             y: str = "psnr", unit: str | None = None) -> list[dict[str, Any]]:
    """Per group of `by`, the probability that `bad` holds, with four intervals (one row per method, the
    primary one first).

    store: the store directory, or a connection from `survey.analysis.db.connect`.
    bad / where: SQL boolean expressions over the table's columns; `where` filters rows before any
        per-image aggregation; for per="curve", `bad` is over the curve columns slope, y_start, y_end,
        y_peak, x_peak, points (default "slope < 0"). Units where `bad` is NULL are not counted.
    per: "row", "image" (bad if any of the image's rows is) or "curve" (see the module docstring).
    cluster: the columns naming a cluster (default network, dataset and the unit's column where the
        table has image_id; () resamples rows independently).
    unit: the unit of independence, "image", "volume" or "subject" (columns image_id, volume_id,
        subject_id); None: the coarsest unit every row carries with at least 2 clusters in every group.
        Coarser than the image with per="image" / "curve": each image is counted once, and a cluster's
        share of bad images is its proportion (the estimand: over volumes, mean per-volume share).
    Returns dicts with the `by` columns then FIXED_KEYS: n, k, p, ci_low, ci_high, method,
    confidence, interval ("two-sided", "one-sided upper", "one-sided lower"), rule_of_three (3/n when
    k = 0, 1 - 3/n when k = n, else None), clusters (images in the group), note; then
    primary (True on the one interval to report per group), primary_method ("cluster-exact" when rows
    share an image, "clopper-pearson" when they are independent trials), point (the method's point
    estimate: the mean of per-image proportions for cluster-exact, k / n for the others), upper_bound
    (one-sided upper bound at `confidence`, for decisions; cluster-exact and clopper-pearson only), n_eff
    and df (what `intervals.effective_upper` needs to recompute it at another confidence), estimand
    ("P(bad) for the population of images like these (<dataset>): mean per-image probability" ...),
    assumption (the method's) and unit (the unit of independence: "image", "volume", "subject"; "row" with
    no image columns).
    """
    frame, clusters, unit, single = _fetch_counts(store, table, bad, where=where, by=by, per=per,
                                                  confidence=confidence, cluster=cluster, x=x, y=y, unit=unit,
                                                  with_unit=True)
    return _rows_from_counts(frame, list(by), confidence, n_boot, seed, iid=not clusters, per=per, unit=unit,
                             single=single)


def _fetch_counts(store, table: str, bad: str | None, *, where: str | None, by: Sequence[str], per: str,
                  confidence: float, cluster: Sequence[str] | None, x: str, y: str, unit: str | None = "image",
                  with_unit: bool = False):
    """Validated arguments -> (frame of per-(group, cluster) counts n_i, k_i in key order, cluster columns),
    and with `with_unit` also the unit clustered at and, per dataset, the single volume / subject its rows share."""
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
        chosen = "image"
        if cluster is None and "image_id" in known:
            chosen = resolve_unit(con, table, unit, where=where, by=by)
        elif unit not in (None, "image"):
            raise ValueError(f"cluster unit {unit!r}: table {table!r} has no image columns (or cluster= was given)")
        clusters = _cluster_columns(cluster, known, table, chosen)
        single = single_unit(con, table, where, known) if clusters else None
        if per in ("image", "curve"):
            if not clusters:
                raise ValueError(f"per={per!r} needs image columns: table {table!r} has no image_id; pass cluster=")
            if per == "curve":
                _check_columns("curve", [x, y], known, table)
        coarser = cluster is None and chosen != "image"
        sql = _counts_sql(table, bad, where, by, clusters, per, x, y,
                          image_cluster=[c for c in DEFAULT_CLUSTER if c in known] if coarser else None)
        try:
            frame = execute(con, sql, store=store if owned else None)
        except QueryError as exc:
            raise ValueError(f"estimate on {table!r} with bad={bad!r} where={where!r}: {exc}") from None
    finally:
        if owned:
            con.close()
    # a fixed order of clusters: the bootstrap (seeded) then does not depend on how the rows lie in fragments
    frame = _in_key_order(frame[frame["n_i"] > 0], [c for c in frame.columns if c not in ("n_i", "k_i")])
    if with_unit:
        return frame, clusters, (chosen if clusters else "row"), single
    return frame, clusters


def _assumption(method: str, unit: str) -> str:
    """The method's assumption, with the unit of independence named."""
    text = ASSUMPTIONS[method]
    if unit in ("volume", "subject"):
        text = text.replace("an image", f"a {unit}").replace("image", unit)
    return text


def per_image_distribution(store, table: str, bad: str | None = None, *, where: str | None = None,
                           by: Sequence[str] = (), levels: Sequence[float] = (0.01, 0.1, 0.5),
                           quantiles: Sequence[float] = (0.5, 0.9, 0.99), confidence: float = 0.95,
                           cluster: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """How P(bad) is spread over images: per group of `by` and per level in `levels`, one row.

    Each image's proportion p_i = k_i / n_i of bad rows (`bad`, `where`, `cluster` as in `estimate`, rows
    counted per row). Row keys: the `by` columns, images, rows, mean (mean of p_i), min, q<q> for each
    quantile (e.g. q0.9), max, level, above (images with p_i > level), fraction (above / images), ci_low,
    ci_high (exact interval for the fraction of the population of images with p_i > level, Clopper-Pearson
    on above of images; one-sided at 0 and at all), surely_above / possibly_above (images whose own exact
    one-sided bound at `confidence` puts P(bad) above the level / does not rule it out: p_i is itself
    estimated from n_i rows), confidence, estimand.
    """
    frame, clusters = _fetch_counts(store, table, bad, where=where, by=by, per="row", confidence=confidence,
                                    cluster=cluster, x="value", y="psnr")
    if not clusters:
        raise ValueError(f"per_image_distribution needs image columns: table {table!r} has no image_id; pass cluster=")
    if any(not 0.0 <= q <= 1.0 for q in quantiles) or any(not 0.0 <= v < 1.0 for v in levels):
        raise ValueError("quantiles must lie in [0, 1] and levels in [0, 1)")
    if frame.empty:
        return []
    by = list(by)
    alpha = 1.0 - confidence
    ids, keys = _group_index(frame, by)
    k_i, n_i = frame["k_i"].to_numpy(dtype=np.float64), frame["n_i"].to_numpy(dtype=np.float64)
    own_low, own_high = beta_bounds(k_i, n_i, alpha, alpha)
    estimands = _estimands(frame, ids, len(keys), "row", False)
    rows = []
    for g, key in enumerate(keys):
        sel = ids == g
        p_i, m = k_i[sel] / n_i[sel], int(sel.sum())
        summary = {c: _python(v) for c, v in zip(by, key)}
        summary.update(images=m, rows=int(n_i[sel].sum()), mean=float(p_i.mean()), min=float(p_i.min()),
                       **{f"q{q:g}": float(np.quantile(p_i, q)) for q in quantiles}, max=float(p_i.max()))
        for level in levels:
            above = int(np.sum(p_i > level))
            low, high = clopper_pearson(above, m, confidence)
            rows.append({**summary, "level": float(level), "above": above, "fraction": above / m,
                         "ci_low": float(low), "ci_high": float(high),
                         "surely_above": int(np.sum(own_low[sel] > level)),
                         "possibly_above": int(np.sum(own_high[sel] > level)), "confidence": confidence,
                         "estimand": f"{estimands[g]}: fraction of images with P(bad) > {level:g}"})
    return rows


def _estimands(frame, ids: np.ndarray, n_groups: int, per: str, iid: bool, unit: str = "image",
               single: dict[str, str] | None = None) -> list[str]:
    """Per group, the population its estimates speak for, naming the datasets where the rows have them and
    saying so in plain words when every row comes from one volume (or one subject)."""
    if iid:
        return ["over rows, each row an independent trial (no image columns)"] * n_groups
    if "dataset" in frame.columns:
        names = frame.groupby(ids, sort=True)["dataset"].agg(lambda v: ", ".join(sorted({str(x) for x in v})))
        datasets = [names.get(g, "the data") for g in range(n_groups)]
    else:
        datasets = ["the data"] * n_groups
    if unit == "image":
        what = {"row": "mean per-image probability", "image": "probability that an image is bad (any of its rows)",
                "curve": "probability that an image's curve is bad"}[per]
    else:
        what = {"row": f"mean per-{unit} probability",
                "image": f"mean per-{unit} share of bad images (an image is bad when any of its rows is)",
                "curve": f"mean per-{unit} share of images whose curve is bad"}[per]
    single = single or {}

    def note(names: str) -> str:   # every dataset of the group a slice set of the same one volume
        units = [single.get(n if "dataset" in frame.columns else None, {}) for n in names.split(", ")]
        volumes = {u.get("volume") for u in units}
        if unit != "image" or len(volumes) != 1 or None in volumes:
            return ""
        subjects = {u.get("subject") for u in units}
        who = f" of one subject ({subjects.pop()})" if len(subjects) == 1 and None not in subjects else ""
        return (f"; every image is a slice of one volume{who}, {volumes.pop()}: the population is slices of "
                "that volume, not other volumes or subjects")
    return [f"P(bad) for the population of {unit}s like these ({d}{note(d)}): {what}" for d in datasets]


def _rows_from_counts(frame, by: list[str], confidence: float, n_boot: int, seed: int,
                      iid: bool, per: str = "row", unit: str = "image",
                      single: dict[str, str] | None = None) -> list[dict[str, Any]]:
    if frame.empty:
        return []
    ids, keys = _group_index(frame, by)
    k_i = frame["k_i"].to_numpy(dtype=np.float64)
    n_i = frame["n_i"].to_numpy(dtype=np.float64)
    n_groups = len(keys)
    k = np.bincount(ids, weights=k_i, minlength=n_groups)
    n = np.bincount(ids, weights=n_i, minlength=n_groups)
    m = np.bincount(ids, minlength=n_groups)
    alpha = 1.0 - confidence
    if iid:   # no images: each row its own cluster; cluster-exact is then Clopper-Pearson
        mo = {"m": n, "mean": k / n, "n_eff": n, "df": None}
        ce = clopper_pearson(k, n, confidence)
    else:
        mo = image_moments(k_i, n_i, ids)
        ce = cluster_exact(mo["mean"], mo["var_mean"], mo["m"], mo["n_indep"], mo["df"], confidence)[:2]
        mo["n_eff"] = design_n(mo["mean"], mo["var_mean"], mo["m"], mo["n_indep"])
    intervals = {"cluster-exact": ce, "clopper-pearson": clopper_pearson(k, n, confidence),
                 "wilson": wilson(k, n, confidence)}
    if iid:
        intervals["bootstrap"] = iid_bootstrap(k, n, confidence=confidence, n_boot=n_boot, seed=seed)
    else:
        intervals["bootstrap"] = cluster_bootstrap(k_i, n_i, ids, confidence=confidence, n_boot=n_boot, seed=seed)
    # rows are independent trials when there are no images or each image gave one row
    independent = np.full(n_groups, True) if iid else np.bincount(ids, weights=n_i > 1, minlength=n_groups) == 0
    upper = {"cluster-exact": effective_upper(mo["mean"], mo["n_eff"], mo["df"], mo["m"], confidence),
             "clopper-pearson": beta_bounds(k, n, alpha, alpha)[1]}
    estimands = _estimands(frame, ids, n_groups, per, iid, unit, single)
    rows = []
    for g, key in enumerate(keys):
        kg, ng = int(k[g]), int(n[g])
        side = "one-sided upper" if kg == 0 else "one-sided lower" if kg == ng else "two-sided"
        check = 3.0 / ng if kg == 0 else 1.0 - 3.0 / ng if kg == ng else None
        primary = "clopper-pearson" if independent[g] else "cluster-exact"
        order = [primary, *(x for x in METHODS if x != primary)]
        for method in order:
            low, high = (float(a[g]) for a in intervals[method])
            interval, note = side, None
            point, n_eff, df = kg / ng, float(ng), None
            if method == "cluster-exact":
                point, n_eff = float(mo["mean"][g]), float(mo["n_eff"][g])
                df = None if iid else float(mo["df"][g])
            if method == "bootstrap":
                interval, n_eff = "two-sided", None
                if kg == 0:
                    low, high, note = 0.0, None, f"no bad units: resampling cannot bound p; use {primary}"
                elif kg == ng:
                    low, high, note = None, 1.0, f"all units bad: resampling cannot bound p; use {primary}"
                elif m[g] == 1 and not iid:
                    note = "one cluster: the bootstrap interval is degenerate"
            row = {c: _python(v) for c, v in zip(by, key)}
            row.update(n=ng, k=kg, p=kg / ng, ci_low=_python(low), ci_high=_python(high), method=method,
                       confidence=confidence, interval=interval, rule_of_three=check,
                       clusters=ng if iid else int(m[g]), note=note, primary=method == primary,
                       primary_method=primary, point=point,
                       upper_bound=_python(float(upper[method][g])) if method in upper else None,
                       n_eff=n_eff, df=df, estimand=estimands[g],
                       assumption=_assumption(method, "row" if iid else unit), unit="row" if iid else unit)
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


__all__ = ["ASSUMPTIONS", "CURVE_COLUMNS", "DEFAULT_CLUSTER", "FIXED_KEYS", "METHODS", "PER", "UNIT_COLUMNS",
           "carried_units", "cluster_bootstrap", "resolve_unit",
           "clopper_pearson", "estimate", "iid_bootstrap", "per_image_distribution", "rule_of_three",
           "sweep_slopes", "wilson"]
