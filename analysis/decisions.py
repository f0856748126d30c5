"""Acceptance decisions at the stated confidence, with a family-wise correction across them.

A criterion says "P(bad) <= limit" for every group of an estimate. Each (criterion, group) is one
decision: it passes when the one-sided upper confidence bound of the group's primary interval (see
survey.analysis.estimate) is below the limit, i.e. when the one-sided p-value of "P(bad) >= limit"
is at most alpha = 1 - confidence. Always one-sided: the upper end of a two-sided interval would test
at alpha / 2 where k > 0 and at alpha where k = 0, two different levels in one table.

Several decisions at once: with K decisions each at alpha, the chance that some wrong "pass" occurs
grows to about K alpha. `correction="holm"` (the default) keeps the family-wise error rate at alpha
over all criterion x group decisions (Holm's step-down: uniformly more passes than Bonferroni, no
assumption on how the decisions depend on each other); `"none"` judges each at alpha alone.
Both verdicts are returned: `passed_raw` (each alone) and `passed` (after the correction).

Three values, never two: PASS when the upper bound is below the limit, FAIL only with evidence of harm
(the one-sided LOWER bound above the limit, Holm over the same family for "P(bad) > limit"), and
INCONCLUSIVE when the interval straddles the limit: too few images (or volumes) to tell. Each decision
carries the number of clusters that would decide it were the observed rate to hold (`decide_clusters`),
and `plan_size` answers the question before a study: how many clusters a criterion needs to pass at a
target rate (at the observed rate, or with a stated power under an exact binomial model).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from scipy import stats

from survey.analysis.intervals import effective_lower, effective_upper, p_value, p_value_above

CORRECTIONS = ("holm", "none")
VERDICTS = ("PASS", "FAIL", "INCONCLUSIVE")
#: the largest number of clusters `clusters_to_decide` and `plan_size` search to.
MAX_CLUSTERS = 10**7


def holm(p_values, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Holm step-down over K p-values: (adjusted p-values, rejected at family-wise alpha), each (K,).

    Adjusted p_(i) = max over j <= i of min(1, (K - j + 1) p_(j)) in ascending order; rejected = adjusted <= alpha.
    """
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    factors = len(p) - np.arange(len(p))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(factors * p[order]))
    return adjusted, adjusted <= alpha


def _primary_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    chosen = [r for r in rows if r.get("primary")]
    if rows and not chosen:
        raise ValueError("no row is marked primary: pass the rows `survey.analysis.estimate.estimate` returns")
    return chosen


def _scaled(n_eff, df, m, clusters):
    """(n_eff, df) of a sample of `clusters` clusters with the observed design effect (n_eff / m) and the
    observed share of clusters that inform df ((df + 1) / m); df stays nan for Clopper-Pearson rows."""
    ratio = clusters / m
    return n_eff * ratio, np.where(np.isfinite(df), np.maximum((df + 1) * ratio - 1, 1), df)


def clusters_to_decide(point, n_eff, df, m, limit, confidence) -> np.ndarray:
    """The number of clusters (images, volumes ...) at which a decision at `confidence` would come out
    PASS (point < limit: upper bound below the limit) or FAIL (point > limit: lower bound above it), were
    the observed rate and design effect to hold; nan where point == limit (no sample decides) or beyond
    MAX_CLUSTERS. Arrays (K,): an estimate row's point, n_eff, df (nan for Clopper-Pearson) and clusters."""
    point, n_eff, df, m, limit, confidence = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (point, n_eff, df, m, limit, confidence)))

    def decided(c):
        n, d = _scaled(n_eff, df, m, c)
        below = effective_upper(point, n, d, c, confidence) < limit
        above = effective_lower(point, n, d, c, confidence) > limit
        return np.where(point < limit, below, np.where(point > limit, above, False))

    hi = np.maximum(m, 1.0)
    for _ in range(64):   # doubling until decided (or past the cap)
        grow = ~decided(hi) & (hi < MAX_CLUSTERS)
        if not grow.any():
            break
        hi = np.where(grow, np.minimum(hi * 2, MAX_CLUSTERS), hi)
    ok = decided(hi)
    lo = np.ones_like(hi)
    first = decided(lo)
    for _ in range(40):   # smallest integer c in (lo, hi] with decided(c)
        mid = np.floor((lo + hi) / 2)
        ok_mid = decided(mid)
        hi, lo = np.where(ok_mid & ~first, mid, hi), np.where(ok_mid | first, lo, mid)
    return np.where(first, 1.0, np.where(ok, hi, np.nan))


