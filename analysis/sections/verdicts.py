"""Page one of the report: the verdict of every acceptance criterion per network (criteria as rows, networks as
columns), and the headline numbers (each group's estimate with its primary interval and estimand, the network
beside the reference where the same question was asked of both).

Plain dicts for the template: nothing here computes a number; the verdicts come from
`survey.analysis.sections.study.evaluate_criteria`, the estimates from the sections' definitions.
"""

from __future__ import annotations

from typing import Any, Sequence

from survey.analysis.sections.text import format_interval, format_number

#: What each verdict means, in one line each (the legend under the table).
MEANINGS = {"PASS": "the one-sided upper bound of P(bad) is below the limit",
            "FAIL": "the one-sided lower bound is above the limit: evidence of harm",
            "INCONCLUSIVE": "the interval straddles the limit: too few images (or volumes) to tell; the cell says "
                            "how many would decide it at the observed rate"}
#: Rows of the headline table at most (the full tables are in the results section).
MAX_HEADLINE = 12


def short_estimand(text: Any) -> str:
    """The population an estimate speaks for, first clause only ("mean per-image probability over brain")."""
    return str(text or "–").split(";")[0].split(":")[0].strip()


def _plural(unit: str, n: int) -> str:
    return unit if n == 1 else f"{unit}s"


def _cell_item(group: dict[str, Any], by: Sequence[str]) -> dict[str, Any]:
    unit = group.get("unit") or "image"
    m = int(group.get("clusters") or 0)
    label = ", ".join(str(group.get(c)) for c in by if c != "network")
    item = {"label": label, "verdict": group.get("verdict") or "–",
            "estimate": format_number(group.get("point")),
            "interval": format_interval(group.get("ci_low"), group.get("ci_high")),
            "upper": format_number(group.get("upper_bound")), "n": f"{m} {_plural(unit, m)}", "decide": ""}
    if group.get("verdict") == "INCONCLUSIVE":
        need = group.get("decide_clusters")
        item["decide"] = ("no sample decides it at this rate" if need is None else
                          f"~{need:,} {_plural(unit, need)} would decide")
    return item


def verdict_table(results: Sequence[Any]) -> dict[str, Any]:
    """{"networks": column names, "rows": one per criterion with name, limit, status and per network a list of
    items (one per group: dataset label, verdict, estimate, primary interval, one-sided upper bound, sample size,
    what would decide it)}; a criterion without groups gets its status and message in one merged cell."""
    networks: list[str] = []
    for r in results:
        for g in r.groups:
            name = str(g.get("network", "all")) if "network" in r.by else "all"
            if name not in networks:
                networks.append(name)
    rows = []
    for r in results:
        cells: dict[str, list] = {n: [] for n in networks}
        for g in r.groups:
            name = str(g.get("network", "all")) if "network" in r.by else "all"
            cells[name].append(_cell_item(g, r.by))
        rows.append({"name": r.name, "table": r.table, "limit": format_number(r.max_upper),
                     "status": r.status, "message": r.message if not r.groups else "",
                     "cells": [cells[n] for n in networks]})
    return {"networks": networks, "rows": rows, "meanings": MEANINGS}


def headline_numbers(computed: dict[str, Any], titles: dict[str, str], results: Sequence[Any] = ()) -> list[dict]:
    """The numbers a reader checks first, one row per (definition, group) that was asked of the network and of
    the reference on the same data: network and reference estimate with primary intervals and the estimand;
    then, if room is left, the criteria's own groups (network only). At most MAX_HEADLINE rows."""
    rows: list[dict[str, Any]] = []
    for key, found in computed.items():
        if ":" in key or not found.get("reference"):
            continue
        by = [c for c in found.get("by") or [] if c != "network"]
        reference = {tuple(r.get(c) for c in ["network", *by]): r for r in found["reference"] if r.get("primary")}
        for r in found["network"]:
            if not r.get("primary"):
                continue
            ref = reference.get(tuple(r.get(c) for c in ["network", *by]))
            rows.append({"what": titles.get(key, key), "group": ", ".join([str(r.get("network"))] +
                                                                         [str(r.get(c)) for c in by]),
                         "network": _estimate(r), "reference": _estimate(ref) if ref else "–",
                         "estimand": short_estimand(r.get("estimand")), "full": str(r.get("estimand") or "")})
    for c in results:
        for g in c.groups:
            rows.append({"what": c.name, "group": ", ".join(str(g.get(b)) for b in c.by) or "all",
                         "network": _estimate(g), "reference": "–", "estimand": short_estimand(g.get("estimand")),
                         "full": str(g.get("estimand") or "")})
    return rows[:MAX_HEADLINE]


def _estimate(row: dict[str, Any]) -> str:
    m = int(row.get("clusters") or 0)
    unit = row.get("unit") or "image"
    return (f"{format_number(row.get('point'))} {format_interval(row.get('ci_low'), row.get('ci_high'))} "
            f"({m} {_plural(unit, m)})")


__all__ = ["MAX_HEADLINE", "MEANINGS", "headline_numbers", "short_estimand", "verdict_table"]
