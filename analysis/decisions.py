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
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from survey.analysis.intervals import effective_upper, p_value

CORRECTIONS = ("holm", "none")


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
    upper_adjusted (the one-sided upper bound at that level).
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
                              "limit": limit, "confidence": confidence, "_row": row})
    if not decisions:
        return []
    point = np.array([d["point"] for d in decisions], dtype=np.float64)
    n_eff = np.array([d["_row"]["n_eff"] for d in decisions], dtype=np.float64)
    df = np.array([np.nan if d["_row"]["df"] is None else d["_row"]["df"] for d in decisions], dtype=np.float64)
    m = np.array([d["_row"]["clusters"] for d in decisions], dtype=np.float64)
    limit = np.array([d["limit"] for d in decisions])
    upper = effective_upper(point, n_eff, df, m, confidence)
    raw = p_value(point, n_eff, df, m, limit)
    K = len(decisions)
    if correction == "holm":
        adjusted, passed = holm(raw, alpha)
        rank = np.empty(K, dtype=np.int64)
        rank[np.argsort(raw, kind="stable")] = np.arange(K)
        level = 1.0 - alpha / (K - rank)
    else:
        adjusted, passed, level = raw, raw <= alpha, np.full(K, confidence)
    upper_adjusted = np.array([float(effective_upper(point[i], n_eff[i], df[i], m[i], level[i])) for i in range(K)])
    for i, d in enumerate(decisions):
        del d["_row"]
        d.update(upper_bound=float(upper[i]), p_value=float(raw[i]), passed_raw=bool(raw[i] <= alpha),
                 p_adjusted=float(adjusted[i]), passed=bool(passed[i]), correction=correction, family_size=K,
                 level=float(level[i]), upper_adjusted=float(upper_adjusted[i]))
    return decisions


__all__ = ["CORRECTIONS", "decide", "holm"]