def decide(criteria: Sequence[Mapping[str, Any]], *, correction: str = "holm",
           confidence: float | None = None) -> list[dict[str, Any]]:
    """Judge every (criterion, group) at the stated confidence, with a family-wise correction over all of them.

    criteria: mappings with name, limit (the largest acceptable P(bad)), rows (what `estimate` returned for
        it: every method's row; the primary row of each group is judged) and optionally confidence.
    correction: "holm" (family-wise error at 1 - confidence over all decisions) or "none".
    confidence: the family's confidence; None takes the criteria's (they must agree; default 0.95).
    Returns one dict per decision, in criteria then group order: criterion, group (the group columns'
    values), method (the primary method), estimand, point, limit, confidence, upper_bound (one-sided at
    `confidence`), p_value (one-sided, of "P(bad) >= limit"), passed_raw (upper bound below the limit:
    the decision alone), p_adjusted, passed (after the correction), correction, family_size, level (the
    confidence Holm tested this decision at, 1 - alpha / (K - rank + 1); `confidence` for "none") and
    upper_adjusted (the one-sided upper bound at that level); for harm: lower_bound (one-sided at
    `confidence`), p_value_harm (of "P(bad) <= limit"), failed_raw, p_adjusted_harm, failed (Holm over the
    same family); verdict ("PASS", "FAIL" or "INCONCLUSIVE", after the correction), verdict_raw, unit
    (what a cluster is: "image", "volume" ...), decide_clusters (clusters that would decide it at the
    observed rate and design effect, at the Bonferroni level over the undecided decisions of its side;
    None where none would) and
    decide_more (how many more than now; 0 when decided).
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    stated = {float(c["confidence"]) for c in criteria if c.get("confidence") is not None}
    if confidence is None:
        if len(stated) > 1:
            raise ValueError(f"criteria state different confidences {sorted(stated)}: pass confidence= for the family")
        confidence = stated.pop() if stated else 0.95
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    alpha = 1.0 - confidence
    from survey.analysis.estimate import FIXED_KEYS

    decisions: list[dict[str, Any]] = []
    for c in criteria:
        limit = float(c["limit"])
        if not 0.0 < limit <= 1.0:
            raise ValueError(f"criterion {c.get('name')!r}: limit must be in (0, 1], got {limit!r}")
        for row in _primary_rows(c.get("rows") or []):
            decisions.append({"criterion": c.get("name"), "group": {k: v for k, v in row.items() if k not in FIXED_KEYS},
                              "method": row["method"], "estimand": row.get("estimand"), "point": row["point"],
                              "limit": limit, "confidence": confidence, "unit": row.get("unit") or "image",
                              "_row": row})
    if not decisions:
        return []
    point = np.array([d["point"] for d in decisions], dtype=np.float64)
    n_eff = np.array([d["_row"]["n_eff"] for d in decisions], dtype=np.float64)
    df = np.array([np.nan if d["_row"]["df"] is None else d["_row"]["df"] for d in decisions], dtype=np.float64)
    m = np.array([d["_row"]["clusters"] for d in decisions], dtype=np.float64)
    limit = np.array([d["limit"] for d in decisions])
    upper = effective_upper(point, n_eff, df, m, confidence)
    lower = effective_lower(point, n_eff, df, m, confidence)
    raw = p_value(point, n_eff, df, m, limit)
    harm = p_value_above(point, n_eff, df, m, limit)
    K = len(decisions)
    if correction == "holm":
        adjusted, passed = holm(raw, alpha)
        adjusted_harm, failed = holm(harm, alpha)
        rank = np.empty(K, dtype=np.int64)
        rank[np.argsort(raw, kind="stable")] = np.arange(K)
        level = 1.0 - alpha / (K - rank)
        rank_harm = np.empty(K, dtype=np.int64)
        rank_harm[np.argsort(harm, kind="stable")] = np.arange(K)
        level_harm = 1.0 - alpha / (K - rank_harm)
    else:
        adjusted, passed, level = raw, raw <= alpha, np.full(K, confidence)
        adjusted_harm, failed, level_harm = harm, harm <= alpha, np.full(K, confidence)
    upper_adjusted = np.asarray(effective_upper(point, n_eff, df, m, level), dtype=np.float64)
    # the sample that would decide an undecided one: Bonferroni over the undecided of its side (Holm then
    # decides every one of them once each clears its bound at that level)
    open_pass = max(1, K - int(passed.sum())) if correction == "holm" else 1
    open_fail = max(1, K - int(failed.sum())) if correction == "holm" else 1
    need = clusters_to_decide(point, n_eff, df, m, limit,
                              np.where(point > limit, 1.0 - alpha / open_fail, 1.0 - alpha / open_pass))
    for i, d in enumerate(decisions):
        del d["_row"]
        verdict = "PASS" if passed[i] else "FAIL" if failed[i] else "INCONCLUSIVE"
        verdict_raw = "PASS" if raw[i] <= alpha else "FAIL" if harm[i] <= alpha else "INCONCLUSIVE"
        clusters = None if np.isnan(need[i]) else int(need[i])
        d.update(upper_bound=float(upper[i]), p_value=float(raw[i]), passed_raw=bool(raw[i] <= alpha),
                 p_adjusted=float(adjusted[i]), passed=bool(passed[i]), correction=correction, family_size=K,
                 level=float(level[i]), upper_adjusted=float(upper_adjusted[i]), lower_bound=float(lower[i]),
                 p_value_harm=float(harm[i]), failed_raw=bool(harm[i] <= alpha),
                 p_adjusted_harm=float(adjusted_harm[i]), failed=bool(failed[i]), verdict=verdict,
                 verdict_raw=verdict_raw, decide_clusters=clusters,
                 decide_more=None if clusters is None else max(0, clusters - int(m[i])))
    return decisions


def plan_size(limit: float, rate: float, *, confidence: float = 0.95, power: float | None = None,
              family: int = 1) -> dict[str, Any]:
    """How many clusters (images, volumes: each counted once, bad or not) a criterion "P(bad) <= limit" needs
    to PASS when the true rate is `rate` (< limit), judged by the exact one-sided Clopper-Pearson bound at
    `confidence` (Bonferroni over `family` decisions: the level Holm uses for the last decision it passes).

    power None: the smallest m at which the observed rate itself passes (k = rate * m bad of m), the
        "at the observed rate" sample; with rate 0, m = ceil(log(alpha) / log(1 - limit)).
    power in (0, 1): the smallest m with P(Clopper-Pearson upper bound of Binomial(m, rate) < limit) >= power
        (exact; the power is a saw-tooth in m, so a slightly larger m can have slightly less).
    Rows that share a cluster (per-row proportions) need at least this many clusters and more when clusters
    differ; this count is for one unit counted once. Returns dict: limit, rate, confidence, family, power,
    level (per-decision confidence), clusters (None when beyond MAX_CLUSTERS), bad_allowed (the most bad
    clusters of `clusters` that still pass) and achieved_power (at `clusters`; None when power is None).
    """
    if not 0.0 < limit < 1.0:
        raise ValueError(f"limit must be in (0, 1), got {limit!r}")
    if not 0.0 <= rate < limit:
        raise ValueError(f"rate must be in [0, limit) = [0, {limit:g}): a rate at or above the limit never passes, "
                         f"got {rate!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if power is not None and not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power!r}")
    if int(family) < 1:
        raise ValueError(f"family must be >= 1, got {family!r}")
    alpha = (1.0 - confidence) / int(family)
    out = {"limit": limit, "rate": rate, "confidence": confidence, "family": int(family), "power": power,
           "level": 1.0 - alpha, "clusters": None, "bad_allowed": None, "achieved_power": None}
    start = 1
    while start <= MAX_CLUSTERS:
        stop = min(MAX_CLUSTERS, start * 4 + 1024)
        m = np.arange(start, stop + 1, dtype=np.float64)
        # the Clopper-Pearson upper bound of k of m is below the limit iff P(Binomial(m, limit) <= k) < alpha:
        # the most bad clusters that still pass
        allowed = stats.binom.ppf(alpha, m, limit) - 1
        allowed = np.where(stats.binom.cdf(allowed + 1, m, limit) < alpha, allowed + 1, allowed)
        if power is None:
            ok = np.floor(rate * m + 1e-9) <= allowed
            ok &= np.where(rate > 0, effective_upper(rate, m, np.nan, m, 1.0 - alpha) < limit, True)
            achieved = None
        else:
            achieved = np.where(allowed >= 0, stats.binom.cdf(allowed, m, rate), 0.0)
            ok = achieved >= power
        if ok.any():
            i = int(np.argmax(ok))
            out.update(clusters=int(m[i]), bad_allowed=int(allowed[i]),
                       achieved_power=None if achieved is None else float(achieved[i]))
            return out
        start = stop + 1
    return out


__all__ = ["CORRECTIONS", "MAX_CLUSTERS", "VERDICTS", "clusters_to_decide", "decide", "holm", "plan_size"]
